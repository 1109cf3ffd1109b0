"""Class balance (DESIGN 6.11): balanced DU / ADS builds keep exactly the per-class quota, best first,
against a numpy reference; FlexMatch and quantile per-class pseudo-label thresholds against a hand
computation; `curator sets show` prints per-class counts."""

from __future__ import annotations

import numpy as np
import pytest
from curation_data import LABELS, build_world

from curator.curate.balance import BalanceOptions
from curator.curate.catalog import write_set
from curator.curate.pseudo import PseudoOptions, build_pseudo
from curator.curate.strategies import DSOptions, MatchOptions, build_ads, build_ds, build_du
from curator.curate.thresholds import class_thresholds, flexmatch, quantile
from schemas.errors import ParameterError

POOL = "source = 'wild'"
PAIRS = "source = 'clotho'"


@pytest.fixture
def world(store):
    return build_world(store, n_wild=80)


def _expected(world, rows, k):
    """Reference: each row's class = nearest prompt to its caption (teacher text space); per class the
    k highest-scoring rows, ties by (audio_id, text_id)."""
    prompts = world.prompts()
    P = world.T(prompts)
    label_of = {}
    for r in rows:
        sims = world.tvec[r["text_id"]].astype(np.float64) @ P.T.astype(np.float64)
        label_of[(r["audio_id"], r["text_id"])] = world.texts[prompts[int(sims.argmax())]]["label"]
    out = {}
    for lab in LABELS:
        mine = [r for r in rows if label_of[(r["audio_id"], r["text_id"])] == lab]
        mine.sort(key=lambda r: (-r["score"], r["audio_id"], r["text_id"]))
        out[lab] = {(r["audio_id"], r["text_id"]) for r in mine[:k]}
    return out, label_of


def test_balanced_du_keeps_exactly_the_quota_per_class_best_first(store, world):
    opts = MatchOptions(0.3, top_k=1, per="audio")
    full = build_du(store, "teach", opts, POOL, PAIRS).rows.to_pylist()
    want, label_of = _expected(world, full, 5)
    candidates = {lab: sum(1 for v in label_of.values() if v == lab) for lab in LABELS}
    assert all(n > 5 for n in candidates.values()), candidates  # every class has more than the quota
    b = build_du(store, "teach", opts, POOL, PAIRS, balance=BalanceOptions("esc", per_class=5))
    rows = b.rows.to_pylist()
    got = {lab: {(r["audio_id"], r["text_id"]) for r in rows if r["label"] == lab} for lab in LABELS}
    assert {lab: len(v) for lab, v in got.items()} == {lab: 5 for lab in LABELS}
    assert got == want
    bal = b.params["balance"]
    assert bal["counts"] == {lab: 5 for lab in LABELS} and bal["candidates"] == candidates
    assert bal["quota"] == 5 and bal["per_class"] == 5 and bal["label_set"] == "esc"
    assert b.stats["per_class"] == bal["counts"]
    # the teacher vectors still travel with every row
    assert all(len(r["teacher_audio"]) == len(r["teacher_text"]) == 16 for r in rows)


def test_equal_quota_without_k_and_small_classes_keep_all(store, world):
    opts = MatchOptions(0.3, top_k=1, per="audio")
    full = build_du(store, "teach", opts, POOL, PAIRS).rows.to_pylist()
    b = build_du(store, "teach", opts, POOL, PAIRS, balance=BalanceOptions("esc"))
    quota = len(full) // len(LABELS)
    assert b.params["balance"]["quota"] == quota
    cand = b.params["balance"]["candidates"]
    assert b.params["balance"]["counts"] == {lab: min(quota, cand[lab]) for lab in LABELS}
    # a quota above a class's candidates keeps all of that class
    big = build_du(store, "teach", opts, POOL, PAIRS, balance=BalanceOptions("esc", per_class=10_000))
    assert big.rows.num_rows == len(full) and big.params["balance"]["counts"] == cand


def test_balanced_ads_and_rebuild_is_the_same(store, world):
    ds = build_ds(store, "teach", DSOptions("esc", 0.2, PAIRS))
    write_set(store, "ds", ds.rows, ds.strategy, ds.params, ds.inputs, ds.model)
    opts = MatchOptions(0.2, top_k=1, per="audio")
    full = build_ads(store, "teach", opts, POOL, from_set="ds").rows.to_pylist()
    want, _ = _expected(world, full, 3)
    b = build_ads(store, "teach", opts, POOL, from_set="ds", balance=BalanceOptions("esc", per_class=3))
    got = {lab: {(r["audio_id"], r["text_id"]) for r in b.rows.to_pylist() if r["label"] == lab} for lab in LABELS}
    assert got == want
    again = build_ads(store, "teach", opts, POOL, from_set="ds", balance=BalanceOptions("esc", per_class=3))
    assert again.rows.equals(b.rows)
    with pytest.raises(ParameterError, match="--per-class 0"):
        build_ads(store, "teach", opts, POOL, from_set="ds", balance=BalanceOptions("esc", per_class=0))


