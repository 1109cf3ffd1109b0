"""Pseudo-labels: confidence, margin and entropy against a direct numpy computation; caps; options."""

from __future__ import annotations

import numpy as np
import pytest
from curation_data import LABELS, build_world, versions

from curator.curate.pseudo import PseudoOptions, build_pseudo
from schemas.errors import ModelError, ParameterError

SCENES = "source in ('wild', 'esc50')"


@pytest.fixture
def world(store):
    return build_world(store)


def _reference(world, ids, scale):
    prompts = world.prompts()  # one prompt per label here, so class vectors are the prompt vectors
    P = world.T(prompts)
    logits = scale * world.A(ids).astype(np.float64) @ P.T.astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.sort(p, 1)[:, ::-1]
    ent = -(p * np.log(p)).sum(1)
    labels = [world.texts[prompts[j]]["label"] for j in p.argmax(1)]
    return {a: (labels[i], top[i, 0], top[i, 0] - top[i, 1], ent[i], prompts[int(p[i].argmax())])
            for i, a in enumerate(ids)}


def test_pseudo_label_stats_match_numpy(store, world):
    ids = sorted(world.ids("wild") + world.ids("esc50"))
    ref = _reference(world, ids, 20.0)  # the models row's logit scale
    b = build_pseudo(store, "teach", PseudoOptions("esc", min_confidence=0.8, audio_where=SCENES))
    got = {r["audio_id"]: r for r in b.rows.to_pylist()}
    want = {a for a, v in ref.items() if v[1] >= 0.8}
    assert 0 < len(want) < len(ids) and set(got) == want
    for a, row in got.items():
        label, conf, margin, ent, prompt = ref[a]
        assert row["label"] == label and row["text_id"] == prompt and row["text"] == world.texts[prompt]["text"]
        assert row["confidence"] == pytest.approx(conf, abs=1e-6)
        assert row["margin"] == pytest.approx(margin, abs=1e-6)
        assert row["entropy"] == pytest.approx(ent, abs=1e-5)
        assert row["score"] == pytest.approx(float(world.avec[a] @ world.tvec[prompt]), abs=1e-5)
        assert np.allclose(row["teacher_text"], world.tvec[prompt]) and np.allclose(row["teacher_audio"], world.avec[a])
    counts = b.stats["per_class"]
    assert set(counts) == set(LABELS) and sum(counts.values()) == len(got)
    assert b.params["logit_scale"] == 20.0


def test_pool_read_in_blocks_gives_the_rows_of_one_read(store, world, monkeypatch):
    """The pool is scored block by block from the store (memory bounded by one block, not the pool);
    blocks that do not divide the pool change nothing: the same rows, the same numbers."""
    import curator.curate.pseudo as pseudo

    opts = PseudoOptions("esc", min_confidence=0.5, audio_where=SCENES)
    whole = build_pseudo(store, "teach", opts).rows
    monkeypatch.setattr(pseudo, "BLOCK", 3)
    monkeypatch.setattr(pseudo, "READ_BLOCKS", 4)
    n_ids = len(world.ids("wild") + world.ids("esc50"))
    assert n_ids > 2 * 3 * 4 and n_ids % 12  # several read blocks, the last one partial
    assert build_pseudo(store, "teach", opts).rows.equals(whole)


def test_temperature_and_per_class_cap(store, world):
    ids = sorted(world.ids("wild"))
    ref = _reference(world, ids, 1 / 0.1)
    b = build_pseudo(store, "teach", PseudoOptions("esc", 0.5, "source = 'wild'", temperature=0.1))
    assert set(b.rows.column("audio_id").to_pylist()) == {a for a, v in ref.items() if v[1] >= 0.5}
    capped = build_pseudo(store, "teach", PseudoOptions("esc", 0.5, "source = 'wild'", max_per_class=2,
                                                          temperature=0.1))
    rows = capped.rows.to_pylist()
    for label in LABELS:
        mine = [r for r in rows if r["label"] == label]
        pool = sorted((-ref[a][1], a) for a, v in ref.items() if v[0] == label and v[1] >= 0.5)
        assert sorted(r["audio_id"] for r in mine) == sorted(a for _, a in pool[:2])  # the 2 most confident
        assert capped.stats["per_class"][label] == len(mine) <= 2


def test_pseudo_errors(store, world, cli):
    with pytest.raises(ParameterError, match="min-confidence"):
        build_pseudo(store, "teach", PseudoOptions("esc", 1.5))
    with pytest.raises(ModelError, match="unknown model"):
        build_pseudo(store, "ghost", PseudoOptions("esc"))
    try:
        import trainer.students.classifier  # noqa: F401
    except ImportError:
        with pytest.raises(ParameterError, match="classifier support needs trainer.students.classifier"):
            build_pseudo(store, "teach", PseudoOptions("esc", classifier="/tmp/ckpt"))
    before = versions(store, "sets")
    r = cli.curator("pseudo-label", "--model", "teach", "--label-set", "esc", "--name", "pl",
                    "--min-confidence", "0")
    assert r.code == 2 and "error: --min-confidence 0.0" in r.output
    assert versions(store, "sets") == before


def test_cli_pseudo_label_reports_per_class_counts(cli, store, world):
    r = cli.curator("pseudo-label", "--model", "teach", "--label-set", "esc", "--name", "pl",
                    "--min-confidence", "0.6", "--audio-where", "source = 'wild'")
    assert r.code == 0, r.output
    assert "built: set pl@1 strategy=pseudo" in r.output
    assert all(label in r.output for label in LABELS) and "clips" in r.output
