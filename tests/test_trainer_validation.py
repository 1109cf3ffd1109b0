"""Validation and early stopping in `trainer fit` (trainer.train.validation): the patience rule on a
hand-written validation curve, the held-out clips never trained on, and a real tiny run that stops
exactly where its own recorded validation curve says and saves the best validation's weights."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import Cli, write_tone
from trainer_fixtures import TINY_STUDENT, make_clips, write_set

from schemas.errors import ParameterError
from trainer.data.batches import BatchPlan
from trainer.train.checkpoint import read_checkpoint
from trainer.train.config import FitConfig
from trainer.train.validation import EarlyStopping, split_clips, stop_step


def test_patience_rule_on_a_hand_written_curve():
    curve = [1.00, 0.80, 0.85, 0.70, 0.75, 0.76, 0.90, 0.60]
    # best at 0, 1, 3; then 0.75 and 0.76 are two validations in a row without improvement
    assert stop_step(curve, patience=2) == 5
    assert stop_step(curve, patience=3) == 6
    assert stop_step(curve, patience=4) is None  # 0.60 at index 7 improves before the fourth miss
    assert stop_step(curve, patience=1) == 2
    s = EarlyStopping(patience=2)
    improved = [s.update(10 * (i + 1), v) for i, v in enumerate(curve[:6])]
    assert improved == [True, True, False, True, False, False]
    assert (s.best_step, s.best_loss, s.stopped_at, s.stop) == (40, 0.70, 60, True)
    # an equal loss is not an improvement
    assert stop_step([0.5, 0.5], patience=1) == 1
    # the state round-trips (a resumed run continues the count)
    again = EarlyStopping.from_state(json.loads(json.dumps(s.state())), 2)
    assert again == s


def test_split_holds_out_whole_clips_and_the_plan_never_trains_on_them():
    ids = [f"a{i // 2:03d}" for i in range(40)]  # 20 clips, two captions each
    table = pa.table({"audio_id": ids, "uri": ids, "text": ["x"] * 40})
    train, val = split_clips(table, 0.25, seed=3)
    assert len(val) == 10 and len(train) == 30
    assert {ids[i] for i in val}.isdisjoint({ids[i] for i in train})
    again_train, again_val = split_clips(table, 0.25, seed=3)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    plan = BatchPlan(len(train), 0, 4, rows=train)
    used = {int(r) for e in range(3) for _, rows in plan.epoch(e) for r in rows}
    assert used <= set(train.tolist())
    with pytest.raises(ParameterError, match="at least one clip on each side"):
        split_clips(table, 0.01, seed=0)


def test_validation_options_are_checked():
    base = {"store": "s", "set_ref": "x", "out": "o"}
    with pytest.raises(ParameterError, match="need a validation set"):
        FitConfig(**base, patience=3).validate()
    with pytest.raises(ParameterError, match="alternatives"):
        FitConfig(**base, val_set="v", val_fraction=0.1).validate()
    with pytest.raises(ParameterError, match=r"--val-fraction must be in \[0, 1\)"):
        FitConfig(**base, val_fraction=1.0).validate()
    with pytest.raises(ParameterError, match="--steps must be at least 1"):
        FitConfig(**base, steps=0).validate()


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    store = str(root / "store")
    clips = make_clips(root / "wav", write_tone, per_class=4)
    write_set(store, "pairs", clips)
    torch.manual_seed(0)
    cli = Cli(store)
    out = root / "run"
    # 32 clips, 8 held out; 24 train in batches of 8: 3 steps an epoch, validated every step.
    r = cli.trainer("fit", "--set", "pairs", "--loss", "clap", "--student-config", json.dumps(TINY_STUDENT),
                    "--batch-size", "8", "--epochs", "12", "--lr", "5e-3", "--val-fraction", "0.25",
                    "--val-every", "1", "--patience", "2", "--log-every", "1", "--cache-mb", "16", "--out", out)
    assert r.code == 0, r.output
    return {"out": out, "output": r.output, "clips": clips, "store": store}


def test_early_stopping_stops_where_the_recorded_curve_says(stopped_run):
    out = stopped_run["out"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [r for r in lines if "val_loss" in r]
    steps = [r["step"] for r in curve]
    assert steps == list(range(1, len(curve) + 1))  # one validation per step
    expected = stop_step([r["val_loss"] for r in curve], patience=2)
    meta = read_checkpoint(out)
    val = meta["metrics"]["validation"]
    total = 3 * 12
    if expected is None:  # the curve never stalled twice in a row: the run used its whole budget
        assert meta["step"] == total and val["stopped_at"] is None
    else:
        assert steps[expected] == meta["step"] == val["stopped_at"] < total
        assert f"early stopping at step {meta['step']}" in stopped_run["output"]
    best = min(range(len(curve)), key=lambda i: (curve[i]["val_loss"], i))
    assert val["best_step"] == steps[best] == val["kept_step"]
    assert val["curve"] == [{"step": r["step"], "val_loss": r["val_loss"]} for r in curve]
    assert val["data"]["source"] == "fraction" and val["data"]["rows"] == 8 and val["data"]["clips"] == 8
    assert not (out / "validation_best").exists()
    # training lines stop at the stop step too
    assert max(r["step"] for r in lines if "loss" in r) == meta["step"]


def test_the_saved_weights_are_the_best_validations(stopped_run):
    """Re-validating the saved checkpoint gives the recorded best loss (the loss is deterministic)."""
    from trainer.train.contrastive import ContrastiveObjective
    from trainer.train.runtime import setup_runtime
    from trainer.train.validation import setup_validation

    out = stopped_run["out"]
    meta = read_checkpoint(out)
    cfg = FitConfig(store=stopped_run["store"], set_ref="pairs", out=str(out), init=str(out), loss="clap",
                    batch_size=8, val_fraction=0.25, seed=0)
    obj = ContrastiveObjective(cfg)
    obj.open()
    obj.build(None)
    rt = setup_runtime("cpu")
    try:
        obj.module.to(rt.device).train()
        _, validator = setup_validation(cfg, obj, rt)
        loss = validator.loss()
    finally:
        rt.close()
    assert loss == pytest.approx(meta["metrics"]["validation"]["best_loss"], rel=1e-4, abs=1e-5)


def test_resume_continues_validation_and_ends_on_the_same_best_weights(tmp_path, tone, store_uri, cli):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.numpy import load_file

    root = Path(__file__).resolve().parents[1]
    clips = make_clips(tmp_path / "wav", tone, per_class=2)  # 16 clips: 4 held out, 12 train
    write_set(store_uri, "pairs", clips)
    common = ["fit", "--set", "pairs", "--student-config", json.dumps(TINY_STUDENT), "--batch-size", "4",
              "--lr", "3e-3", "--epochs", "3", "--seed", "5", "--val-fraction", "0.25", "--val-every", "1",
              "--patience", "3", "--log-every", "1"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert cli.trainer(*common, "--out", full).code == 0
    r = cli.trainer(*common, "--out", killed, "--checkpoint-every", "2", "--stop-after", "3")
    assert r.code == 0, r.output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "trainer", "--store", store_uri, "fit", "--resume", "--out",
                           str(killed)], capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    va, vb = (read_checkpoint(d)["metrics"]["validation"] for d in (full, killed))
    assert [p["step"] for p in va["curve"]] == [p["step"] for p in vb["curve"]]
    assert max(abs(p["val_loss"] - q["val_loss"]) for p, q in zip(va["curve"], vb["curve"])) < 1e-5
    assert (va["best_step"], va["stopped_at"], va["kept_step"]) == (vb["best_step"], vb["stopped_at"], vb["kept_step"])
    wa, wb = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-5
