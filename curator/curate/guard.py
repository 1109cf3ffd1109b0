"""Contamination guard: wild-pool clips that duplicate evaluation clips must never enter a set.

A pool clip is contaminated when it is the same clip (listed in both pool and evaluation), has
the same content hash (sha1 of the file), or its audio vector is within `threshold` cosine of an
evaluation clip's (re-encodes, trims and re-uploads of the same recording land there). Findings
go to the `contamination` table; every build excludes them unless told otherwise.
"""

from __future__ import annotations

import pyarrow as pa

from curator.store.sql import filter_query
from curator.store.store import Store, now
from curator.store.vectors import open_vectors, read_vectors
from schemas.errors import ParameterError
from schemas.tables import CONTAMINATION
from schemas.validate import check_threshold

DEFAULT_THRESHOLD = 0.98
POOL_BLOCK_BYTES = 512 << 20  # pool vectors held at a time


def _clips(store: Store, where: str, what: str) -> pa.Table:
    if not store.has("audio"):
        raise ParameterError("store has no audio table; ingest audio first")
    rows = filter_query(store, "select audio_id, sha1 from audio", where, what, "order by audio_id")
    if rows.num_rows == 0:
        raise ParameterError(f"{what} {where!r} selects no clips")
    return rows


def find_contamination(store: Store, pool_where: str, eval_where: str, model=None,
                       threshold: float = DEFAULT_THRESHOLD, device: str = "auto") -> pa.Table:
    """Rows (CONTAMINATION schema) for every (pool clip, eval clip) duplicate pair."""
    threshold = check_threshold(threshold)
    pool = _clips(store, pool_where, "--pool-where")
    evals = _clips(store, eval_where, "--eval-where")
    found: dict[tuple[str, str], dict] = {}
    pool_ids, eval_ids = pool.column("audio_id").to_pylist(), evals.column("audio_id").to_pylist()
    eval_set = set(eval_ids)
    for a in pool_ids:
        if a in eval_set:
            found[(a, a)] = {"reason": "same_clip", "similarity": 1.0}
    by_sha: dict[str, list[str]] = {}
    for e, sha in zip(eval_ids, evals.column("sha1").to_pylist()):
        if sha:
            by_sha.setdefault(sha, []).append(e)
    for a, sha in zip(pool_ids, pool.column("sha1").to_pylist()):
        for e in by_sha.get(sha or "", []):
            found.setdefault((a, e), {"reason": "sha1", "similarity": None})
    model_id = getattr(model, "model_id", None)
    if model is not None:
        for a, e, s in _similar(store, model_id, pool_ids, eval_ids, threshold, device):
            if a != e:
                found.setdefault((a, e), {"reason": "similarity", "similarity": s})
    at = now()
    rows = [{"audio_id": a, "eval_audio_id": e, "reason": v["reason"], "similarity": v["similarity"],
             "model_id": model_id if v["reason"] == "similarity" else None, "at": at}
            for (a, e), v in sorted(found.items())]
    return pa.Table.from_pylist(rows, schema=CONTAMINATION)


def _similar(store: Store, model_id: str, pool_ids: list[str], eval_ids: list[str], threshold: float,
             device: str):
    """(pool id, eval id, cosine) with cosine >= threshold, through the exact matcher. The evaluation
    clips stay in memory and the pool is streamed from the store in blocks, so a 2 M-clip pool
    costs one block of memory, not its 8 GB of vectors. The pairs are symmetric in the two sides
    (threshold only, canonical scores), so pool-as-columns finds what pool-as-rows would."""
    # The matcher needs torch; a sha1-only guard (and every build importing this module) must not load it.
    from curator.match.stream import match_stream

    pool = open_vectors(store, model_id, "audio", ids=pool_ids)
    evals = read_vectors(store, model_id, "audio", ids=eval_ids)
    if len(pool) == 0 or len(evals) == 0:
        return []
    p_ids, e_ids = pool.ids.to_pylist(), evals.ids.to_pylist()
    found = []
    for ei, pi, score, _ in match_stream(evals.vecs, pool, threshold, device=device, max_memory=POOL_BLOCK_BYTES):
        found += [(p_ids[i], e_ids[j], float(s)) for i, j, s in zip(pi.tolist(), ei.tolist(), score.tolist())]
    return sorted(found)


def record_contamination(store: Store, rows: pa.Table) -> int:
    """Add findings to `contamination`; a finding already recorded is not duplicated."""
    return store.upsert("contamination", rows)


def contaminated_ids(store: Store) -> set[str]:
    if not store.has("contamination"):
        return set()
    return set(store.read("contamination", columns=["audio_id"]).column("audio_id").to_pylist())
