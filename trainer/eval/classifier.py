"""`trainer eval --classifier CKPT`: accuracy, per-class and per-city accuracy, confusion matrix,
and how many pseudo-labels of a set were right.

Ground truth is the first element of `audio.labels`, or, with `--truth CSV`, the CSV's label
(for clips whose labels the store must not hold, such as the unlabelled pool of a semi-supervised
corpus). A truth CSV has a label column (`label` or `scene_label`) and names clips either by
`audio_id` or by `filename` (a path relative to the CSV's folder, matched against `audio.uri`),
which is exactly the `ground_truth.csv` that `curator demo scenes` writes.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.errors import ParameterError
from schemas.reading import query
from schemas.sets import read_set
from trainer.eval.confusion import confusion_report
from trainer.eval.zero_shot import audio_filter
from trainer.students.classifier import SceneClassifier, audio_rows, load_classifier, predict_table

LABEL_COLUMNS = ("label", "scene_label")


def read_truth(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """({audio_id: label}, {resolved file path: label}) from a truth CSV."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"--truth {path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    label_col = next((c for c in LABEL_COLUMNS if c in header), None)
    if label_col is None or not ({"audio_id", "filename"} & set(header)):
        raise ParameterError(f"--truth {path}: needs a label column ({' or '.join(LABEL_COLUMNS)}) and an "
                             f"audio_id or filename column; columns: {', '.join(header)}")
    by_id, by_file = {}, {}
    for row in rows:
        label = (row.get(label_col) or "").strip()
        if not label:
            continue
        if row.get("audio_id"):
            by_id[row["audio_id"].strip()] = label
        if row.get("filename"):
            by_file[str((path.parent / row["filename"].strip()).resolve())] = label
    return by_id, by_file


def truth_labels(clips: pa.Table, truth_csv: str | None) -> list[str | None]:
    """Ground truth per clip: the truth CSV where it names the clip, else audio.labels[0]."""
    ids, uris = clips.column("audio_id").to_pylist(), clips.column("uri").to_pylist()
    labels = [ls[0] if ls else None for ls in clips.column("labels").to_pylist()]
    if not truth_csv:
        return labels
    by_id, by_file = read_truth(truth_csv)
    out = []
    for a, u, lab in zip(ids, uris, labels):
        t = by_id.get(a)
        if t is None and u and "://" not in u:
            t = by_file.get(str(Path(u).resolve()))
        out.append(t if t is not None else lab)
    return out


def _accuracy_by(keys: list, correct: np.ndarray) -> dict:
    out = {}
    for k in sorted({k for k in keys}, key=lambda v: (v is None, str(v))):
        mask = np.array([x == k for x in keys])
        out[str(k) if k is not None else "unknown"] = {"n": int(mask.sum()), "correct": int(correct[mask].sum()),
                                                       "accuracy": float(correct[mask].mean())}
    return out


def classification_report(pred: np.ndarray, truth: np.ndarray, classes: list[str], cities: list) -> dict:
    """The confusion report of class indices plus accuracy per city."""
    return {**confusion_report(truth, pred, classes), "per_city": _accuracy_by(cities, np.asarray(pred) == truth)}


def pseudo_accuracy(store_uri: str, set_ref: str, truth_csv: str | None) -> dict:
    """Fraction of a set's labels that agree with ground truth, over the rows that have one."""
    table, resolved = read_set(store_uri, set_ref)
    ids = table.column("audio_id").to_pylist()
    labels = table.column("label").to_pylist()
    truth = truth_labels(audio_rows(store_uri, ids), truth_csv) if ids else []
    pairs = [(p, t) for p, t in zip(labels, truth) if t is not None and p is not None]
    per_class: dict[str, dict] = {}
    for p, t in pairs:
        c = per_class.setdefault(p, {"n": 0, "correct": 0})
        c["n"] += 1
        c["correct"] += int(p == t)
    for c in per_class.values():
        c["precision"] = c["correct"] / c["n"]
    right = sum(p == t for p, t in pairs)
    return {"set": resolved.ref, "rows": table.num_rows, "with_truth": len(pairs), "correct": int(right),
            "accuracy": right / len(pairs) if pairs else None, "per_label": dict(sorted(per_class.items()))}


@dataclass
class LabelledClips:
    """Clips selected for a classifier evaluation: those with ground truth among the classes."""

    clips: pa.Table  # CLIP_COLUMNS rows
    truth: np.ndarray  # class index per clip
    selected: int  # clips the selection matched, with or without usable truth


def labelled_clips(store_uri: str, where: str | None, classes: list[str], truth_csv: str | None = None) -> LabelledClips:
    """The clips `where` selects (SQL over `audio`) whose ground truth is one of `classes`."""
    cond, what = audio_filter(where)
    ids = query(store_uri, f"select audio_id from audio {cond} order by audio_id", what=what).column(0).to_pylist()
    if not ids:
        raise ParameterError(f"no audio rows match {where!r}" if where else "the audio table is empty")
    clips = audio_rows(store_uri, ids)
    truth = truth_labels(clips, truth_csv)
    index = {c: i for i, c in enumerate(classes)}
    keep = [i for i, t in enumerate(truth) if t in index]
    if not keep:
        raise ParameterError(f"none of the {len(ids)} selected clips has a ground-truth label among the classes "
                             "(unlabelled clips need --truth CSV)")
    return LabelledClips(clips.take(keep), np.array([index[truth[i]] for i in keep], np.int64), len(ids))


def score_classifier(model: SceneClassifier, data: LabelledClips, batch_size: int = 32) -> dict:
    """Classify `data`'s clips with `model` and report against their truth (undecodable clips skipped)."""
    probs, ok = predict_table(model, data.clips, batch_size)
    cities = [c for c, good in zip(data.clips.column("city").to_pylist(), ok) if good]
    report = classification_report(probs[ok].argmax(1), data.truth[ok], model.classes, cities)
    report.update({"task": "classifier", "excluded_no_truth": data.selected - data.clips.num_rows,
                   "skipped": int((~ok).sum())})
    return report


def classifier_hook(store_uri: str, model: SceneClassifier, where: str | None):
    """A function step -> summary of `model`'s accuracy on the clips `where` selects (truth =
    audio.labels[0]); selects the clips once, now, so a bad option fails before training."""
    data = labelled_clips(store_uri, where, model.classes)

    def run(step: int) -> dict:
        res = score_classifier(model, data)
        return {"task": "classifier", "where": where, "n": res["n"], "accuracy": res["accuracy"],
                "mean_class_accuracy": res["mean_class_accuracy"]}

    return run


def evaluate_classifier(ckpt: str, store_uri: str, where: str | None, truth_csv: str | None = None,
                        batch_size: int = 32, device: str = "cpu") -> dict:
    """Classify the clips `where` selects (SQL over `audio`) and score against ground truth."""
    model = load_classifier(ckpt, device)
    report = score_classifier(model, labelled_clips(store_uri, where, model.classes, truth_csv), batch_size)
    report.update({"classifier": str(ckpt), "audio_where": where, "truth": truth_csv})
    return report
