"""LAION-CLAP's ranking metrics of a zero-shot classification (the confusion matrix, accuracy and
mean class accuracy are `trainer.eval.confusion`'s)."""

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
