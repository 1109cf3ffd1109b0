"""Options of the scene workflow inside `trainer fit` / `trainer eval` (hybrid classifier training,
classifier evaluation). Their meaning and validation live in trainer.train.config; this module only
declares them, so `trainer/cli/__init__.py` gains one decorator per command."""

from __future__ import annotations

import click

# trainer.data.context is plain Python (no torch): safe to import for `--help`.
from trainer.data.context import DEFAULT_CONTEXT_TEMPLATE


def _apply(options: list, f):
    for opt in reversed(options):
        f = opt(f)
    return f


def hybrid_options(f):
    """`trainer fit` options of --loss hybrid (scene classifier)."""
    return _apply([
        click.option("--classes", help="--loss hybrid: classes = a label set's prompt labels, or a file with one "
                                       "label per line."),
        click.option("--lambda", "lam", type=float, default=0.1, show_default=True,
                     help="--loss hybrid: weight of the context-text contrastive term (0 = audio-only classifier)."),
        click.option("--fuse-metadata", is_flag=True,
                     help="--loss hybrid: concatenate a city embedding and an MLP of time features to the audio vector."),
        click.option("--context-template", default=DEFAULT_CONTEXT_TEMPLATE, show_default=True,
                     help="--loss hybrid: caption per clip; fields {label} {city} {part_of_day} {hour} {weekday}."),
        click.option("--mixup", is_flag=True, help="--loss hybrid: mixup of waves and class targets."),
        click.option("--mixup-alpha", type=float, default=1.0, show_default=True, help="Mixup Beta(α, α)."),
        click.option("--spec-augment", is_flag=True, help="SpecAugment time/frequency masks (compact student)."),
        click.option("--head-hidden", type=int, default=256, show_default=True, help="Classifier hidden width."),
        click.option("--balance-classes", is_flag=True,
                     help="--loss hybrid: oversample rows so every class is about as frequent as the largest."),
    ], f)


def classifier_eval_options(f):
    """`trainer eval` options of a classifier checkpoint."""
    return _apply([
        click.option("--classifier", metavar="CKPT", help="Evaluate a classifier checkpoint (trainer fit --loss "
                                                          "hybrid) instead of zero-shot."),
        click.option("--truth", metavar="CSV", help="With --classifier: ground truth (filename or audio_id, label "
                                                    "or scene_label) for clips whose labels the store lacks."),
        click.option("--pseudo-set", metavar="REF", help="With --classifier: also report the fraction of this "
                                                         "set's labels that match ground truth."),
    ], f)
