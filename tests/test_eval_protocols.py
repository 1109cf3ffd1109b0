"""`trainer eval --protocol`: each named protocol on small generated ESC-50 / UrbanSound8K / TUT17
folders (the real manifest columns, ingested by `curator ingest audio`), checked for which clips
and which prompts it used; and models taken by registered name (`--init NAME`, `--model NAME`)."""

from __future__ import annotations

import csv
import json

import pytest
from tiny_models import make_tiny_clap
from trainer_fixtures import make_clips, write_audio_texts, write_set

from trainer.eval.protocols import LAION_TEMPLATE, MSCLAP_TEMPLATE, PAPER_TEMPLATE

ESC_CLASSES = [(0, "dog"), (14, "chirping_birds"), (11, "sea_waves")]
US8K_CLASSES = [(1, "car_horn"), (3, "dog_bark")]


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    return make_tiny_clap(tmp_path_factory.mktemp("protocols") / "tiny_clap", seed=0)


def _esc50(root, tone) -> dict[int, list[str]]:
    """ESC-50-master layout: meta/esc50.csv with the real columns, audio/<filename>; 5 folds x 3
    classes x 1 clip. Returns fold -> filenames."""
    (root / "meta").mkdir(parents=True)
    rows, by_fold = [], {}
    for fold in range(1, 6):
        for target, category in ESC_CLASSES:
            name = f"{fold}-{1000 + target}-A-{target}.wav"
            tone(root / "audio" / name, seconds=0.3, freq=200.0 + 40 * target + fold, seed=fold * 100 + target)
            rows.append({"filename": name, "fold": fold, "target": target, "category": category,
                         "esc10": "False", "src_file": str(1000 + target), "take": "A"})
            by_fold.setdefault(fold, []).append(name)
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return by_fold


