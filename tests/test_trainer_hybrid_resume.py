"""trainer fit --loss hybrid runs through the one training loop: a run killed with SIGKILL after a
checkpoint resumes to bit-identical weights, evaluates the classifier at checkpoints, and refuses
a resume with other hybrid settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from trainer_fixtures import TINY_STUDENT, make_clips, write_audio_texts, write_set

from trainer.students.classifier import load_classifier
from trainer.train.checkpoint import load_train_state, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _steps(folder) -> dict[int, dict]:
    rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    assert len(train) == len({r["step"] for r in train}), "duplicate metric lines"
    return {r["step"]: r for r in train}


def _weights(folder) -> dict[str, np.ndarray]:
    return {f"{name}:{k}": v for name in ("model", "classifier")
            for k, v in load_file(Path(folder) / f"{name}.safetensors").items()}


def _kill_after_first_checkpoint(args: list[str], out: Path) -> int:
    """Start `trainer ARGS` and SIGKILL it once a checkpoint exists and a later step has run; returns
    the step of the checkpoint it left."""
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
            metrics = out / "metrics.jsonl"
            if (out / "checkpoint.json").exists() and metrics.exists():
                saved = read_checkpoint(out)["step"]
                if any(r["step"] > saved for r in _steps(out).values()):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=60)
                    return saved
            time.sleep(0.02)
        raise AssertionError("no checkpoint within the deadline")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


def test_hybrid_killed_run_resumes_to_identical_weights(tmp_path, tone, store_uri, cli):
    clips = make_clips(tmp_path / "wav", tone, per_class=2)  # 16 labelled clips: 4 steps per epoch
    write_set(store_uri, "lab", clips)
    write_audio_texts(store_uri, clips, label_set="tones")
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(c["label"] + "\n" for c in clips[::2]))
    common = ["fit", "--loss", "hybrid", "--classes", str(classes), "--set", "lab", "--student-config",
              json.dumps(TINY_STUDENT), "--batch-size", "4", "--epochs", "3", "--lr", "1e-3", "--warmup-steps", "2",
              "--seed", "5", "--log-every", "1", "--checkpoint-every", "3", "--lambda", "0.1", "--mixup",
              "--spec-augment", "--eval-where", "source = 'test'"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = cli.trainer(*common, "--out", full)
    assert r.code == 0, r.output
    assert "finished at step 12/12" in r.output and "16 labelled rows, 8 classes; classifier:" in r.output

    saved = _kill_after_first_checkpoint(["--store", store_uri, *common, "--out", str(killed)], killed)
    assert 3 <= saved < 12 and saved % 3 == 0
    assert max(_steps(killed)) > saved  # work past the checkpoint was lost with the process
    proc = subprocess.run([sys.executable, "-m", "trainer", "--store", store_uri, "fit", "--resume", "--out",
                           str(killed)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished at step 12/12" in proc.stdout and "classifier:" in proc.stdout

    # Bit-identical: same batches, crops, mixup pairs, SpecAugment masks and optimiser state.
    wa, wb = _weights(full), _weights(killed)
    assert sorted(wa) == sorted(wb) and any(k.startswith("classifier:") for k in wa)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa), [k for k in wa if not np.array_equal(wa[k], wb[k])]
    a, b = _steps(full), _steps(killed)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert all(a[s]["loss"] == b[s]["loss"] and a[s]["train_accuracy"] == b[s]["train_accuracy"] for s in a)
    assert {r["loss_kind"] for r in a.values()} == {"hybrid"} and all("ce" in r and "contrastive" in r for r in a.values())

    meta = load_train_state(killed)["meta"]
    assert meta["step"] == 12 and meta["trained_on"].startswith("lab@") and meta["hparams"]["loss"] == "hybrid"
    assert meta["classifier"]["classes"] == [c["label"] for c in clips[::2]]  # the --classes file's order
    assert "alpha" not in meta["hparams"] and meta["hparams"]["mixup"] is True
    # periodic evaluation: classifier accuracy on the --eval-where clips at every checkpoint
    evals = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["step"] for e in evals] == [3, 6, 9, 12]
    assert all(e["eval"]["task"] == "classifier" and e["eval"]["n"] == 16 for e in evals)
    assert meta["metrics"]["eval"]["n"] == 16
    assert load_classifier(killed).classes == meta["classifier"]["classes"]


def test_hybrid_resume_refuses_other_settings_and_finished_runs_keep(tmp_path, tone, store_uri, cli):
    clips = make_clips(tmp_path / "wav", tone, per_class=1)
    write_set(store_uri, "lab", clips)
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(c["label"] + "\n" for c in clips))
    out = tmp_path / "run"
    r = cli.trainer("fit", "--loss", "hybrid", "--classes", classes, "--set", "lab", "--student-config",
                    json.dumps(TINY_STUDENT), "--batch-size", "4", "--epochs", "2", "--log-every", "1",
                    "--checkpoint-every", "1", "--stop-after", "1", "--out", out)
    assert r.code == 0, r.output
    assert read_checkpoint(out)["step"] == 1
    r = cli.trainer("fit", "--resume", "--out", out, "--lambda", "0.5")
    assert r.code == 2 and "cannot resume with different settings: lam 0.1 -> 0.5" in r.output
    r = cli.trainer("fit", "--resume", "--out", out, "--loss", "soft")
    assert r.code == 2 and "--classes needs --loss hybrid" in r.output  # the checkpoint's hybrid options
    r = cli.trainer("fit", "--resume", "--out", out, "--replay", "lab")
    assert r.code == 2 and "--replay is not supported with --loss hybrid" in r.output
    r = cli.trainer("fit", "--resume", "--out", out, "--json")
    assert r.code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["step"] == res["total_steps"] == 4 and len(res["classes"]) == 8 and res["rows"] == 8
