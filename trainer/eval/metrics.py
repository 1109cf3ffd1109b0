"""Classification metrics shared by every zero-shot evaluation: plain functions of arrays."""

from __future__ import annotations

import numpy as np

RANK_KS = (1, 5, 10)


def rank_metrics(scores: np.ndarray, truth: np.ndarray) -> dict:
    """LAION-CLAP's ranking metrics: rank (0 = best) of the true class among all classes."""
    if not len(truth):
        return {**{f"R@{k}": None for k in RANK_KS}, "mAP@10": None, "mean_rank": None, "median_rank": None}
    own = scores[np.arange(len(truth)), truth]
    ranks = (scores > own[:, None]).sum(axis=1)
    return {**{f"R@{k}": float((ranks < k).mean()) for k in RANK_KS},
            "mAP@10": float(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0).mean()),
            "mean_rank": float(ranks.mean() + 1), "median_rank": float(np.floor(np.median(ranks)) + 1)}


def class_metrics(pred: np.ndarray, truth: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, mean class accuracy (over classes with clips), per-class counts and the confusion matrix."""
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    per_class = {}
    for i, lab in enumerate(labels):
        n = int(confusion[i].sum())
        per_class[lab] = {"n": n, "correct": int(confusion[i, i]), "accuracy": confusion[i, i] / n if n else None}
    scored = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {"n": int(len(truth)), "accuracy": float((truth == pred).mean()) if len(truth) else None,
            "mean_class_accuracy": float(np.mean(scored)) if scored else None,
            "per_class": per_class, "confusion": confusion.tolist()}
