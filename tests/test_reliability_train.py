"""`trainer fit` survives kills and signals: atomic checkpoints, default checkpoints, SIGINT/SIGTERM
save and print the exact resume command, and a resumed run ends with the uninterrupted run's
weights *and* logs (docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import shlex
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import TRAINER, env_with, leftovers, run, start
from safetensors.numpy import load_file
from trainer_fixtures import TINY_STUDENT, make_clips, write_set

from schemas.faults import EXIT_CODE
from trainer.train.checkpoint import read_checkpoint

FIT = ["fit", "--set", "pairs", "--student-config", json.dumps(TINY_STUDENT), "--batch-size", "4",
       "--lr", "1e-3", "--log-every", "1", "--seed", "3", "--warmup-steps", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import write_tone

    root = tmp_path_factory.mktemp("fitdata")
    store = str(root / "store")
    write_set(store, "pairs", make_clips(root / "wav", write_tone, per_class=2))  # 16 clips: 4 steps / epoch
    return {"root": root, "store": store, "runs": {}}


def _fit(data, out: Path, *extra, crash: str | None = None, skip: int = 0, timeout: float = 600):
    env = env_with(CURATOR_CRASH_AT=crash, CURATOR_CRASH_SKIP=skip) if crash else env_with()
    return run(TRAINER, "--store", data["store"], *FIT, *extra, "--out", out, env=env, timeout=timeout)


def _reference(data, epochs: int) -> Path:
    """The uninterrupted run of `epochs` epochs (made once per module)."""
    if epochs not in data["runs"]:
        out = data["root"] / f"ref{epochs}"
        r = _fit(data, out, "--epochs", epochs)
        assert r.returncode == 0, r.stderr
        data["runs"][epochs] = out
    return data["runs"][epochs]


def _logged(folder: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), f"duplicate metric lines: {steps}"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _same_run(a: Path, b: Path) -> None:
    """Same final weights, same logged losses, same losses recorded in checkpoint.json."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-6
    la, lb = _logged(a), _logged(b)
    assert sorted(la) == sorted(lb) and max(abs(la[s] - lb[s]) for s in la) < 1e-6, (la, lb)
    ma, mb = read_checkpoint(a)["metrics"], read_checkpoint(b)["metrics"]
    for key in ("last_loss", "mean_loss_last_100"):
        assert abs(ma[key] - mb[key]) < 1e-6, (key, ma[key], mb[key])
    assert leftovers(b) == []


@pytest.mark.parametrize("point,skip", [("checkpoint staged", 0), ("checkpoint staged", 1),
                                        ("checkpoint committed", 0), ("checkpoint swapped", 1)])
def test_a_kill_during_a_checkpoint_save_leaves_the_old_or_the_new_one(data, tmp_path, point, skip):
    """Two saves: the end of epoch 1 (skip 0) and the final one (skip 1); the process dies in one."""
    reference = _reference(data, 2)
    out = tmp_path / "run"
    r = _fit(data, out, "--epochs", 2, crash=point, skip=skip)
    assert r.returncode == EXIT_CODE, r.stderr
    if (out / "checkpoint.json").exists() or (out / ".next").exists():
        r = run(TRAINER, "--store", data["store"], "fit", "--resume", "--out", out, env=env_with())
    else:  # killed before the first checkpoint was committed: nothing to resume, the command starts over
        assert point == "checkpoint staged" and skip == 0
        r = _fit(data, out, "--epochs", 2)
    assert r.returncode == 0, r.stderr
    assert "finished at step 8/8" in r.stdout
    _same_run(reference, out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_prints_the_resume_command_and_the_resume_replays_the_run(data, tmp_path, sig):
    """Defaults only (no --checkpoint-every): Ctrl-C or a scheduler's SIGTERM mid-run saves a
    checkpoint, prints the exact command to continue; that command ends where the uninterrupted
    run ends, with the same logs."""
    epochs = 30
    reference = _reference(data, epochs)
    out = tmp_path / "run"
    proc = start(TRAINER, "--store", data["store"], *FIT, "--epochs", epochs, "--out", out, env=env_with())
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and (
            not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, (stdout, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted: {sig.name} at step "), stderr
    command = lines[0].split("resume with: ", 1)[1]
    step = read_checkpoint(out)["step"]
    assert f"at step {step}/{epochs * 4}; checkpoint saved in {out}" in lines[0]
    argv = shlex.split(command)
    assert argv[:2] == ["trainer", "--store"] and argv[-3:] == ["--resume", "--out", str(out)]
    r = run(TRAINER, *argv[1:], env=env_with())
    assert r.returncode == 0, r.stderr
    _same_run(reference, out)


def test_the_original_command_after_an_interruption_names_the_resume_command(data, tmp_path):
    out = tmp_path / "run"
    r = _fit(data, out, "--epochs", 2, crash="checkpoint staged", skip=1)
    assert r.returncode == EXIT_CODE
    again = _fit(data, out, "--epochs", 2)
    assert again.returncode == 2
    assert "already holds a checkpoint (step 4 of 8); continue it with `trainer --store" in again.stderr
    assert leftovers(out) == []  # the unfinished save was cleaned by the next start
