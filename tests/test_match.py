"""Matching: exact == DuckDB reference == brute force, top-k semantics, blocking, bf16, ann, errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from curator.demo.vectors import clustered, write_model
from curator.match.exact import collect, match_blocks
from curator.match.reference import match_sql
from curator.match.run import run_match
from curator.store.vectors import check_same_model, read_vectors, vector_array
from schemas.errors import MixedModelsError, ModelError, ParameterError, StoreError
from schemas.tables import embedding_table_name, embeddings

N_AUDIO, N_TEXT, DIM = 2000, 300, 64


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from curator.store.store import Store

    store = Store.open(str(tmp_path_factory.mktemp("match") / "store"))
    audio = clustered(N_AUDIO, DIM, n_clusters=40, spread=1.0, seed=1)
    text = clustered(N_TEXT, DIM, n_clusters=40, spread=1.0, seed=2)
    text_ids, audio_ids = write_model(store, "m1", text, audio)
    scores = text.astype(np.float64) @ audio.astype(np.float64).T
    threshold = float(np.quantile(scores, 0.98))
    return {"store": store, "text": text, "audio": audio, "text_ids": text_ids, "audio_ids": audio_ids,
            "scores": scores, "t": threshold}


def brute_force(scores: np.ndarray, t: float, k: int | None, per: str) -> dict[tuple[int, int], int]:
    """{(text, audio): rank} straight from the definition, one caption / clip at a time."""
    keep = scores >= t
    if k:
        in_text = np.zeros_like(keep)
        for i in range(scores.shape[0]):
            cols = [j for j in sorted(np.flatnonzero(keep[i]), key=lambda j: (-scores[i, j], j))][:k]
            in_text[i, cols] = True
        in_audio = np.zeros_like(keep)
        for j in range(scores.shape[1]):
            rows = [i for i in sorted(np.flatnonzero(keep[:, j]), key=lambda i: (-scores[i, j], i))][:k]
            in_audio[rows, j] = True
        keep &= {"text": in_text, "audio": in_audio, "both": in_text & in_audio}[per]
    out = {}
    for i in range(scores.shape[0]):
        for rank, j in enumerate(sorted(np.flatnonzero(keep[i]), key=lambda j: (-scores[i, j], j)), 1):
            out[(i, int(j))] = rank
    return out


def as_dict(r, c, s, rank):
    return {(int(a), int(b)): (float(x), int(y)) for a, b, x, y in zip(r, c, s, rank)}


def candidates_of(store, run_id: str) -> dict[tuple[str, str], tuple[float, int]]:
    from curator.store.sql import query

    t = query(store, f"select text_id, audio_id, score, rank from candidates where run_id = '{run_id}'")
    return {(a, b): (s, r) for a, b, s, r in zip(*(t.column(i).to_pylist() for i in range(4)))}


@pytest.mark.parametrize("k,per", [(None, "text"), (5, "text"), (5, "audio"), (3, "both")])
def test_exact_equals_sql_equals_brute_force(pool, k, per):
    ref = brute_force(pool["scores"], pool["t"], k, per)
    assert len(ref) > 100
    store, name = pool["store"], f"ex_{k}_{per}"
    s_exact = run_match(store, "m1", pool["t"], k, per, method="exact", run_name=name, block=(128, 512))
    s_sql = run_match(store, "m1", pool["t"], k, per, method="sql", run_name=name + "_sql")
    assert s_exact.pairs == s_sql.pairs == len(ref)
    exact, sql = candidates_of(store, name), candidates_of(store, name + "_sql")
    assert exact.keys() == sql.keys()
    tid, aid = pool["text_ids"], pool["audio_ids"]
    assert exact.keys() == {(tid[i], aid[j]) for i, j in ref}
    for (i, j), rank in ref.items():
        score, got_rank = exact[(tid[i], aid[j])]
        assert abs(score - pool["scores"][i, j]) < 1e-5
        assert abs(score - sql[(tid[i], aid[j])][0]) < 1e-5
        assert got_rank == rank == sql[(tid[i], aid[j])][1]


def test_runs_row_records_method_inputs_and_counts(pool):
    store = pool["store"]
    s = run_match(store, "m1", pool["t"], 4, "text", method="exact", run_name="recorded")
    row = [r for r in store.read("runs").to_pylist() if r["run_id"] == "recorded"][0]
    assert (row["method"], row["model_id"], row["top_k"], row["per"]) == ("exact", "m1", 4, "text")
    assert row["threshold"] == pytest.approx(pool["t"])
    assert (row["n_texts"], row["n_audio"], row["pairs"]) == (N_TEXT, N_AUDIO, s.pairs)
    v_audio = store.version(embedding_table_name("m1", "audio"))
    assert f"emb_m1_audio@{v_audio}" in row["inputs"] and any(x.startswith("emb_m1_text@") for x in row["inputs"])
    assert json.loads(row["params"])["precision"] == "auto"
    assert row["recall"] is None and row["duration_s"] > 0


def test_block_sizes_give_identical_results(pool):
    t, a, thr = pool["text"], pool["audio"], pool["t"]
    for k, per in [(None, "text"), (4, "text"), (4, "both")]:
        runs = [collect(match_blocks(t, a, thr, k, per, block=b, device="cpu")) for b in [(16, 64), (97, 333), (300, 2000), 4096]]
        for other in runs[1:]:
            for i in (0, 1, 3):
                np.testing.assert_array_equal(runs[0][i], other[i])
            # Scores of pairs far from the threshold come from the matmul: equal up to an ulp.
            np.testing.assert_allclose(runs[0][2], other[2], atol=1e-6)


def test_caption_blocks_shrink_when_output_is_dense(pool):
    """A tiny pair budget forces smaller caption blocks; the result must not change."""
    t, a = pool["text"], pool["audio"]
    base = collect(match_blocks(t, a, 0.0, block=(256, 512)))
    small = collect(match_blocks(t, a, 0.0, block=(256, 512), max_pairs=5000))
    for i in (0, 1, 3):
        np.testing.assert_array_equal(base[i], small[i])
    np.testing.assert_allclose(base[2], small[2], atol=1e-6)


@pytest.mark.parametrize("k,per", [(None, "text"), (6, "text"), (6, "audio"), (6, "both")])
def test_bf16_with_rescore_keeps_the_fp32_decisions(pool, k, per):
    t, a = pool["text"], pool["audio"]
    # A threshold equal to a real pair's score puts that pair exactly on the boundary.
    i, j = np.unravel_index(np.argmin(np.abs(pool["scores"] - pool["t"])), pool["scores"].shape)
    thr = float(t[i].astype(np.float64) @ a[j].astype(np.float64))
    fp32 = collect(match_blocks(t, a, thr, k, per, precision="fp32", block=(64, 256), device="cpu"))
    bf16 = collect(match_blocks(t, a, thr, k, per, precision="bf16", block=(64, 256), device="cpu"))
    pairs32, pairs16 = set(zip(fp32[0].tolist(), fp32[1].tolist())), set(zip(bf16[0].tolist(), bf16[1].tolist()))
    assert pairs32 == pairs16
    assert k or (int(i), int(j)) in pairs32
    if k:  # top-k lists are ranked on the canonical score in both paths: identical order too
        for n in (0, 1, 3):
            np.testing.assert_array_equal(fp32[n], bf16[n])
    np.testing.assert_allclose(np.sort(fp32[2]), np.sort(bf16[2]), atol=1e-5)


def test_match_sql_agrees_on_arrays_with_ties():
    """Duplicate clips tie exactly; both matchers break ties by position."""
    rng = np.random.default_rng(5)
    a = clustered(120, 16, n_clusters=4, seed=3)
    a = np.concatenate([a, a[:40]])
    t = clustered(30, 16, n_clusters=4, seed=4)
    for k, per in [(3, "text"), (3, "audio"), (2, "both")]:
        thr = float(rng.uniform(0.2, 0.4))
        ours = as_dict(*collect(match_blocks(t, a, thr, k, per, block=(7, 19))))
        ref = as_dict(*collect(match_sql(t, a, thr, k, per)))
        assert ours.keys() == ref.keys()
        assert all(ours[p][1] == ref[p][1] for p in ours)


def test_filters_select_captions_and_clips(pool):
    store = pool["store"]
    s = run_match(store, "m1", pool["t"], None, "text", run_name="filtered",
                  texts_where="text_id < 'c:t0000100'", audio_where="split = 'train'")
    train = np.array([i % 5 != 0 for i in range(N_AUDIO)])
    ref = brute_force(np.where(train[None, :], pool["scores"][:100], -2.0), pool["t"], None, "text")
    assert (s.n_texts, s.n_audio, s.pairs) == (100, int(train.sum()), len(ref))
    assert any(x.startswith("texts@") for x in s.inputs) and any(x.startswith("audio@") for x in s.inputs)


def test_ann_recall_and_index_reuse(tmp_path):
    from curator.store.store import Store

    store = Store.open(str(tmp_path / "store"))
    audio = clustered(3000, DIM, n_clusters=30, seed=11)
    text = clustered(400, DIM, n_clusters=30, seed=12)
    write_model(store, "annm", text, audio)
    scores = text.astype(np.float64) @ audio.astype(np.float64).T
    thr = float(np.quantile(scores, 0.99))
    first = run_match(store, "annm", thr, 10, method="ann", run_name="ann1", ann={"recall_sample": 100})
    assert first.recall is not None and first.recall >= 0.95
    assert first.params["ann"]["built"] is True and first.params["ann"]["index"]
    ref = brute_force(scores, thr, 10, "text")
    got = candidates_of(store, "ann1")
    ids = [f"c:t{i:07d}" for i in range(400)], [f"synth:a{j:07d}" for j in range(3000)]
    want = {(ids[0][i], ids[1][j]) for i, j in ref}
    assert len(want & got.keys()) / len(want) >= 0.95
    assert all(s >= thr - 1e-6 and 1 <= rank <= 10 for s, rank in got.values())
    second = run_match(store, "annm", thr, 10, method="ann", run_name="ann2")
    assert second.params["ann"]["built"] is False and second.params["ann"]["index"] == first.params["ann"]["index"]
    # A clip filter becomes a LanceDB prefilter: same pairs as exact on the filtered pool.
    ann_f = run_match(store, "annm", thr, 5, method="ann", run_name="ann_f", audio_where="split = 'test'")
    exact_f = run_match(store, "annm", thr, 5, method="exact", run_name="exact_f", audio_where="split = 'test'")
    assert ann_f.n_audio == exact_f.n_audio == 600 and ann_f.recall >= 0.95
    assert all(j % 5 == 0 for _, j in ((a, int(b.split(":a")[1])) for a, b in candidates_of(store, "ann_f")))
    both = candidates_of(store, "ann_f").keys() & candidates_of(store, "exact_f").keys()
    assert len(both) >= 0.95 * exact_f.pairs
    with pytest.raises(ParameterError, match="needs --top-k"):
        run_match(store, "annm", thr, None, method="ann", run_name="ann3")


def _footprint(store):
    return {n: store.version(n) for n in store.names()}


def test_bad_input_writes_nothing(pool, tmp_path):
    store = pool["store"]
    before = _footprint(store)
    with pytest.raises(ParameterError, match="outside"):
        run_match(store, "m1", 1.5, run_name="bad1")
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        run_match(store, "nope", 0.5, run_name="bad2")
    with pytest.raises(ParameterError, match="no clips to match"):
        run_match(store, "m1", 0.5, run_name="bad3", audio_where="split = 'nowhere'")
    with pytest.raises(ParameterError, match="top_k"):
        run_match(store, "m1", 0.5, top_k=0, run_name="bad4")
    assert _footprint(store) == before


def test_mixed_models_are_refused(pool):
    store = pool["store"]
    write_model(store, "m2", clustered(50, 48, seed=3), clustered(60, 48, seed=4), prefix="m2", with_rows=False)
    m1 = read_vectors(store, "m1", "text")
    m2 = read_vectors(store, "m2", "audio")
    with pytest.raises(MixedModelsError, match="mix"):
        check_same_model(m1, m2)
    # A text table of model m3 that actually holds m2's vectors (its metadata says so).
    schema = embeddings("text_id", 48).with_metadata({"model_id": "m2"})
    store.overwrite(embedding_table_name("m3", "text"), store.read(embedding_table_name("m2", "text")), schema)
    write_model(store, "m3", clustered(5, 48, seed=5), clustered(60, 48, seed=6), prefix="m3", with_rows=False)
    store.overwrite(embedding_table_name("m3", "text"), store.read(embedding_table_name("m2", "text")), schema)
    before = _footprint(store)
    with pytest.raises(MixedModelsError, match="model 'm2'"):
        run_match(store, "m3", 0.5, run_name="mixed")
    with pytest.raises(MixedModelsError):
        collect(match_blocks(np.ones((3, 8), np.float32), np.ones((3, 9), np.float32), 0.5))
    assert _footprint(store) == before


def test_existing_run_is_refused_unless_replaced(pool):
    store = pool["store"]
    first = run_match(store, "m1", pool["t"], 3, run_name="again")
    same = run_match(store, "m1", pool["t"], 3, run_name="again")  # the same request: already complete
    assert same.reused and same.pairs == first.pairs
    with pytest.raises(ParameterError, match="already exists with other parameters"):
        run_match(store, "m1", pool["t"], 2, run_name="again")
    second = run_match(store, "m1", pool["t"], 1, run_name="again", replace=True)
    assert second.pairs < first.pairs
    assert len(candidates_of(store, "again")) == second.pairs
    assert [r["run_id"] for r in store.read("runs").to_pylist()].count("again") == 1


def test_read_vectors_reads_and_filters_by_id(pool):
    store = pool["store"]
    every = read_vectors(store, "m1", "audio")
    ids, vecs = every.ids.to_pylist(), every.vecs
    assert ids == pool["audio_ids"] and vecs.dtype == np.float32
    np.testing.assert_array_equal(vecs, pool["audio"])
    wanted = [pool["audio_ids"][i] for i in (1500, 3, 77)] + ["synth:missing"]
    v = read_vectors(store, "m1", "audio", wanted)
    assert v.ids.to_pylist() == [pool["audio_ids"][i] for i in (3, 77, 1500)] and v.missing == 1
    np.testing.assert_array_equal(v.vecs, pool["audio"][[3, 77, 1500]])
    with pytest.raises(StoreError, match="no audio embeddings"):
        read_vectors(store, "never_embedded", "audio")


def test_read_vectors_keeps_first_of_duplicate_rows(tmp_path):
    from curator.store.store import Store

    store = Store.open(str(tmp_path / "s"))
    vecs = clustered(4, 8, seed=1)
    schema = embeddings("audio_id", 8)
    data = pa.table({"audio_id": ["a", "b", "a", "c"], "vector": vector_array(vecs)}, schema=schema)
    store.overwrite(embedding_table_name("dup", "audio"), data, schema)
    got = read_vectors(store, "dup", "audio")
    ids, got = got.ids.to_pylist(), got.vecs
    assert ids == ["a", "b", "c"]
    np.testing.assert_array_equal(got, vecs[[0, 1, 3]])


def test_sweep_counts_match_brute_force(pool):
    from curator.match.sweep import parse_thresholds, sweep

    ts = parse_thresholds("0.3:0.9:0.1")
    assert ts == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    result = sweep(pool["text"], pool["audio"], ts, block=(64, 300))
    table = result["table"].to_pydict()
    s32 = pool["text"] @ pool["audio"].T
    for t, pairs, matched in zip(table["threshold"], table["pairs"], table["captions_matched"]):
        assert pairs == int((s32 >= np.float32(t)).sum())
        assert matched == int((s32.max(1) >= np.float32(t)).sum())
    np.testing.assert_allclose(result["best"], s32.max(1), atol=1e-6)
    assert result["hist_counts"].sum() == N_TEXT
    with pytest.raises(ParameterError):
        parse_thresholds("0.5:1.5:0.5")


def test_engine_learns_its_blas_from_the_first_blocks_and_keeps_the_same_pairs(monkeypatch):
    """With no BLAS chosen, the first large blocks alternate numpy's and torch's matmul and the process
    keeps the faster; the pairs, scores and ranks are those of either fixed choice."""
    from curator.match import engine

    dim = 128
    text = clustered(2048, dim, n_clusters=20, spread=1.0, seed=3)
    audio = clustered(20_000, dim, n_clusters=20, spread=1.0, seed=4)
    t = float(np.quantile(text[:64].astype(np.float64) @ audio[:2000].T.astype(np.float64), 0.999))
    monkeypatch.delenv(engine.BLAS_ENV, raising=False)
    monkeypatch.setattr(engine, "_LEARNT_BLAS", {})
    learnt = collect(match_blocks(text, audio, t, 5, device="cpu", precision="fp32"))
    assert engine._LEARNT_BLAS[dim] in ("numpy", "torch")  # 5 blocks of >= 2 GFLOP: both tried twice
    for blas in ("numpy", "torch"):
        monkeypatch.setenv(engine.BLAS_ENV, blas)
        fixed = collect(match_blocks(text, audio, t, 5, device="cpu", precision="fp32"))
        assert len(fixed[0]) > 2048  # top-5 per caption above a high threshold: a real comparison
        for ours, theirs in zip(learnt, fixed):
            np.testing.assert_array_equal(ours, theirs)
