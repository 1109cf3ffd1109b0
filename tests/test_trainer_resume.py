"""trainer fit: exact resume after a kill, refusing changed data or settings, NaN stops, bad clips skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from trainer_fixtures import TINY_STUDENT, make_clips, write_set

from trainer.data.batches import BatchPlan
from trainer.students.loading import load_student
from trainer.train.checkpoint import load_train_state, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _args(*extra):
    return ["fit", "--student-config", json.dumps(TINY_STUDENT), "--batch-size", "4", "--lr", "1e-3",
            "--log-every", "1", *extra]


def _losses(folder) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), f"duplicate metric lines: {steps}"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path, tone, store_uri, cli):
    clips = make_clips(tmp_path / "wav", tone, per_class=2)  # 16 clips, 4 steps per epoch
    write_set(store_uri, "pairs", clips)
    write_set(store_uri, "base", clips[:8], seed=1)
    common = ["--set", "pairs", "--replay", "base", "--replay-ratio", "0.25", "--epochs", "2",
              "--warmup-steps", "2", "--seed", "7"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = cli.trainer(*_args(*common, "--out", full))
    assert r.code == 0, r.output
    assert "finished at step 8/8" in r.output
    # "Kill" after step 5: checkpoints at step 3 and at the end of epoch 1 (step 4); step 5 is lost work.
    r = cli.trainer(*_args(*common, "--out", killed, "--checkpoint-every", "3", "--stop-after", "5"))
    assert r.code == 0, r.output
    assert read_checkpoint(killed)["step"] == 4 and len(_losses(killed)) == 5
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "trainer", "--store", store_uri, "fit", "--resume", "--out",
                           str(killed)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished at step 8/8" in proc.stdout
    a, b = _losses(full), _losses(killed)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-6, (a, b)
    wa, wb = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-6
    meta = read_checkpoint(killed)
    assert meta["step"] == 8 and meta["set"]["ref"] == "pairs" and meta["set"]["version"] >= 1
    assert meta["replay"]["ref"] == "base" and meta["hparams"]["replay_ratio"] == 0.25
    assert meta["trained_on"] == f"pairs@{meta['set']['version']}"


def test_resume_refuses_changed_data_or_settings(tmp_path, tone, store_uri, cli):
    clips = make_clips(tmp_path / "wav", tone, per_class=2)
    v1 = write_set(store_uri, "pairs", clips)
    out = tmp_path / "run"
    r = cli.trainer(*_args("--set", "pairs", "--epochs", "2", "--out", out, "--checkpoint-every", "2",
                           "--stop-after", "2"))
    assert r.code == 0, r.output
    r = cli.trainer(*_args("--set", "pairs", "--out", out))
    assert r.code == 2 and "already holds a checkpoint (step 2 of 8)" in r.output
    assert "continue it with `trainer --store" in r.output and f"fit --resume --out {out}`" in r.output
    v2 = write_set(store_uri, "pairs", clips[:12])  # the set was rebuilt: "pairs" now means v2
    r = cli.trainer("fit", "--resume", "--out", out)
    assert r.code == 2
    assert f"trained on set pairs@{v1}" in r.output and f"now resolves to pairs@{v2}" in r.output
    r = cli.trainer("fit", "--resume", "--out", out, "--set", f"pairs@{v1}", "--lr", "0.5")
    assert r.code == 2 and "cannot resume with different settings: lr 0.001 -> 0.5" in r.output
    # Same version number, other rows: the store was rebuilt from scratch.
    shutil.rmtree(store_uri)
    assert write_set(store_uri, "pairs", clips[::-1][:12]) == v1
    r = cli.trainer("fit", "--resume", "--out", out, "--set", f"pairs@{v1}")
    assert r.code == 2 and "(hash" in r.output and r.output.startswith("error: cannot resume")
    assert read_checkpoint(out)["step"] == 2  # nothing was overwritten


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tone, store_uri, cli):
    clips = make_clips(tmp_path / "wav", tone, per_class=2)
    third_batch = BatchPlan(16, 0, 4, seed=0).epoch(0)[2][1]
    write_set(store_uri, "pairs", clips, nan_rows=(int(third_batch[0]),))  # corrupt teacher vector
    out = tmp_path / "run"
    r = cli.trainer(*_args("--set", "pairs", "--out", out, "--checkpoint-every", "1"))
    assert r.code == 2
    assert "error: loss is nan at step 3" in r.output and "last good checkpoint is kept" in r.output
    state = load_train_state(out)  # consistent: weights match the train state of step 2
    assert state["meta"]["step"] == 2
    student = load_student(out)
    assert all(np.isfinite(p.detach().numpy()).all() for p in student.parameters())


def test_undecodable_clip_is_skipped_with_a_warning(tmp_path, tone, store_uri, cli):
    clips = make_clips(tmp_path / "wav", tone, per_class=2)
    clips[5]["uri"] = str(tmp_path / "wav" / "gone.wav")
    write_set(store_uri, "pairs", clips)
    out = tmp_path / "run"
    r = cli.trainer(*_args("--set", "pairs", "--out", out, "--loss", "clap"))
    assert r.code == 0, r.output
    assert "skipped 1 clip(s) that failed to decode" in r.output
    metrics = read_checkpoint(out)["metrics"]
    assert metrics["skipped_clips"] == 1 and metrics["skipped_clip_ids"] == [clips[5]["audio_id"]]
    assert _losses(out) and all(np.isfinite(v) for v in _losses(out).values())


def test_fit_cli_help_and_bad_input(tmp_path, tone, store_uri, cli):
    for args in (["--help"], ["fit", "--help"], ["eval", "--help"]):
        r = cli.trainer(*args)
        assert r.code == 0 and "Example" in r.output
    r = cli.trainer("fit", "--set", "nope", "--out", tmp_path / "x")
    assert r.code == 2 and r.output.startswith("error: set 'nope' does not exist")
    write_set(store_uri, "pairs", make_clips(tmp_path / "wav", tone, per_class=1))
    r = cli.trainer("fit", "--set", "pairs", "--out", tmp_path / "x", "--batch-size", "16")
    assert r.code == 2 and "fewer than one global batch" in r.output
    r = cli.trainer("fit", "--set", "pairs", "--out", tmp_path / "x", "--replay-ratio", "0.5")
    assert r.code == 2 and "--replay-ratio needs --replay" in r.output
    r = cli.trainer("fit", "--set", "pairs", "--out", tmp_path / "x", "--init", tmp_path)
    assert r.code == 2 and "no student.json or config.json" in r.output


def test_replay_batches_without_teacher_vectors_fall_back_to_the_hard_loss(tmp_path, tone, store_uri, cli):
    clips = make_clips(tmp_path / "wav", tone, per_class=2)
    write_set(store_uri, "pairs", clips)
    write_set(store_uri, "base", clips[8:], teachers=False)
    out = tmp_path / "run"
    r = cli.trainer(*_args("--set", "pairs", "--replay", "base", "--replay-ratio", "0.5", "--out", out))
    assert r.code == 0, r.output
    kinds = [json.loads(x)["loss_kind"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted(kinds) == ["clap", "clap", "soft", "soft"]  # 4 steps, half of them replay batches
    r = cli.trainer(*_args("--set", "pairs", "--loss", "multi", "--out", tmp_path / "multi"))
    assert r.code == 0, r.output
    assert {json.loads(x)["loss_kind"] for x in (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()} == {"multi"}
