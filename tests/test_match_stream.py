"""Streamed matching (`--max-memory` smaller than the pool) keeps exactly the pairs of the in-memory run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curator.demo.vectors import clustered, write_model
from curator.store.store import Store

BLOCK = "64x256"  # small score blocks, so a 2,000-clip pool is read in several streamed blocks


@pytest.fixture
def pool(store):
    audio = clustered(2000, 48, n_clusters=12, seed=1)
    audio[1500] = audio[10]  # an exact duplicate clip: tied scores, broken by position
    text = clustered(150, 48, n_clusters=12, seed=2)
    write_model(store, "clapx", text, audio)
    scores = text.astype(np.float64) @ audio.astype(np.float64).T
    return {"store": store, "t": round(float(np.quantile(scores, 0.97)), 4), "scores": scores}


def _pairs(uri: str, run: str) -> list[tuple]:
    rows = Store.open(uri).read("candidates").filter(pa.compute.equal(pa.compute.field("run_id"), run))
    return sorted(zip(*(rows.column(c).to_pylist() for c in ("text_id", "audio_id", "score", "rank"))))


@pytest.mark.parametrize("extra", [(), ("--top-k", "5"), ("--top-k", "3", "--per", "audio"),
                                   ("--top-k", "4", "--per", "both")])
def test_streamed_match_returns_the_pairs_of_the_in_memory_run(cli, pool, extra):
    t = pool["t"]
    mem = cli.curator("match", "--model", "clapx", "--threshold", t, *extra, "--block", BLOCK, "--run", "mem")
    assert mem.code == 0, mem.output
    # 40 KB holds 208 clips of 48-d: blocks of one 256-clip score column, 8 blocks for the pool.
    streamed = cli.curator("match", "--model", "clapx", "--threshold", t, *extra, "--block", BLOCK,
                           "--max-memory", "40KB", "--run", "streamed", "--audio-where", "audio_id is not null")
    assert streamed.code == 0, streamed.output
    a, b = _pairs(cli.store_uri, "mem"), _pairs(cli.store_uri, "streamed")
    assert a and a == b
    if not extra:
        assert len(a) == int((pool["scores"] >= t).sum())


def test_streamed_match_shrinks_caption_groups_for_dense_output(pool):
    from curator.match.exact import collect, match_blocks
    from curator.match.stream import match_stream
    from curator.store.vectors import open_vectors, read_vectors

    store = pool["store"]
    text = read_vectors(store, "clapx", "text").vecs
    src = open_vectors(store, "clapx", "audio")
    t = float(np.quantile(pool["scores"], 0.5))  # half of all pairs pass
    mem = collect(match_blocks(text, src.read(), t, block=(64, 256)))
    parts = list(match_stream(text, src, t, block=(64, 256), max_memory=40_000, max_pairs=20_000))
    assert len(parts) > 1  # more than one caption group, so more than one pass over the pool
    got = tuple(np.concatenate([p[i] for p in parts]) for i in range(4))
    for x, y in zip(mem, got):
        np.testing.assert_array_equal(x, y)


def test_streamed_sweep_counts_like_the_in_memory_one(cli, pool):
    args = ("sweep", "--model", "clapx", "--thresholds", "0.1:0.9:0.1", "--format", "csv")
    mem = cli.curator(*args)
    streamed = cli.curator(*args, "--max-memory", "100KB")
    assert mem.code == 0 and streamed.code == 0, mem.output + streamed.output
    assert mem.output == streamed.output


def test_max_memory_rejects_nonsense(cli, pool):
    res = cli.curator("match", "--model", "clapx", "--threshold", 0.5, "--run", "x", "--max-memory", "lots")
    assert res.code == 2 and "error: --max-memory 'lots'" in res.output, res.output


def test_vector_blocks_read_take_and_blocks_agree(pool):
    from curator.store.vectors import open_vectors, read_vectors, whole_table

    src = open_vectors(pool["store"], "clapx", "audio")
    full = src.read()
    assert full.shape == (2000, 48)
    np.testing.assert_array_equal(read_vectors(pool["store"], "clapx", "audio").vecs, full)
    np.testing.assert_array_equal(whole_table(pool["store"], "clapx", "audio").read(2000), full)
    joined = np.concatenate([v.copy() for _, v in src.blocks(300)])
    np.testing.assert_array_equal(joined, full)
    idx = np.array([1999, 3, 3, 700])
    np.testing.assert_array_equal(src.take(idx), full[idx])
    sub = src.reorder(np.array([5, 1, 0]))
    assert sub.ids.to_pylist() == [src.ids[i].as_py() for i in (5, 1, 0)]
    np.testing.assert_array_equal(np.concatenate([v.copy() for _, v in sub.blocks(2)]), full[[5, 1, 0]])


def test_build_du_and_ads_with_a_streamed_pool_write_the_same_rows(store):
    from curation_data import build_world

    from curator.curate.strategies import DSOptions, MatchOptions, build_ads, build_du
    from schemas.sets import content_hash

    build_world(store)
    pool = "source = 'wild'"
    for top_k, per in ((None, "text"), (3, "text"), (2, "both")):
        mem = build_du(store, "teach", MatchOptions(0.5, top_k, per), pool)
        streamed = build_du(store, "teach", MatchOptions(0.5, top_k, per, max_memory=1), pool)
        assert mem.rows.num_rows and content_hash(mem.rows) == content_hash(streamed.rows)
        assert mem.params == streamed.params  # the memory limit is not part of the set's identity
    ds = DSOptions("esc", 0.6)
    mem = build_ads(store, "teach", MatchOptions(0.4, 5), pool, ds=ds)
    streamed = build_ads(store, "teach", MatchOptions(0.4, 5, max_memory=1), pool, ds=ds)
    assert mem.rows.num_rows and content_hash(mem.rows) == content_hash(streamed.rows)
