"""Exact matching against a pool larger than memory: clip blocks are read from the store as they
are scored, so the pool is bounded by disk, not RAM (DESIGN.md section 4, "streaming").

The captions stay in memory; the pool (`curator.store.vectors.VectorBlocks`) is read in blocks of
whole score-block columns, and each block is scored with the same engine, block shapes and
canonical re-check as `curator.match.exact.match_blocks`, so the pairs, scores and ranks are those
of the in-memory run:

- threshold: a pair's decision only depends on its own canonical score; ranks are settled once a
  caption group has seen every block (near-ties re-scored canonically, clip vectors fetched back
  from the store by position);
- top-k per caption: each block's top-k by canonical score merged into a running top-k (the top-k
  of a union is the top-k of the parts' top-ks under the same total order: score desc, clip asc);
- per clip (`per=audio|both`): every clip's k-th best caption needs only that clip's row of scores,
  so the column rule is built block by block in a first pass.

Memory: the captions, one clip block (`max_memory` bytes), the ids, and the pairs of one caption
group. A group starts as every caption (one pass over the pool) and shrinks after its first block
when its projected pairs pass `max_pairs` (more passes, flat memory).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from curator.match.engine import Engine, blas_threads, pairwise, with_cols
from curator.match.exact import (
    MAX_PAIRS,
    ColumnRule,
    Progress,
    bf16_reductions_off,
    column_rule,
    ranked_topk,
    restore_bf16,
    settle_ties,
    threshold_block,
    topk_block,
    topk_select,
)
from curator.match.params import check_params, default_max_memory
from curator.store.vectors import VectorBlocks
from schemas.errors import MixedModelsError, ParameterError

FETCH_ROWS = 32_768  # most clip vectors fetched back at once for canonical re-scoring (128 MB at 1024-d)


def block_rows(max_memory: int, dim: int, col_block: int, low: bool = False) -> int:
    """Clip rows per streamed block: what `max_memory` holds (fp32, plus a bf16 copy in low
    precision), a whole number of score-block columns so block scores are those of the in-memory run."""
    per_row = dim * (6 if low else 4)
    rows = int(max_memory // max(per_row, 1)) // col_block * col_block
    return max(col_block, rows)


class _Canonical:
    """Canonical (float64) scores of (caption, clip) pairs, clip vectors fetched back from the store."""

    def __init__(self, rows: torch.Tensor, pool: VectorBlocks, fetch_rows: int = FETCH_ROWS):
        self.rows, self.pool, self.fetch = rows, pool, max(1, fetch_rows)

    def canonical(self, ri: np.ndarray, ci: np.ndarray) -> np.ndarray:
        """Scores of pairs (ri, ci), fetching their clips `fetch` at a time: the 924 k pairs of a
        2 M-clip run touch ~1 GB of distinct clip vectors, which must not be held at once."""
        out = np.empty(len(ri), np.float64)
        if len(ri) == 0:
            return out
        uniq, inv = np.unique(ci, return_inverse=True)
        by_clip = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[by_clip], np.arange(0, len(uniq) + self.fetch, self.fetch))
        for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if lo == hi:
                continue
            first = j * self.fetch
            sel = by_clip[lo:hi]
            cols = torch.from_numpy(self.pool.take(uniq[first:first + self.fetch])).to(self.rows.device)
            out[sel] = pairwise(self.rows, cols, ri[sel], (inv[sel] - first).astype(np.int64))
        return out


def _check(text_vecs: np.ndarray, pool: VectorBlocks) -> None:
    if text_vecs.ndim != 2:
        raise ParameterError(f"caption vectors must be 2-d, got shape {text_vecs.shape}")
    if len(text_vecs) and text_vecs.shape[1] != pool.dim:
        raise MixedModelsError(f"caption vectors are {text_vecs.shape[1]}-d but {pool.table} holds {pool.dim}-d vectors")


def _stream_rule(base: Engine, pool: VectorBlocks, rows: int, t: float, k: int) -> ColumnRule:
    """Every clip's k-th best caption (score, caption), one clip block at a time."""
    kth_score = np.full(len(pool), -np.inf)
    kth_row = np.full(len(pool), np.iinfo(np.int64).max, dtype=np.int64)
    for start, vecs in pool.blocks(rows):
        part = column_rule(with_cols(base, vecs), t, k)
        kth_score[start:start + len(vecs)] = part.kth_score
        kth_row[start:start + len(vecs)] = part.kth_row
    return ColumnRule(kth_score, kth_row)


