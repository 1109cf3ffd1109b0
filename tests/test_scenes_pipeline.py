"""A pseudo-label round through the CLI, as scripts/scenes_demo.sh runs it: labelled set -> hybrid
classifier -> pseudo-label --classifier -> union -> retrain; each a set version with lineage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_scenes import TINY


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from conftest import Cli

    root = tmp_path_factory.mktemp("scenes")
    cli = Cli(str(root / "store"))

    def ok(result):
        assert result.code == 0, result.output
        return result.output

    ok(cli.curator("demo", "scenes", root / "corpus", "--clips", "24", "--labelled-fraction", "0.5",
                   "--seconds", "0.5", "--seed", "3"))
    ok(cli.curator("ingest", "audio", root / "corpus" / "scenes.csv", "--source", "scenes"))
    ok(cli.curator("ingest", "labels", "--label-set", "scenes", "--labels", root / "corpus" / "labels.txt"))
    out = ok(cli.curator("build", "labelled", "--name", "lab", "--label-set", "scenes",
                         "--audio-where", "source = 'scenes'"))
    assert "built: set lab@" in out
    fit = ("fit", "--loss", "hybrid", "--classes", "scenes", "--student-config", json.dumps(TINY), "--batch-size", "4",
           "--epochs", "2", "--lr", "1e-3", "--log-every", "1")
    ok(cli.trainer(*fit, "--set", "lab", "--lambda", "0.1", "--fuse-metadata", "--mixup", "--spec-augment",
                   "--out", root / "r0"))
    ok(cli.curator("models", "add", "clf_r0", "--kind", "checkpoint", root / "r0"))
    ok(cli.curator("embed", "--model", "clf_r0", "--audio"))
    ok(cli.curator("embed", "--model", "clf_r0", "--texts", "--where", "label_set = 'scenes'"))
    # An untrained-ish classifier is not confident: a low cut keeps enough rows for a round.
    pl = ok(cli.curator("pseudo-label", "--model", "clf_r0", "--classifier", root / "r0", "--label-set", "scenes",
                        "--name", "pl", "--min-confidence", "0.2", "--audio-where",
                        "source = 'scenes' and len(labels) = 0"))
    ok(cli.curator("build", "union", "--name", "r1", "--from", "lab", "--from", "pl"))
    ok(cli.trainer(*fit, "--set", "r1", "--balance-classes", "--init", root / "r0", "--out", root / "r1"))
    return {"cli": cli, "root": root, "ok": ok, "pl_output": pl}


def test_round_writes_versions_with_lineage(pipeline):
    from curator.curate.catalog import show_set
    from curator.store.store import Store

    cli, root, ok = pipeline["cli"], pipeline["root"], pipeline["ok"]
    store = Store.open(cli.store_uri)
    union = show_set(store, "r1")
    assert union.strategy == "union" and {"set:lab@" in i or "set:pl@" in i for i in union.inputs} == {True}
    pl = next(p for p in union.parents if p.ref.startswith("pl@"))
    assert pl.strategy == "pseudo" and pl.params["classifier"] == str(root / "r0")
    assert any(i.startswith("set:lab@") for i in pl.inputs)  # the classifier's training set
    model = next(p for p in pl.parents if getattr(p, "model_id", None) == "clf_r0" and hasattr(p, "trained_on"))
    assert model.trained_on.startswith("lab@")
    text = ok(cli.curator("sets", "show", "r1"))
    assert "strategy=union" in text and "strategy=pseudo" in text and "strategy=labelled" in text
    ckpt = json.loads((root / "r1" / "checkpoint.json").read_text())
    assert ckpt["trained_on"] == union.ref
    assert union.rows == show_set(store, "lab").rows + pl.rows  # pseudo rows are unlabelled clips only


def test_predict_proba_and_eval_report(pipeline):
    from schemas.sets import read_set
    from trainer.students.classifier import load_classifier, predict_proba

    cli, root, ok = pipeline["cli"], pipeline["root"], pipeline["ok"]
    table, _ = read_set(cli.store_uri, "pl")
    ids = table.column("audio_id").to_pylist()
    labels, probs = predict_proba(str(root / "r0"), cli.store_uri, ids, device="cpu")
    assert labels == load_classifier(root / "r0").classes and probs.shape == (len(ids), len(labels))
    assert np.allclose(probs.sum(1), 1.0)
    assert list(np.array(labels)[probs.argmax(1)]) == table.column("label").to_pylist()
    assert np.allclose(probs.max(1), table.column("confidence").to_numpy(), atol=1e-5)
    res = json.loads(ok(cli.trainer("eval", "--classifier", root / "r1", "--audio-where", "source = 'scenes'",
                                    "--truth", root / "corpus" / "ground_truth.csv", "--pseudo-set", "pl",
                                    "--json")).strip().splitlines()[-1])
    assert res["n"] == 24 and res["excluded_no_truth"] == 0  # --truth covers the unlabelled clips
    assert sum(v["n"] for v in res["per_city"].values()) == 24
    assert np.asarray(res["confusion"]).sum() == 24
    assert 0.0 <= res["accuracy"] <= 1.0
    plr = res["pseudo_labels"]
    assert plr["with_truth"] == plr["rows"] == len(ids) and 0 <= plr["correct"] <= plr["rows"]
    text = ok(cli.trainer("eval", "--classifier", root / "r1", "--audio-where", "source = 'scenes'"))
    assert "per city:" in text and "excluded 12 clip(s) without ground truth" in text


def test_bad_inputs_fail_with_one_line(pipeline):
    cli, root = pipeline["cli"], pipeline["root"]
    r = cli.trainer("fit", "--loss", "hybrid", "--set", "lab", "--out", root / "x")
    assert r.code == 2 and "needs --classes" in r.output
    r = cli.trainer("fit", "--set", "lab", "--lambda", "0.5", "--out", root / "x")
    assert r.code == 2 and "--lambda needs --loss hybrid" in r.output
    r = cli.trainer("fit", "--loss", "hybrid", "--classes", "scenes", "--set", "lab", "--context-template",
                    "{label} at {place}", "--out", root / "x")
    assert r.code == 2 and "unknown field(s) place" in r.output
    labels = root / "two.txt"
    labels.write_text("park\nairport\n")
    r = cli.trainer("fit", "--loss", "hybrid", "--classes", labels, "--set", "lab", "--out", root / "x")
    assert r.code == 2 and "not in --classes" in r.output
    r = cli.curator("build", "labelled", "--name", "none", "--audio-where", "source = 'nothing'")
    assert r.code == 2 and "selects no clips" in r.output
