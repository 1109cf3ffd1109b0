"""`torchrun -m trainer fit` with two CPU ranks on gloo: one global batch split across ranks, features
gathered for the loss, rank 0 alone writes the checkpoint, metrics and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from trainer_fixtures import TINY_STUDENT, make_clips, write_set

from trainer.train.checkpoint import load_train_state

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_ranks(tmp_path, tone, store_uri, cli):
    write_set(store_uri, "pairs", make_clips(tmp_path / "wav", tone, per_class=2))  # 16 rows
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "trainer", "--store", store_uri, "fit", "--set", "pairs", "--device", "cpu",
           "--student-config", json.dumps(TINY_STUDENT), "--batch-size", "4", "--epochs", "2",
           "--lr", "1e-3", "--log-every", "1", "--checkpoint-every", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 16 rows / (4 per rank x 2 ranks) = 2 steps per epoch; only rank 0 reports
    assert proc.stdout.count("finished at step 4/4") == 1, proc.stdout
    state = load_train_state(out)
    meta = state["meta"]
    assert meta["world_size"] == 2 and meta["step"] == 4 and meta["steps_per_epoch"] == 2
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert not list(out.glob(".staging-*"))
    # a different number of ranks would not replay the run: refused
    r = cli.trainer("fit", "--resume", "--out", out)
    assert r.code == 2 and "world size 2 -> 1" in r.output


def test_torchrun_two_cpu_ranks_hybrid(tmp_path, tone, store_uri):
    """The hybrid objective runs through the same loop, so it runs under torchrun too."""
    clips = make_clips(tmp_path / "wav", tone, per_class=2)
    write_set(store_uri, "lab", clips)
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(c["label"] + "\n" for c in clips[::2]))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "trainer", "--store", store_uri, "fit", "--loss", "hybrid", "--classes", str(classes), "--set", "lab",
           "--device", "cpu", "--student-config", json.dumps(TINY_STUDENT), "--batch-size", "4", "--epochs", "2",
           "--lr", "1e-3", "--log-every", "1", "--checkpoint-every", "2", "--mixup", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished at step 4/4") == 1, proc.stdout
    meta = load_train_state(out)["meta"]
    assert meta["world_size"] == 2 and meta["step"] == 4 and meta["classifier"]["classes"][0] == clips[0]["label"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
    assert (out / "classifier.safetensors").exists() and not list(out.glob(".staging-*"))