def _block_pairs(eng: Engine, g0: int, g1: int, t: float, k: int | None, rule: ColumnRule | None):
    """Pairs of captions g0:g1 against one clip block (block-local clip indices)."""
    parts = []
    for r0 in range(g0, g1, eng.block[0]):
        r1 = min(r0 + eng.block[0], g1)
        parts.append(threshold_block(eng, r0, r1, t, rule) if k is None else topk_block(eng, r0, r1, t, k))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _cat(acc):
    return tuple(np.concatenate([a[i] for a in acc]) for i in range(3))


def match_stream(text_vecs: np.ndarray, pool: VectorBlocks, threshold: float, top_k: int | None = None,
                 per: str = "text", device: str = "auto", block=None, precision: str = "auto",
                 max_memory: int | None = None, max_pairs: int = MAX_PAIRS, progress: Progress = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """`match_blocks` with the clip side read from the store block by block.

    Yields (text_idx, audio_idx, score float32, rank int32 from 1) per caption group, sorted by
    caption then rank; indices are positions in `text_vecs` and in `pool`.
    """
    t = check_params(threshold, top_k, per)
    _check(text_vecs, pool)
    if len(text_vecs) == 0 or len(pool) == 0:
        return
    with blas_threads():
        base = Engine(text_vecs, np.empty((0, pool.dim), np.float32), device=device, precision=precision,
                      block=block)
        rows = block_rows(max_memory or default_max_memory(), pool.dim, base.block[1], base.low)
        prev_flag = bf16_reductions_off(base)
        try:
            rule = _stream_rule(base, pool, rows, t, top_k) if top_k and per in ("audio", "both") else None
            k = top_k if per in ("text", "both") else None
            yield from _groups(base, pool, rows, t, k, rule, max_pairs, progress)
        finally:
            restore_bf16(prev_flag)


def _groups(base, pool, rows, t, k, rule, max_pairs, progress):
    n, g0, size = base.n_rows, 0, base.n_rows
    n_blocks = -(-len(pool) // rows)
    canon = _Canonical(base.rows, pool, min(FETCH_ROWS, rows))  # within the block's memory
    while g0 < n:
        g1 = min(g0 + size, n)
        acc, held = [], 0
        for i, (start, vecs) in enumerate(pool.blocks(rows)):
            sub = None if rule is None else ColumnRule(rule.kth_score[start:start + len(vecs)],
                                                       rule.kth_row[start:start + len(vecs)])
            r, c, s = _block_pairs(with_cols(base, vecs), g0, g1, t, k, sub)
            acc.append((r, c + start, s))
            held += len(r)
            if k is not None and len(acc) > 1:
                acc = [topk_select(*_cat(acc), k)[:3]]
            elif i == 0 and held * n_blocks > max_pairs and g1 - g0 > base.block[0]:
                # Dense output: fewer captions per pass keep the held pairs near max_pairs.
                size = max(base.block[0], int((g1 - g0) * max_pairs / (held * n_blocks)) // base.block[0]
                           * base.block[0])
                g1 = g0 + size
                keep = acc[0][0] < g1
                acc = [tuple(x[keep] for x in acc[0])]
            if progress:
                progress(g0 + (g1 - g0) * (i + 1) // n_blocks, n)
        yield _finish(canon, _cat(acc), k, rule)
        g0 = g1


def _finish(canon: _Canonical, pairs, k, rule):
    r, c, s = pairs
    r, c, s, rank = settle_ties(canon, r, c, s) if k is None else ranked_topk(r, c, s, rule)
    return r, c, s.astype(np.float32), (rank + 1).astype(np.int32)