def _us8k(root, tone) -> None:
    (root / "metadata").mkdir(parents=True)
    rows = []
    for fold in range(1, 11):
        for class_id, name in US8K_CLASSES:
            fname = f"{100 + fold}-{class_id}-0-0.wav"
            tone(root / "audio" / f"fold{fold}" / fname, seconds=0.3, freq=300.0 + 90 * class_id, seed=fold)
            rows.append({"slice_file_name": fname, "fsID": 100 + fold, "start": 0.0, "end": 0.3, "salience": 1,
                         "fold": fold, "classID": class_id, "class": name})
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _tut17(root, tone) -> None:
    root.mkdir(parents=True)
    rows = []
    for i, (label, split) in enumerate([("city_center", "development"), ("forest_path", "development"),
                                        ("city_center", "evaluation"), ("forest_path", "evaluation"),
                                        ("residential_area", "evaluation")]):
        tone(root / f"seg{i}.wav", seconds=0.3, freq=250.0 + 100 * i, seed=i)
        rows.append({"filename": f"seg{i}.wav", "scene_label": label, "split": split})
    with open(root / "tut17.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def datasets(cli, tmp_path, tone):
    by_fold = _esc50(tmp_path / "ESC-50-master", tone)
    assert cli.curator("ingest", "audio", tmp_path / "ESC-50-master" / "meta" / "esc50.csv").code == 0
    _us8k(tmp_path / "UrbanSound8K", tone)
    assert cli.curator("ingest", "audio", tmp_path / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv",
                       "--source", "us8k").code == 0
    _tut17(tmp_path / "tut", tone)
    r = cli.curator("ingest", "audio", tmp_path / "tut" / "tut17.csv", "--source", "tut17", "--label-column",
                    "scene_label", "--split-column", "split")
    assert r.code == 0, r.output
    return by_fold


def _ids(cli, where: str) -> list[str]:
    r = cli.curator("query", f"select audio_id from audio where {where} order by audio_id", "--format", "json")
    return [row["audio_id"] for row in json.loads(r.output)]


def _protocol(cli, model, name, *extra):
    r = cli.trainer("eval", "--model", model, "--protocol", name, "--json", *extra)
    assert r.code == 0, r.output
    return json.loads(r.output.strip().splitlines()[-1])["protocol"]


def _check_metrics(res):
    for key in ("accuracy", "mean_class_accuracy", "R@1", "R@5", "R@10", "mAP@10"):
        assert 0.0 <= res[key] <= 1.0, key
    for g in res["groups"]:
        assert g["R@1"] == pytest.approx(g["accuracy"])  # the true class ranked first = correct
        assert g["R@1"] <= g["mAP@10"] <= g["R@5"] <= g["R@10"] == 1.0  # 3 classes: always within 10


def test_esc50_protocols_use_their_clips_and_prompts(cli, datasets, tiny_clap):
    spelled = ["chirping birds", "dog", "sea waves"]  # underscores become spaces, sorted
    res = _protocol(cli, tiny_clap, "esc50-fold1")
    assert res["protocol"] == "esc50-fold1" and res["template"] == LAION_TEMPLATE == "This is a sound of {label}"
    assert res["labels"] == spelled and res["prompts"] == [f"This is a sound of {c}" for c in spelled]
    assert [g["audio_ids"] for g in res["groups"]] == [_ids(cli, "source = 'esc50' and fold = 1")]
    assert res["n"] == 3 and res["label_spelling"] == "underscores to spaces"
    _check_metrics(res)

    res = _protocol(cli, tiny_clap, "esc50-all")
    assert res["prompts"] == [f"this is the sound of {c}" for c in spelled] and res["template"] == MSCLAP_TEMPLATE
    assert sorted(res["groups"][0]["audio_ids"]) == _ids(cli, "source = 'esc50'") and res["n"] == 15
    _check_metrics(res)

    res = _protocol(cli, tiny_clap, "esc50-5fold")
    assert res["prompts"] == [PAPER_TEMPLATE.format(label=c) for c in spelled]
    assert [g["group"] for g in res["groups"]] == [f"fold {k}" for k in range(1, 6)]
    for k, g in enumerate(res["groups"], start=1):
        assert g["audio_ids"] == _ids(cli, f"source = 'esc50' and fold = {k}") and g["n"] == 3
    assert res["accuracy"] == pytest.approx(sum(g["accuracy"] for g in res["groups"]) / 5)
    assert res["aggregate"] == "mean over groups"
    _check_metrics(res)


def test_us8k_tut17_and_custom_protocols(cli, datasets, tiny_clap):
    res = _protocol(cli, tiny_clap, "us8k-10fold")
    assert res["labels"] == ["car horn", "dog bark"] and len(res["groups"]) == 10
    assert res["prompts"] == ["this is a sound of car horn", "this is a sound of dog bark"]
    assert res["groups"][6]["audio_ids"] == _ids(cli, "source = 'us8k' and fold = 7")
    _check_metrics(res)

    res = _protocol(cli, tiny_clap, "tut17")
    assert res["labels"] == ["city center", "forest path", "residential area"]  # classes from every split
    assert res["groups"][0]["audio_ids"] == _ids(cli, "source = 'tut17' and split = 'evaluation'")
    assert res["n"] == 3

    res = _protocol(cli, tiny_clap, "custom", "--labels", "dog,sea_waves", "--template", "a {label} sound",
                    "--audio-where", "source = 'esc50' and fold = 2")
    assert res["prompts"] == ["a dog sound", "a sea_waves sound"] and res["label_spelling"] == "as stored"
    assert res["n"] == 2 and res["groups"][0]["excluded_unknown_label"] == 1  # the chirping_birds clip

    # a named protocol fixes its prompt and classes
    r = cli.trainer("eval", "--model", tiny_clap, "--protocol", "esc50-fold1", "--template", "x {label}")
    assert r.code == 2 and "fixes the classes and the prompt" in r.output


def test_models_by_registered_name(cli, store, tmp_path, tone, store_uri):
    from curator.models.registry import add_model

    clips = make_clips(tmp_path / "wav", tone, per_class=2, seconds=0.5)[:8]
    write_set(store_uri, "pairs", clips, dim=32)
    write_audio_texts(store_uri, clips, label_set="tones")
    add_model(store, "teach", "clap-hf", make_tiny_clap(tmp_path / "teacher"))
    r = cli.trainer("fit", "--set", "pairs", "--init", "teach", "--batch-size", "4", "--epochs", "1",
                    "--out", tmp_path / "s1")
    assert r.code == 0, r.output
    assert cli.curator("models", "add", "s1", "--kind", "checkpoint", tmp_path / "s1").code == 0
    r = cli.trainer("fit", "--set", "pairs", "--init", "s1", "--batch-size", "4", "--epochs", "1",
                    "--out", tmp_path / "s2", "--json")
    assert r.code == 0, r.output
    for name in ("teach", "s1"):
        r = cli.trainer("eval", "--model", name, "--label-set", "tones", "--json")
        assert r.code == 0, r.output
        assert json.loads(r.output.strip().splitlines()[-1])["zero_shot"]["n"] == 8
    models = {m["model_id"]: m for m in json.loads(cli.curator("models", "list", "--format", "json").output)}
    assert models["s1"]["trained_on"] == "pairs@1" and models["s1"]["lineage"].startswith("pairs@1")
    # unknown names and external models say so in one line
    assert cli.curator("models", "add", "ext", "--kind", "external", "--dim", "32").code == 0
    r = cli.trainer("fit", "--set", "pairs", "--init", "ext", "--out", tmp_path / "s3")
    assert r.code == 2 and "external" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli.trainer("eval", "--model", "nope", "--label-set", "tones")
    assert r.code == 2 and "registered: ext, s1, teach" in r.output
