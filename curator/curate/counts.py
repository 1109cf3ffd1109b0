"""Per-class counts of a set version (its `label` column), for `curator sets show`."""

from __future__ import annotations

from collections import Counter

from curator.store.store import Store
from schemas.sets import read_set


def label_counts(store: Store, ref: str) -> dict[str, int] | None:
    """{label: rows} of the set version `ref`, largest first (ties by label), with unlabelled rows
    under None; None when no row has a label."""
    table, _ = read_set(store.uri, ref)
    if "label" not in table.column_names:
        return None
    counts = Counter(table.column("label").to_pylist())
    if not any(k is not None for k in counts):
        return None
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))


def format_counts(counts: dict) -> str:
    return ", ".join(f"{'(none)' if k is None else k} {v}" for k, v in counts.items())
