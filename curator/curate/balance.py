"""Class-balanced curation (DESIGN 6.11): one global τ is a per-class filter in disguise, so a
balanced build assigns every candidate pair to a class and keeps a quota per class.

- Class of a pair: the label whose prompt is nearest the pair's caption, by cosine in the text
  space of the teacher or of `--text-model` (a class with several prompts uses their renormalised
  mean, as pseudo-labels do). The row's `label` becomes that class.
- Quota: `--per-class K` keeps at most K pairs per class; without K every class gets the equal
  quota floor(candidates / classes), so the set keeps at most the unbalanced build's size. A class
  with fewer candidates than its quota keeps them all (counts are printed and recorded).
- Best first: highest teacher score, ties by (audio_id, text_id), so a rebuild keeps the same rows.
- Counts per class (candidates and kept) go into the set's params under `balance`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curator.curate.rows import Lineage, label_classes, vectors
from curator.models.registry import get_model
from curator.store.store import Store
from schemas.errors import ParameterError


@dataclass
class BalanceOptions:
    label_set: str
    per_class: int | None = None
    text_model: str | None = None

    def check(self) -> "BalanceOptions":
        if self.per_class is not None and self.per_class < 1:
            raise ParameterError(f"--per-class {self.per_class}: must be at least 1")
        return self


def quota_keep(classes: np.ndarray, score: np.ndarray, tiebreak: list, n_classes: int,
               per_class: int | None) -> tuple[np.ndarray, int]:
    """(row indices kept, sorted; the quota) keeping the `quota` best rows of each class."""
    quota = per_class if per_class is not None else max(1, len(classes) // max(n_classes, 1))
    score = np.asarray(score, np.float64)
    order = sorted(range(len(classes)), key=lambda i: (int(classes[i]), -score[i], tiebreak[i]))
    kept, taken = [], np.zeros(n_classes, np.int64)
    for i in order:
        c = classes[i]
        if taken[c] < quota:
            taken[c] += 1
            kept.append(i)
    return np.array(sorted(kept), np.int64), quota


def balance_rows(store: Store, lin: Lineage, rows: pa.Table, opts: BalanceOptions, teacher) -> tuple[pa.Table, dict]:
    """Set rows relabelled with their nearest class and cut to a per-class quota; returns the rows
    and what is recorded in params (`label_set`, `per_class`, `quota`, `text_model`, counts)."""
    opts.check()
    model = get_model(store, opts.text_model) if opts.text_model else teacher
    classes, _, _, class_vecs = label_classes(store, lin, opts.label_set, model)
    text_ids = rows.column("text_id").to_pylist()
    unique = sorted(set(text_ids))
    pos, vecs = vectors(store, lin, model, "text", unique, "balance_captions")
    nearest = {unique[p]: int(c) for p, c in zip(pos, (vecs @ class_vecs.T).argmax(axis=1))} if len(pos) else {}
    has = np.array([t in nearest for t in text_ids], bool)
    dropped = int((~has).sum())
    rows = rows.filter(pa.array(has))
    cls = np.array([nearest[t] for t in rows.column("text_id").to_pylist()], np.int64)
    keys = list(zip(rows.column("audio_id").to_pylist(), rows.column("text_id").to_pylist()))
    keep, quota = quota_keep(cls, rows.column("score").to_numpy(), keys, len(classes), opts.per_class)
    candidates = np.bincount(cls, minlength=len(classes))
    kept = np.bincount(cls[keep], minlength=len(classes))
    rows = rows.take(pa.array(keep, pa.int64()))
    labels = pa.array([classes[c] for c in cls[keep]], pa.string())
    rows = rows.set_column(rows.column_names.index("label"), "label", labels)
    info = {"label_set": opts.label_set, "per_class": opts.per_class, "quota": int(quota),
            "text_model": model.model_id, "candidates": {c: int(n) for c, n in zip(classes, candidates)},
            "counts": {c: int(n) for c, n in zip(classes, kept)}}
    if dropped:
        info["dropped_without_text_vector"] = dropped
    return rows, info
