"""Figures of evaluation results (matplotlib on the Agg backend: no display needed)."""

from __future__ import annotations

import numpy as np

TITLES = {"zero-shot": "zero-shot accuracy", "classifier": "classifier accuracy"}


def plot_confusion(result: dict, path: str) -> str:
    """The confusion matrix of a report (`labels`, `confusion`, `accuracy`, `task`) as a PNG."""
    # matplotlib only here: importing it costs start-up time every other command would pay.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, cm = result["labels"], np.asarray(result["confusion"])
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc, title = result.get("accuracy"), TITLES.get(result.get("task"), "accuracy")
    ax.set_title(f"{title} {acc:.3f}" if acc is not None else title)
    if len(labels) <= 20:
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
