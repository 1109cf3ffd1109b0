"""What a review page shows: the rows of one match run or one set version, their order, and a summary.

Kept apart from the page writer (`curator.review.page`) so the numbers can be tested without HTML, and
so a 100k-pair run is handled as Arrow/numpy columns, never as a list of Python dicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.store.sql import query
from curator.store.store import Store
from schemas.errors import ParameterError, RefError, StoreError
from schemas.sets import read_set

# Columns every source is brought to, so the page writer has one shape to deal with.
ROW_COLUMNS = ("text_id", "audio_id", "text", "score", "label", "clip_labels", "uri")
HIST_BINS = 20


@dataclass
class ReviewData:
    """Rows to review plus where they came from; `key` scopes decisions saved in the browser."""

    kind: str  # run | set
    key: str
    title: str
    rows: pa.Table  # ROW_COLUMNS
    meta: dict = field(default_factory=dict)
    score_name: str = "score"
    threshold: float | None = None


_RUN_SQL = """
select c.text_id, c.audio_id, t.text, c.score, t.label, a.labels as clip_labels, a.uri
from candidates c
left join texts t on t.text_id = c.text_id
left join audio a on a.audio_id = c.audio_id
where c.run_id = ?
"""


def load_run(store: Store, run_id: str) -> ReviewData:
    """Candidate pairs of one match run joined with their caption and clip."""
    for name in ("runs", "candidates"):
        if not store.has(name):
            raise StoreError(f"store {store.uri} has no {name!r} table; run `curator match` first")
    runs = query(store, "select * from runs where run_id = ?", params=[run_id]).to_pylist()
    if not runs:
        known = query(store, "select run_id from runs order by created_at desc nulls last limit 10")
        names = ", ".join(known.column("run_id").to_pylist()) or "none"
        raise RefError(f"run {run_id!r} does not exist; recent runs: {names}")
    run = runs[-1]
    for name in ("texts", "audio"):
        if not store.has(name):
            raise StoreError(f"store {store.uri} has no {name!r} table; ingest before reviewing a run")
    rows = query(store, _RUN_SQL, params=[run_id])
    meta = {
        "run_id": run_id,
        "method": run.get("method"),
        "model": run.get("model_id"),
        "threshold": run.get("threshold"),
        "top_k": run.get("top_k"),
        "per": run.get("per"),
        "params": _json_or_text(run.get("params")),
        "inputs": list(run.get("inputs") or []),
        "recall": run.get("recall"),
        "created_at": str(run["created_at"]) if run.get("created_at") else None,
    }
    return ReviewData("run", f"run:{run_id}", f"run {run_id}", _conform(rows), meta,
                      threshold=run.get("threshold"))


def load_set(store: Store, ref: str) -> ReviewData:
    """Rows of one set version (a bare name means latest; the resolved number is shown)."""
    data, resolved = read_set(store.uri, ref)
    catalog = query(store, "select * from sets where name = ? and version = ?",
                    params=[resolved.name, resolved.version]).to_pylist()
    row = catalog[0] if catalog else {}
    score_name = "score"
    if "score" not in data.column_names or data.column("score").null_count == data.num_rows:
        score_name = "confidence"
    score = data.column(score_name) if score_name in data.column_names else pa.nulls(data.num_rows, pa.float32())
    rows = pa.table({
        "text_id": _col(data, "text_id"),
        "audio_id": data.column("audio_id"),
        "text": _col(data, "text"),
        "score": score,
        "label": _col(data, "label"),
        "clip_labels": pa.nulls(data.num_rows, pa.list_(pa.string())),
        "uri": data.column("uri"),
    })
    rows = _attach_clip_labels(store, rows)
    meta = {
        "set": resolved.ref,
        "strategy": resolved.strategy,
        "params": resolved.params,
        "model": row.get("model_id"),
        "model_sha256": row.get("model_sha256"),
        "inputs": list(resolved.inputs),
        "content_hash": resolved.content_hash,
        "created_at": str(row["created_at"]) if row.get("created_at") else None,
    }
    threshold = resolved.params.get("threshold") if isinstance(resolved.params, dict) else None
    return ReviewData("set", f"set:{resolved.ref}", f"set {resolved.ref}", _conform(rows), meta,
                      score_name=score_name, threshold=_float_or_none(threshold))


def _attach_clip_labels(store: Store, rows: pa.Table) -> pa.Table:
    """Ground-truth labels of each clip from `audio`, when the store still has them."""
    if not store.has("audio") or rows.num_rows == 0:
        return rows
    audio = store.read("audio", columns=["audio_id", "labels"])
    if audio.num_rows == 0:  # a store's `audio` exists (empty) from its creation
        return rows
    index = pc.index_in(rows.column("audio_id"), value_set=audio.column("audio_id"))
    labels = audio.column("labels").take(pc.fill_null(index, 0))
    labels = pc.if_else(pc.is_null(index), pa.nulls(rows.num_rows, labels.type), labels)
    return rows.set_column(rows.schema.get_field_index("clip_labels"), "clip_labels", labels)


def _col(data: pa.Table, name: str) -> pa.ChunkedArray | pa.Array:
    return data.column(name) if name in data.column_names else pa.nulls(data.num_rows, pa.string())


def _conform(rows: pa.Table) -> pa.Table:
    types = {"score": pa.float64(), "clip_labels": pa.list_(pa.string())}
    cols = [rows.column(c).cast(types.get(c, pa.string())) for c in ROW_COLUMNS]
    return pa.table(dict(zip(ROW_COLUMNS, cols)))


def _json_or_text(value):
    if not value:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _float_or_none(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# -- choosing and ordering rows -------------------------------------------------------------------
def sample_rows(rows: pa.Table, n: int | None, seed: int = 0) -> pa.Table:
    """A uniform random sample of `n` rows (all rows when n is None/0 or n >= rows)."""
    if n is not None and n < 0:
        raise ParameterError(f"--sample {n}: must be a positive number of rows (0 = all)")
    if not n or n >= rows.num_rows:
        return rows
    pick = np.sort(np.random.default_rng(seed).choice(rows.num_rows, size=n, replace=False))
    return rows.take(pa.array(pick))


def order_rows(rows: pa.Table, around: float | None = None) -> pa.Table:
    """Best score first; with `around`, nearest to that threshold first (ties: higher score first)."""
    scores = _scores(rows)
    if around is None:
        order = np.lexsort((np.arange(len(scores)), -scores))
    else:
        order = np.lexsort((-scores, np.abs(scores - around)))
    return rows.take(pa.array(order))


def check_around(around: float | None, band: float) -> None:
    if around is not None and not np.isfinite(around):
        raise ParameterError(f"--around {around}: must be a finite score")
    if band <= 0 or not np.isfinite(band):
        raise ParameterError(f"--band {band}: must be a positive width")


def _scores(rows: pa.Table) -> np.ndarray:
    # Rows without a score sort last either way: NaN would break lexsort's ordering contract.
    return np.nan_to_num(rows.column("score").to_numpy(zero_copy_only=False).astype(np.float64), nan=-np.inf)


# -- summary --------------------------------------------------------------------------------------
def summarize(rows: pa.Table, threshold: float | None = None, bins: int = HIST_BINS) -> dict:
    """Counts per score bin and pairs per caption / per clip, over every row of the run or set."""
    n = rows.num_rows
    scores = rows.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    scores = scores[np.isfinite(scores)]
    out: dict = {"pairs": n, "scored": int(scores.size)}
    if scores.size:
        lo, hi = float(scores.min()), float(scores.max())
        if threshold is not None and np.isfinite(threshold):
            lo = min(lo, float(threshold))
        if hi - lo < 1e-9:
            lo, hi = lo - 0.005, hi + 0.005
        counts, edges = np.histogram(scores, bins=bins, range=(lo, hi))
        out["hist"] = {"edges": [round(float(e), 5) for e in edges], "counts": counts.tolist()}
        out["score_min"], out["score_max"] = round(float(scores.min()), 5), round(float(scores.max()), 5)
        out["score_mean"] = round(float(scores.mean()), 5)
    out["per_caption"] = _per_key(rows.column("text_id"), rows.column("text"))
    out["per_clip"] = _per_key(rows.column("audio_id"))
    return out


def _per_key(ids, fallback=None) -> dict:
    """Distinct keys and pairs per key (mean, max); a null id falls back to another column."""
    if fallback is not None:
        ids = pc.coalesce(ids, fallback)
    ids = ids.drop_null() if hasattr(ids, "drop_null") else pc.drop_null(ids)
    if len(ids) == 0:
        return {"distinct": 0, "mean": 0.0, "max": 0}
    counts = pc.value_counts(ids).field("counts").to_numpy()
    return {"distinct": int(counts.size), "mean": round(float(counts.mean()), 3), "max": int(counts.max())}
