"""The one confusion matrix: every classification report (zero-shot, scene classifier, the
evaluation during training) counts with this function, so their numbers always agree."""

from __future__ import annotations

import numpy as np


def confusion_report(truth: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, mean class accuracy, per-class counts and the confusion matrix (rows = true,
    columns = predicted, in `labels` order) of class indices `pred` against `truth`."""
    truth, pred = np.asarray(truth, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    per_class = {}
    for i, lab in enumerate(labels):
        n = int(confusion[i].sum())
        per_class[lab] = {"n": n, "correct": int(confusion[i, i]), "accuracy": confusion[i, i] / n if n else None}
    scored = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    n = int(len(truth))
    return {"labels": list(labels), "n": n, "accuracy": float((truth == pred).mean()) if n else None,
            "mean_class_accuracy": float(np.mean(scored)) if scored else None, "per_class": per_class,
            "confusion": confusion.tolist()}
