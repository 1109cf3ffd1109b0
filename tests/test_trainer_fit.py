"""trainer fit + eval end to end: a tiny compact student learns a paired tone set (retrieval and
zero-shot clearly above its initialisation), and `trainer eval` reports it in every format."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest
import torch
from conftest import Cli, write_tone
from trainer_fixtures import CLASSES, TINY_STUDENT, make_clips, write_audio_texts, write_set

from schemas.tables import MODELS
from trainer.eval.zero_shot import eval_clips, evaluate_zero_shot
from trainer.students.loading import build_student, load_student
from trainer.train.checkpoint import read_checkpoint

STEPS = 60  # 32 clips, batch 16: 2 steps per epoch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    store_uri = str(root / "store")
    clips = make_clips(root / "wav", write_tone, per_class=4)
    write_set(store_uri, "pairs", clips)
    write_audio_texts(store_uri, clips, label_set="tones")
    torch.manual_seed(0)
    init = build_student("compact", **TINY_STUDENT).save(root / "init")
    cli = Cli(store_uri)
    out = root / "run"
    r = cli.trainer("fit", "--set", "pairs", "--student-config", json.dumps(TINY_STUDENT), "--batch-size", "16",
                    "--epochs", str(STEPS // 2), "--lr", "3e-3", "--warmup-steps", "4", "--log-every", "5",
                    "--checkpoint-every", str(STEPS // 2), "--cache-mb", "16", "--eval-label-set", "tones",
                    "--eval-where", "source = 'test'", "--out", out)
    assert r.code == 0, r.output
    return {"cli": cli, "store": store_uri, "out": out, "init": init, "clips": clips, "root": root}


def _eval(cli, model, *extra) -> dict:
    r = cli.trainer("eval", "--model", model, "--label-set", "tones", "--retrieval", "--json", *extra)
    assert r.code == 0, r.output
    return json.loads(r.output.strip().splitlines()[-1])


def test_training_beats_initialisation(trained):
    before = _eval(trained["cli"], trained["init"])
    after = _eval(trained["cli"], trained["out"])
    b, a = before["retrieval"]["text_to_audio"], after["retrieval"]["text_to_audio"]
    # 8 classes x 4 clips: an ideal class-level model has R@5 = 1; chance is 5/32.
    assert a["R@5"] >= 0.75 and a["R@5"] >= b["R@5"] + 0.3, (b, a)
    assert after["retrieval"]["audio_to_text"]["R@5"] >= before["retrieval"]["audio_to_text"]["R@5"] + 0.3
    zb, za = before["zero_shot"]["accuracy"], after["zero_shot"]["accuracy"]
    assert za >= 0.4 and za >= zb + 0.2, (zb, za)  # chance is 1/8


def test_checkpoint_and_metrics_record_the_run(trained):
    out = trained["out"]
    meta = read_checkpoint(out)
    assert meta["step"] == STEPS and meta["set"]["ref"] == "pairs" and meta["trained_on"] == "pairs@1"
    assert meta["hparams"]["lr"] == 3e-3 and meta["hparams"]["loss"] == "soft"
    assert meta["student"]["kind"] == "compact" and meta["metrics"]["eval"]["n"] == 32
    assert (out / "student.json").exists() and (out / "model.safetensors").exists()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == list(range(5, STEPS + 1, 5))
    for key in ("lr", "logit_scale", "step_time_s", "data_wait_s", "samples_per_s", "epoch"):
        assert all(r[key] is not None for r in train), key
    assert train[-1]["lr"] < train[0]["lr"]  # cosine decay after warm-up
    assert train[-1]["loss"] < train[0]["loss"]
    evals = [r for r in rows if "eval" in r]
    assert [r["step"] for r in evals] == [STEPS // 2, STEPS] and 0 <= evals[-1]["eval"]["accuracy"] <= 1
    student = load_student(out)
    assert student.dim == 32 and student.window_samples == 16000


def test_eval_text_plot_and_consistency(trained):
    cli, out = trained["cli"], trained["out"]
    plot = trained["root"] / "cm.png"
    r = cli.trainer("eval", "--model", out, "--label-set", "tones", "--audio-where", "source = 'test'",
                    "--plot", plot)
    assert r.code == 0, r.output
    assert "zero-shot: accuracy" in r.output and "confusion (rows = true" in r.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = _eval(cli, out)["zero_shot"]
    cm = res["confusion"]
    assert sum(map(sum, cm)) == res["n"] == 32
    assert abs(res["accuracy"] - sum(cm[i][i] for i in range(len(cm))) / 32) < 1e-9
    assert res["labels"] == sorted(c[0] for c in CLASSES)
    assert all(v["n"] == 4 for v in res["per_class"].values())
    # the library function gives the same numbers from plain (uri, label) pairs
    student = load_student(out)
    pairs = [(c["uri"], c["label"]) for c in trained["clips"]]
    lib = evaluate_zero_shot(student, pairs, res["labels"])
    assert lib["confusion"] == cm
    # a label list instead of a label set; clips outside the classes are counted, not scored
    r = cli.trainer("eval", "--model", out, "--labels", "dog,rain", "--json")
    sub = json.loads(r.output.strip().splitlines()[-1])["zero_shot"]
    assert sub["n"] == 8 and sub["excluded_unknown_label"] == 24
    assert len(eval_clips(trained["store"], "labels[1] = 'dog'")) == 4


def test_eval_retrieval_on_a_set_and_registered_model_names(trained):
    cli, out = trained["cli"], trained["out"]
    r = cli.trainer("eval", "--model", out, "--retrieval", "--set", "pairs@1")
    assert r.code == 0, r.output
    assert "retrieval on pairs@1: 32 texts, 32 clips" in r.output and "text to audio: R@1" in r.output
    db = lancedb.connect(trained["store"])
    row = {"model_id": "student_v1", "kind": "checkpoint", "path": str(out), "sha256": "0" * 64, "dim": 32,
           "logit_scale": 14.0, "sample_rate": 16000, "modalities": ["audio", "text"], "trained_on": "pairs@1",
           "added_at": datetime.now(timezone.utc)}
    db.create_table("models", pa.Table.from_pylist([row], schema=MODELS), schema=MODELS)
    by_name = _eval(cli, "student_v1")
    by_dir = _eval(cli, out)
    assert by_name["zero_shot"]["confusion"] == by_dir["zero_shot"]["confusion"]
    r = cli.trainer("eval", "--model", "nope", "--label-set", "tones")
    assert r.code == 2 and "registered: student_v1" in r.output
    r = cli.trainer("eval", "--model", out)
    assert r.code == 2 and r.output.startswith("error: nothing to evaluate")
    r = cli.trainer("eval", "--model", out, "--label-set", "nope")
    assert r.code == 2 and "label set 'nope' has no prompts" in r.output and "tones" in r.output
    assert Path(out, "checkpoint.json").exists()


def test_a_refused_fit_leaves_no_out_folder(trained):
    """A fit refused before its first write (an unknown set version) exits 2 with one line and
    creates nothing; an --out that existed before is left as it was."""
    cli, root = trained["cli"], trained["root"]
    out = root / "never"
    r = cli.trainer("fit", "--set", "pairs@9", "--student-config", json.dumps(TINY_STUDENT), "--steps", "1",
                    "--out", out)
    assert r.code == 2 and r.output == "error: set 'pairs' has no version 9; versions: 1\n"
    assert not out.exists()
    kept = root / "kept"
    kept.mkdir()
    r = cli.trainer("fit", "--set", "pairs@9", "--student-config", json.dumps(TINY_STUDENT), "--steps", "1",
                    "--out", kept)
    assert r.code == 2 and kept.is_dir()
