"""`curator match` / `curator sweep` as a user types them."""

from __future__ import annotations

import numpy as np
import pytest

from curator.demo.vectors import clustered, write_model


@pytest.fixture
def pool(store):
    audio = clustered(500, 32, n_clusters=10, seed=1)
    text = clustered(80, 32, n_clusters=10, seed=2)
    write_model(store, "clapx", text, audio)
    scores = text.astype(np.float64) @ audio.astype(np.float64).T
    return {"store": store, "scores": scores, "t": round(float(np.quantile(scores, 0.97)), 3)}


def test_match_writes_candidates_and_run(cli, pool):
    t = pool["t"]
    res = cli.curator("match", "--model", "clapx", "--threshold", t, "--top-k", 3, "--per", "both", "--run", "r1")
    assert res.code == 0, res.output
    assert "r1" in res.output and "exact" in res.output
    from curator.store.store import Store

    store = Store.open(cli.store_uri)
    cands = store.read("candidates").to_pylist()
    assert cands and all(c["run_id"] == "r1" and c["score"] >= t - 1e-6 and 1 <= c["rank"] <= 3 for c in cands)
    runs = store.read("runs").to_pylist()
    assert [(r["run_id"], r["pairs"], r["per"]) for r in runs] == [("r1", len(cands), "both")]

    again = cli.curator("match", "--model", "clapx", "--threshold", t, "--run", "r1")
    assert again.code == 2 and "error: run 'r1' already exists with other parameters or inputs; pass --replace" \
        in again.output
    same = cli.curator("match", "--model", "clapx", "--threshold", t, "--top-k", 3, "--per", "both", "--run", "r1")
    assert same.code == 0 and "already complete with these parameters and inputs" in same.output
    replaced = cli.curator("match", "--model", "clapx", "--threshold", t, "--run", "r1", "--replace",
                           "--method", "sql", "--format", "json")
    assert replaced.code == 0, replaced.output
    expected = int((pool["scores"] >= t).sum())
    assert Store.open(cli.store_uri).read("runs").to_pylist()[0]["pairs"] == expected


def test_match_bad_input_is_one_line_and_writes_nothing(cli, pool):
    store = pool["store"]
    before = {n: store.version(n) for n in store.names()}
    cases = [
        (("--model", "clapx", "--threshold", 1.5), "error: threshold 1.5 is outside [-1, 1]"),
        (("--model", "ghost", "--threshold", 0.5), "error: unknown model 'ghost'; registered: clapx"),
        (("--model", "clapx", "--threshold", 0.5, "--texts-where", "kind = 'prompt'"), "error: no captions to match"),
        (("--model", "clapx", "--threshold", 0.5, "--method", "ann"), "error: --method ann needs --top-k"),
    ]
    for args, message in cases:
        res = cli.curator("match", *args, "--run", "bad")
        assert res.code == 2 and message in res.output, res.output
        assert len([ln for ln in res.output.splitlines() if ln.startswith("error:")]) == 1
    assert {n: store.version(n) for n in store.names()} == before


def test_sweep_prints_counts_and_writes_png(cli, pool, tmp_path):
    png = tmp_path / "sweep.png"
    res = cli.curator("sweep", "--model", "clapx", "--thresholds", "0.2:0.8:0.2", "--plot", png, "--format", "csv")
    assert res.code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln and ln[0].isdigit()]
    assert len(lines) == 4
    s32 = pool["scores"].astype(np.float32)
    for line, t in zip(lines, (0.2, 0.4, 0.6, 0.8)):
        fields = line.split(",")
        assert float(fields[0]) == pytest.approx(t)
        assert int(fields[1]) == int((s32 >= np.float32(t)).sum())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli.curator("sweep", "--model", "clapx", "--thresholds", "0.5:2:0.5")
    assert bad.code == 2 and "outside [-1, 1]" in bad.output


def test_help_has_examples(cli):
    for cmd in ("match", "sweep"):
        res = cli.curator(cmd, "--help")
        assert res.code == 0 and "Example:" in res.output and f"curator {cmd}" in res.output
