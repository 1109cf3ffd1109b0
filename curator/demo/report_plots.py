"""The demo report's figures: training curves and per-class accuracy (matplotlib, Agg, no display)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(models: list[dict], path: Path) -> Path:
    """Loss per step: the teacher on the left (it trains longer, from scratch), students on the right."""
    plt = _pyplot()
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    for m in models:
        c = m.get("curve") or {}
        if not c.get("step"):
            continue
        ax = ax_t if m["name"] == "teacher" else ax_s
        ax.plot(c["step"], c["loss"], label=m["label"], linestyle="-" if m.get("loss") == "soft" else "--")
    for ax, title in ((ax_t, "teacher (hard CLAP loss)"), (ax_s, "students (dashed: hard loss, solid: SL)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_class(models: list[dict], path: Path) -> Path:
    """Grouped bars: zero-shot accuracy per class, one bar per model."""
    plt = _pyplot()
    classes = sorted({c for m in models for c in m.get("per_class", {})})
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(classes)), 4.2))
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [k + (i - (len(models) - 1) / 2) * width for k in range(len(classes))]
        ax.bar(xs, [m.get("per_class", {}).get(c, 0.0) for c in classes], width, label=m["label"])
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("zero-shot accuracy")
    ax.legend(fontsize=8, ncol=min(7, len(models)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
