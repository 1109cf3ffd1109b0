"""DU / DS / ADS builders against a numpy brute-force reference, decisions, and error contracts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from curation_data import LABELS, brute_match, build_world, unit, versions, write_model, write_vectors

from curator.curate.catalog import write_set
from curator.curate.decisions import read_decisions
from curator.curate.strategies import DSOptions, MatchOptions, build_ads, build_ds, build_du
from schemas.errors import MixedModelsError, ModelError, ParameterError, RefError
from schemas.sets import read_set

POOL = "source = 'wild'"
PAIRS = "source = 'clotho'"


@pytest.fixture
def world(store):
    return build_world(store)


def _pairs(rows):
    return {(r["text_id"], r["audio_id"]): r for r in rows.to_pylist()}


def _expected_du(world, tau, top_k=None, texts=None, pool=None):
    texts = texts if texts is not None else world.captions()
    pool = pool if pool is not None else world.ids("wild")
    ref = brute_match(world.T(texts), world.A(pool), tau, top_k)
    return {(texts[t], pool[a]): s for t, a, s in ref}


def test_du_matches_bruteforce_with_topk_and_carries_teacher_vectors(store, world):
    b = build_du(store, "teach", MatchOptions(0.5, top_k=3), POOL, PAIRS)
    got = _pairs(b.rows)
    want = _expected_du(world, 0.5, 3)
    assert 0 < len(want) < len(world.captions()) * len(world.ids("wild"))  # the threshold is selective
    assert set(got) == set(want)
    for key, row in got.items():
        assert row["score"] == pytest.approx(want[key], abs=1e-5)
        assert np.allclose(row["teacher_audio"], world.avec[key[1]])
        assert np.allclose(row["teacher_text"], world.tvec[key[0]])
        assert row["uri"] == world.audio[key[1]]["uri"]
        assert row["text"] == world.texts[key[0]]["text"]
    assert b.strategy == "du" and b.params["threshold"] == 0.5 and b.params["top_k"] == 3
    assert any(i.startswith("emb_teach_audio@") for i in b.inputs) and any(i.startswith("texts@") for i in b.inputs)


def test_du_without_topk_keeps_every_pair_above_tau(store, world):
    b = build_du(store, "teach", MatchOptions(0.6), POOL)
    assert set(_pairs(b.rows)) == set(_expected_du(world, 0.6))


def _expected_ds(world, tau):
    """caption -> (best prompt similarity, label) for captions whose best similarity >= tau."""
    prompts = world.prompts()
    P = world.T(prompts)
    out = {}
    for tid in world.captions():
        sims = P @ world.tvec[tid]
        j = int(np.argmax(sims))
        if sims[j] >= tau:
            out[tid] = (float(sims[j]), world.texts[prompts[j]]["label"])
    return out


def test_ds_keeps_pairs_whose_caption_is_near_a_prompt(store, world):
    want = _expected_ds(world, 0.7)
    assert 0 < len(want) < len(world.captions())
    b = build_ds(store, "teach", DSOptions("esc", 0.7, PAIRS))
    got = {r["text_id"]: r for r in b.rows.to_pylist()}
    assert set(got) == set(want)
    for tid, row in got.items():
        assert row["score"] == pytest.approx(want[tid][0], abs=1e-5)
        assert row["label"] == want[tid][1]
        assert row["audio_id"] == world.texts[tid]["audio_id"]  # the caption's own paired clip
        assert np.allclose(row["teacher_audio"], world.avec[row["audio_id"]])
        assert np.allclose(row["teacher_text"], world.tvec[tid])


def test_ds_with_a_sentence_text_model(store, world):
    rng = np.random.default_rng(5)
    sent = {t: unit(rng.standard_normal(8)) for t in world.texts}
    first_prompt = world.prompts()[0]
    for tid in world.captions()[:3]:  # three captions made close to the first prompt in the sentence space
        sent[tid] = unit(sent[first_prompt] + 0.05 * rng.standard_normal(8))
    write_model(store, "sent", dim=8, kind="sentence", logit_scale=None, modalities=("text",))
    write_vectors(store, "sent", "text", sent)
    b = build_ds(store, "teach", DSOptions("esc", 0.9, PAIRS, text_model="sent"))
    got = {r["text_id"]: r for r in b.rows.to_pylist()}
    P = np.stack([sent[p] for p in world.prompts()])
    want = {t for t in world.captions() if (P @ sent[t]).max() >= 0.9}
    assert set(got) == want and set(world.captions()[:3]) <= want
    for tid, row in got.items():
        assert row["label"] == world.texts[first_prompt]["label"] or tid not in world.captions()[:3]
        assert np.allclose(row["teacher_text"], world.tvec[tid])  # teacher vectors, not the sentence model's
    assert any(i.startswith("emb_sent_text@") for i in b.inputs)


def test_ads_from_set_and_on_the_fly_agree_with_bruteforce(store, world):
    ds = build_ds(store, "teach", DSOptions("esc", 0.7, PAIRS))
    write_set(store, "ds", ds.rows, ds.strategy, ds.params, ds.inputs, ds.model)
    b = build_ads(store, "teach", MatchOptions(0.5, top_k=4), POOL, from_set="ds")
    ds_captions = sorted(_expected_ds(world, 0.7))
    want = _expected_du(world, 0.5, 4, texts=ds_captions)
    got = _pairs(b.rows)
    assert set(got) == set(want)
    labels = _expected_ds(world, 0.7)
    assert all(row["label"] == labels[key[0]][1] for key, row in got.items())  # DS label carried over
    assert "set:ds@1" in b.inputs and b.params["from_set"] == "ds@1"
    fly = build_ads(store, "teach", MatchOptions(0.5, top_k=4), POOL, ds=DSOptions("esc", 0.7, PAIRS))
    from schemas.sets import content_hash

    assert content_hash(fly.rows) == content_hash(b.rows)


def test_decisions_drop_rejected_and_keep_accepted(store, world, tmp_path):
    base = build_du(store, "teach", MatchOptions(0.5, top_k=3), POOL, PAIRS)
    kept = sorted(_pairs(base.rows))
    everything = _expected_du(world, -1.0)
    below = sorted(k for k, s in everything.items() if s < 0.2)[:2]
    path = tmp_path / "decisions.csv"
    path.write_text("text_id,audio_id,decision\n" + "".join(
        f"{t},{a},{d}\n" for (t, a), d in [(kept[0], "reject"), (kept[1], "REJECT"), (below[0], "accept"),
                                            (below[1], "accept")]))
    dec = read_decisions(str(path))
    b = build_du(store, "teach", MatchOptions(0.5, top_k=3), POOL, PAIRS, decisions=dec)
    assert set(_pairs(b.rows)) == set(kept) - {kept[0], kept[1]}
    assert f"decisions:{dec.sha256}" in b.inputs and b.params["decisions"]["sha256"] == dec.sha256
    b2 = build_du(store, "teach", MatchOptions(0.5, top_k=3), POOL, PAIRS, decisions=dec, keep_accepted=True)
    got = _pairs(b2.rows)
    assert set(got) == (set(kept) - {kept[0], kept[1]}) | set(below)
    assert got[below[0]]["score"] == pytest.approx(everything[below[0]], abs=1e-5)


def test_decisions_json_and_bad_files(tmp_path):
    good = tmp_path / "d.json"
    good.write_text(json.dumps([{"text_id": "t1", "audio_id": "a1", "decision": "accept"},
                                {"text_id": "t1", "audio_id": "a1", "decision": "reject"}]))
    dec = read_decisions(str(good))
    assert dec.rejected == {("t1", "a1")} and not dec.accepted  # the last decision wins
    bad = tmp_path / "bad.csv"
    bad.write_text("text_id,audio_id,decision\nt1,a1,maybe\n")
    with pytest.raises(ParameterError, match="line 2 has decision 'maybe'"):
        read_decisions(str(bad))
    with pytest.raises(ParameterError, match="missing column"):
        (tmp_path / "c.csv").write_text("text_id,decision\n")
        read_decisions(str(tmp_path / "c.csv"))


def test_builder_errors(store, world):
    with pytest.raises(ParameterError, match="outside"):
        build_du(store, "teach", MatchOptions(1.5), POOL)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        build_du(store, "nope", MatchOptions(0.5), POOL)
    with pytest.raises(ParameterError, match="empty pool"):
        build_du(store, "teach", MatchOptions(0.5), "source = 'nowhere'")
    with pytest.raises(RefError, match="does not exist"):
        build_ads(store, "teach", MatchOptions(0.5), POOL, from_set="ghost")
    with pytest.raises(ParameterError, match="selects no texts"):
        build_ds(store, "teach", DSOptions("no_such_labels", 0.7))
    ds = build_ds(store, "teach", DSOptions("esc", 0.7, PAIRS))
    write_model(store, "other")
    write_set(store, "ds_other", ds.rows, "ds", ds.params, ds.inputs, {"model_id": "other", "sha256": "x"})
    with pytest.raises(MixedModelsError, match="'other'"):
        build_ads(store, "teach", MatchOptions(0.5), POOL, from_set="ds_other")


def test_cli_build_errors_write_nothing(cli, store, world):
    cases = [
        (["build", "du", "--model", "teach", "--name", "x", "--threshold", "1.5", "--pool-where", POOL], "outside"),
        (["build", "du", "--model", "nope", "--name", "x", "--threshold", "0.5", "--pool-where", POOL], "unknown model"),
        (["build", "du", "--model", "teach", "--name", "x", "--threshold", "0.5", "--pool-where", "source='zz'"],
         "empty pool"),
        (["build", "ads", "--model", "teach", "--name", "x", "--threshold", "0.5", "--pool-where", POOL,
          "--from-set", "ghost@2"], "does not exist"),
        (["build", "du", "--model", "teach", "--name", "x", "--threshold", "0.999", "--pool-where", POOL], "no rows"),
        (["build", "ads", "--model", "teach", "--name", "x", "--threshold", "0.5", "--pool-where", POOL,
          "--from-set", "ds_other"], "cannot be mixed"),
        (["build", "du", "--model", "teach", "--name", "x", "--threshold", "0.5", "--pool-where", "nosuchcol = 1"],
         "--pool-where"),
    ]
    ds = build_ds(store, "teach", DSOptions("esc", 0.7, PAIRS))
    write_model(store, "other")
    write_set(store, "ds_other", ds.rows, "ds", ds.params, ds.inputs, {"model_id": "other", "sha256": "x"})
    before = {n: versions(store, n) for n in store.names()}
    for args, message in cases:
        result = cli.curator(*args)
        assert result.code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert {n: versions(store, n) for n in store.names()} == before
    assert "set_x" not in store.names()


def test_cli_build_du_ds_ads_and_rebuild_is_unchanged(cli, store, world):
    args = ["build", "du", "--model", "teach", "--name", "du", "--threshold", "0.5", "--top-k", "3",
            "--pool-where", POOL, "--pairs-where", PAIRS]
    r = cli.curator(*args)
    assert r.code == 0, r.output
    assert "built: set du@1 strategy=du" in r.output
    again = cli.curator(*args)
    assert again.code == 0 and "unchanged: set du@1" in again.output
    r = cli.curator("build", "ds", "--model", "teach", "--name", "ds", "--label-set", "esc", "--threshold", "0.7")
    assert r.code == 0 and "set ds@1 strategy=ds" in r.output, r.output
    r = cli.curator("build", "ads", "--model", "teach", "--name", "ads", "--from-set", "ds@1", "--threshold", "0.5",
                    "--pool-where", POOL)
    assert r.code == 0 and "set ads@1 strategy=ads" in r.output, r.output
    rows, resolved = read_set(store.uri, "ads")
    assert resolved.rows == rows.num_rows > 0
    assert set(rows.column("label").to_pylist()) <= set(LABELS)