def test_flexmatch_thresholds_equal_a_hand_computation():
    # classes 0, 1, 2; τ = 0.8
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    conf = np.array([0.90, 0.95, 0.85, 0.50, 0.82, 0.60, 0.30, 0.70])
    # σ = (3, 1, 0): confident (≥ 0.8) predictions per class; β = (1, 1/3, 0)
    # τ_c = 0.8·β/(2−β) = (0.8, 0.8·(1/3)/(5/3) = 0.16, 0)
    assert np.allclose(flexmatch(labels, conf, 3, 0.8), [0.8, 0.16, 0.0])
    # nobody confident: the global τ everywhere
    assert np.allclose(flexmatch(labels, conf, 3, 0.99), [0.99] * 3)
    # quantile: τ keeps 4 of 8 clips (r = 0.5); class 0 keeps ceil(0.5·4) = 2 → its 2nd best 0.90,
    # class 1 ceil(0.5·2) = 1 → 0.82, class 2 → 0.70
    assert np.allclose(quantile(labels, conf, 3, 0.8), [0.90, 0.82, 0.70])
    assert np.isinf(quantile(labels, conf, 4, 0.8)[3])  # a class nobody predicts keeps nothing
    assert np.allclose(class_thresholds(None, labels, conf, 3, 0.8), [0.8] * 3)


def test_pseudo_label_per_class_thresholds_through_the_builder(store, world):
    where = "source = 'wild'"
    base = build_pseudo(store, "teach", PseudoOptions("esc", 0.95, where, temperature=0.05))
    confident = base.stats["per_class_confident"]
    assert sum(confident.values()) == base.rows.num_rows
    b = build_pseudo(store, "teach", PseudoOptions("esc", 0.95, where, temperature=0.05,
                                                   per_class_threshold="flexmatch"))
    top = max(confident.values())
    want = {lab: 0.95 * (n / top) / (2 - n / top) for lab, n in confident.items()}
    assert b.params["thresholds"] == pytest.approx(want) and b.params["per_class_threshold"] == "flexmatch"
    for r in b.rows.to_pylist():
        assert r["confidence"] >= want[r["label"]] - 1e-6
    assert b.rows.num_rows >= base.rows.num_rows
    assert b.params["per_class"] == b.stats["per_class"]
    assert sum(b.stats["per_class"].values()) == b.rows.num_rows
    capped = build_pseudo(store, "teach", PseudoOptions("esc", 0.95, where, max_per_class=2, temperature=0.05,
                                                        per_class_threshold="quantile"))
    assert max(capped.stats["per_class"].values()) <= 2
    with pytest.raises(ParameterError, match="--per-class-threshold"):
        build_pseudo(store, "teach", PseudoOptions("esc", 0.9, where, per_class_threshold="freematch"))


def test_cli_balance_pseudo_and_sets_show_print_per_class_counts(cli, store, world):
    r = cli.curator("build", "du", "--model", "teach", "--name", "du_bal", "--threshold", "0.3", "--top-k", "1",
                    "--per", "audio", "--pool-where", POOL, "--pairs-where", PAIRS, "--balance", "esc",
                    "--per-class", "4")
    assert r.code == 0, r.output
    assert "candidates" in r.output and all(f"{lab}" in r.output for lab in LABELS)
    r = cli.curator("sets", "show", "du_bal")
    assert r.code == 0, r.output
    assert "per-class counts (label): " in r.output
    assert all(f"{lab} 4" in r.output for lab in LABELS), r.output
    r = cli.curator("pseudo-label", "--model", "teach", "--label-set", "esc", "--name", "pl", "--min-confidence",
                    "0.95", "--temperature", "0.05", "--audio-where", POOL, "--per-class-threshold", "flexmatch")
    assert r.code == 0, r.output
    assert "threshold" in r.output and "confident" in r.output
    r = cli.curator("sets", "show", "pl")
    assert "per-class counts (label): " in r.output
    r = cli.curator("build", "du", "--model", "teach", "--name", "x", "--threshold", "0.3", "--pool-where", POOL,
                    "--per-class", "3")
    assert r.code == 2 and "--per-class needs --balance" in r.output
