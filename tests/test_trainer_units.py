"""Small pieces of the trainer library: resume options, config validation, the one confusion matrix,
the optimiser groups, `evaluate` requests, and a torch-free `trainer --help`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from schemas.errors import ParameterError, TrainingError
from trainer.eval.confusion import confusion_report
from trainer.eval.evaluate import evaluate
from trainer.train.config import FitConfig
from trainer.train.optim import WarmupCosine, param_groups
from trainer.train.resume import check_resume, resume_options

ROOT = Path(__file__).resolve().parents[1]


def test_resume_options_take_the_checkpoint_values_the_user_did_not_give(tmp_path):
    meta = {"step": 4, "set": {"ref": "pairs@2"}, "replay": None,
            "hparams": {"lr": 0.003, "loss": "hybrid", "lam": 0.2, "device": "cuda", "epochs": 3}}
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    given = {"out": str(tmp_path), "set_ref": None, "replay_ref": None, "lr": 1e-4, "loss": "soft", "lam": 0.5,
             "device": "cpu", "epochs": 1, "seed": 0}
    merged = resume_options(tmp_path, given, explicit={"out", "lam", "device"})
    assert merged["lr"] == 0.003 and merged["loss"] == "hybrid" and merged["epochs"] == 3
    assert merged["set_ref"] == "pairs@2" and merged["replay_ref"] is None
    assert merged["lam"] == 0.5  # given explicitly: kept, for fit to check against the checkpoint
    assert merged["device"] == "cpu"  # never taken from the checkpoint
    assert given["lr"] == 1e-4  # the caller's dict is not changed
    with pytest.raises(TrainingError, match="not a trainer checkpoint"):
        resume_options(tmp_path / "none", given, set())
    # a hybrid checkpoint written before the one loop recorded no loss: its classifier block says it
    (tmp_path / "checkpoint.json").write_text(json.dumps({**meta, "hparams": {}, "classifier": {"classes": ["a"]}}))
    assert resume_options(tmp_path, given, set())["loss"] == "hybrid"
    with pytest.raises(TrainingError, match="holds a hybrid run's state, not a --loss soft one"):
        check_resume({"classifier": {}}, FitConfig(store="s", set_ref="lab", out="o"), {}, 1, ())


@pytest.mark.parametrize("options, message", [
    ({"lam": 0.5}, "--lambda needs --loss hybrid"),
    ({"spec_augment": True}, "--spec-augment needs --loss hybrid (other losses: --student-config"),
    ({"loss": "hybrid"}, "--loss hybrid needs --classes"),
    ({"loss": "hybrid", "classes": "c", "replay_ref": "base"}, "--replay is not supported with --loss hybrid"),
    ({"loss": "hybrid", "classes": "c", "context_template": "{label} at {place}"}, "unknown field(s) place"),
    ({"eval_where": "true"}, "--eval-where needs --eval-label-set"),
    ({"set_ref": None}, "--set is required"),
    ({"head_hidden": 0}, "--head-hidden must be at least 1"),
])
def test_fit_config_refuses_bad_combinations(options, message):
    cfg = FitConfig(**{"store": "s", "set_ref": "pairs", "out": "o", **options})
    with pytest.raises(ParameterError) as err:
        cfg.validate()
    assert message in str(err.value)


def test_hybrid_may_evaluate_classifier_accuracy_without_a_label_set_and_records_its_own_hparams():
    cfg = FitConfig(store="s", set_ref="lab", out="o", loss="hybrid", classes="scenes", eval_where="true")
    cfg.validate()
    hp = cfg.hparams()
    assert hp["lam"] == 0.1 and "alpha" not in hp and "replay_ref" not in hp and "out" not in hp
    plain = FitConfig(store="s", set_ref="lab", out="o").hparams()
    assert "lam" not in plain and plain["alpha"] == 0.3


def test_one_confusion_matrix():
    rep = confusion_report(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), ["a", "b", "c", "d"])
    assert rep["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert rep["n"] == 6 and rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["per_class"]["c"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}
    assert rep["per_class"]["d"]["accuracy"] is None  # no clip of d: not scored in the class mean
    assert rep["mean_class_accuracy"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    empty = confusion_report(np.zeros(0), np.zeros(0), ["a", "b"])
    assert empty["accuracy"] is None and empty["mean_class_accuracy"] is None


def test_optimiser_groups_and_schedule():
    module = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    module.logit_scale = nn.Parameter(torch.zeros(()))
    module[0].bias.requires_grad_(False)
    decay, no_decay = param_groups(module, 0.05)
    assert decay["weight_decay"] == 0.05 and [p.shape for p in decay["params"]] == [(4, 3)]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3  # norm weight + bias, logit scale
    sched = WarmupCosine(2, 10)
    assert [sched(0), sched(1)] == [0.5, 1.0] and sched(2) == pytest.approx(1.0) and sched(10) == pytest.approx(0.0)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "pass --model"),
    ({"model": "m"}, "nothing to evaluate"),
    ({"model": "m", "labels": ["a", "b"], "set_ref": "pairs"}, "--set is only used with --retrieval"),
    ({"model": "m", "truth": "t.csv"}, "--truth and --pseudo-set go with --classifier"),
])
def test_evaluate_refuses_requests_that_ask_for_nothing(tmp_path, kwargs, message):
    with pytest.raises(ParameterError, match=message):
        evaluate(str(tmp_path / "store"), **kwargs)


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["eval", "--help"]])
def test_trainer_help_imports_no_torch(args):
    code = ("import sys\nfrom trainer.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = next(x for x in result.stdout.splitlines() if x.startswith("MODULES"))
    assert "Example" in result.stdout
    assert not {"torch", "transformers", "lancedb"} & set(line.split()[1:])
