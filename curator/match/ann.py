"""Approximate matching through a LanceDB vector index on the clip vectors.

For top-k questions and pools far beyond what a matrix product can sweep: the index returns each
caption's nearest clips (batched queries), those are re-scored exactly (the canonical float64
score of `match_engine`), then thresholded and ranked. A threshold keeps *all* pairs above it, an
index search only the k nearest, so ann needs `top_k` and answers `per="text"` only.

Every run measures its recall against exact matching on a random sample of captions.

Defaults: IVF_FLAT (vectors stored unquantised, so a probed partition is scored exactly; on 10k
clustered 512-d clips it builds in ~2 s where IVF_PQ took ~55 s and needed refine_factor 10 for the
same recall), ~sqrt(n) partitions of at least 256 clips, nprobes 16. Below 1024 clips no index is
built: LanceDB's flat scan is exact and faster than training one.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator.match.engine import canonical_scores, lexrank
from curator.match.exact import collect, match_blocks
from schemas.errors import ParameterError, StoreError

DEFAULTS = {"index_type": "IVF_FLAT", "num_partitions": None, "num_sub_vectors": None,
            "nprobes": 16, "refine_factor": None, "recall_sample": 256, "query_batch": 1024, "seed": 0}
MIN_INDEXED = 1024


def _partitions(n: int, wanted: int | None) -> int:
    return int(wanted or max(1, min(int(math.sqrt(n)), n // 256)))


def index_name(p: dict, n_partitions: int) -> str:
    return f"vector_{p['index_type'].lower()}_p{n_partitions}"


def ensure_index(table, n_rows: int, p: dict) -> dict:
    """Reuse the clip table's index when it covers every row with these settings; else build it."""
    if n_rows < MIN_INDEXED:
        return {"index": None, "built": False, "reason": f"{n_rows} clips < {MIN_INDEXED}: flat scan"}
    parts = _partitions(n_rows, p["num_partitions"])
    name = index_name(p, parts)
    for idx in table.list_indices():
        if idx.name == name:
            stats = table.index_stats(name)
            if stats is not None and stats.num_unindexed_rows == 0:
                return {"index": name, "built": False, "partitions": parts, "table_version": int(table.version)}
    from lancedb.index import IvfFlat, IvfPq

    if p["index_type"] == "IVF_FLAT":
        config = IvfFlat(distance_type="dot", num_partitions=parts)
    elif p["index_type"] == "IVF_PQ":
        config = IvfPq(distance_type="dot", num_partitions=parts, num_sub_vectors=p["num_sub_vectors"])
    else:
        raise ParameterError(f"ann index_type must be IVF_FLAT or IVF_PQ, got {p['index_type']!r}")
    for idx in table.list_indices():  # one vector index per column: drop the stale one
        if "vector" in idx.columns:
            table.drop_index(idx.name)
    t0 = time.perf_counter()
    table.create_index("vector", config=config, name=name, replace=True)
    return {"index": name, "built": True, "partitions": parts, "build_s": round(time.perf_counter() - t0, 3),
            "table_version": int(table.version)}


def _search(table, queries: np.ndarray, k: int, p: dict, where: str | None):
    """(query row, audio_id) of each query's k nearest clips, batch by batch."""
    rows, ids = [], []
    limit = k * max(1, int(p["refine_factor"] or 1)) if p["index_type"] == "IVF_FLAT" else k
    for i in range(0, len(queries), p["query_batch"]):
        q = table.search(queries[i:i + p["query_batch"]]).distance_type("dot").limit(limit)
        q = q.nprobes(int(p["nprobes"])).select(["audio_id", "_distance"])
        if p["refine_factor"] and p["index_type"] != "IVF_FLAT":
            q = q.refine_factor(int(p["refine_factor"]))
        if where:
            q = q.where(where, prefilter=True)
        res = q.to_arrow()
        qi = res.column("query_index").to_numpy() if "query_index" in res.column_names else np.zeros(res.num_rows, np.int64)
        rows.append(qi.astype(np.int64) + i)
        ids.append(res.column("audio_id").combine_chunks())
    return np.concatenate(rows) if rows else np.empty(0, np.int64), pa.concat_arrays(ids) if ids else pa.array([], pa.string())


def _pool_filter(av, table) -> str | None:
    if len(av) == table.count_rows():
        return None
    quoted = ",".join("'" + x.replace("'", "''") + "'" for x in av.ids.to_pylist())
    return f"audio_id IN ({quoted})"


def ann_pairs(table, text_vecs: np.ndarray, av, threshold: float, k: int, p: dict):
    """Refined, thresholded top-k pairs: (text_idx, audio_idx, float64 score), sorted, with ranks."""
    r, found = _search(table, text_vecs, k, p, _pool_filter(av, table))
    pos = pc.index_in(found, value_set=av.ids)
    ok = pos.is_valid().to_numpy(zero_copy_only=False)
    r, c = r[ok], pos.filter(pos.is_valid()).to_numpy().astype(np.int64)
    s = canonical_scores(text_vecs, av.vecs, r, c)
    keep = s >= threshold
    r, c, s = r[keep], c[keep], s[keep]
    order, rank = lexrank(r, c, s)
    sel = order[rank < k]
    r, c, s = r[sel], c[sel], s[sel]
    return r, c, s, (rank[rank < k] + 1).astype(np.int32)


def measure_recall(ann_r: np.ndarray, ann_c: np.ndarray, text_vecs, audio_vecs, threshold, k, sample) -> float:
    """Fraction of exact top-k pairs of the sampled captions that ann also returned."""
    exact_r, exact_c, _, _ = collect(match_blocks(text_vecs[sample], audio_vecs, threshold, k, "text"))
    if len(exact_r) == 0:
        return 1.0
    exact = set(zip(sample[exact_r].tolist(), exact_c.tolist()))
    wanted = np.isin(ann_r, sample)
    got = set(zip(ann_r[wanted].tolist(), ann_c[wanted].tolist()))
    return len(exact & got) / len(exact)


def match_ann(store, info, tv, av, threshold: float, top_k: int | None, per: str, params: dict, progress=None):
    """(iterator of (text_idx, audio_idx, score, rank), measured recall, parameters used)."""
    if not top_k:
        raise ParameterError("--method ann needs --top-k: an index returns each caption's k nearest clips, "
                             "not every pair above the threshold (use --method exact for that)")
    if per != "text":
        raise ParameterError(f"--method ann answers --per text only (got {per!r}); use --method exact")
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown ann parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")
    p = DEFAULTS | params
    if not store.has(av.table):
        raise StoreError(f"table {av.table!r} is missing")
    table = store.table(av.table)
    used = p | ensure_index(table, table.count_rows(), p)
    t0 = time.perf_counter()
    r, c, s, rank = ann_pairs(table, tv.vecs, av, threshold, int(top_k), p)
    used["search_s"] = round(time.perf_counter() - t0, 3)
    rng = np.random.default_rng(int(p["seed"]))
    sample = np.sort(rng.choice(len(tv), size=min(int(p["recall_sample"]), len(tv)), replace=False))
    recall = measure_recall(r, c, tv.vecs, av.vecs, threshold, int(top_k), sample)
    used["recall_sample"] = int(len(sample))
    if progress:
        progress(len(tv), len(tv))
    return iter([(r, c, s.astype(np.float32), rank)]), recall, used
