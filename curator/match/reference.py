"""The DuckDB reference matcher: a cross join scored with `array_inner_product`.

Slow (every pair is a SQL row), but short enough to check by eye, so tests hold the exact matcher
to it. Scores are computed in double precision from the float32 vectors, the same canonical score
the exact matcher decides on, and ties are broken by position as there.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa

from curator.match.params import check_arrays, check_params
from curator.store.vectors import vector_array

_KEEP = {
    None: "true",
    "text": "rt <= $k",
    "audio": "ra <= $k",
    "both": "rt <= $k and ra <= $k",
}


def _vector_table(vecs: np.ndarray) -> pa.Table:
    return pa.table({"pos": pa.array(np.arange(len(vecs), dtype=np.int64)), "vector": vector_array(vecs)})


def match_sql(text_vecs: np.ndarray, audio_vecs: np.ndarray, threshold: float, top_k: int | None = None,
              per: str = "text", batch_rows: int = 1_000_000
              ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (text_idx, audio_idx, score float32, rank int32) like `match.match_blocks`."""
    t = check_params(threshold, top_k, per)
    check_arrays(text_vecs, audio_vecs)
    if len(text_vecs) == 0 or len(audio_vecs) == 0:
        return
    d = int(text_vecs.shape[1])
    keep = _KEEP[per if top_k else None]
    sql = f"""
        with scored as (
            select t.pos as ti, a.pos as ai,
                   array_inner_product(t.vector::DOUBLE[{d}], a.vector::DOUBLE[{d}]) as score
            from tv t cross join av a
        ), kept as (select * from scored where score >= $t),
        ranked as (
            select *, row_number() over (partition by ti order by score desc, ai) as rt,
                      row_number() over (partition by ai order by score desc, ti) as ra
            from kept
        ), chosen as (select ti, ai, score from ranked where {keep})
        select ti, ai, score::FLOAT as score,
               (row_number() over (partition by ti order by score desc, ai))::INTEGER as rank
        from chosen order by ti, rank
    """
    params = {"t": t} | ({"k": int(top_k)} if top_k else {})
    con = duckdb.connect()
    try:
        con.register("tv", _vector_table(text_vecs))
        con.register("av", _vector_table(audio_vecs))
        reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
        for batch in reader:
            yield (batch.column(0).to_numpy(), batch.column(1).to_numpy(),
                   batch.column(2).to_numpy(), batch.column(3).to_numpy())
    finally:
        con.close()
