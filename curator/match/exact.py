"""Exact thresholded cross-modal matching: every caption against every clip, in bounded memory.

`score(t, a) = t . a` over unit vectors; keep `score >= threshold`, optionally at most `top_k` per
caption (`per="text"`), per clip (`per="audio"`) or both (`per="both"`: the pair is in the caption's
top-k AND in the clip's top-k). Ties are broken by position (earlier clip / caption first), the
same rule the DuckDB reference uses.

Work is done caption block by caption block against streamed clip blocks. Memory: one score block
(`block`), the per-caption top-k state of one caption block, and the pairs of one caption block
(caption blocks shrink when their output passes `max_pairs`). `per="audio"|"both"` first runs one
extra pass to find each clip's k-th best caption (n_audio floats of state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from curator.match.engine import Engine, blas_threads, lexrank, swapped
from curator.match.params import check_arrays, check_params

TIE_EPS = 1e-12  # canonical float64 scores closer than this are ties, broken by position
TIE_BAND = 1e-6  # block scores this close may be ordered differently by the canonical score
MAX_PAIRS = 20_000_000  # pairs of one caption block held before ranks are known (~320 MB)

Progress = Callable[[int, int], None] | None


@dataclass
class ColumnRule:
    """Each column's k-th best row (score, row); a pair is in the column's top-k iff it sorts first."""

    kth_score: np.ndarray  # float64, -inf where the column has fewer than k rows above threshold
    kth_row: np.ndarray  # int64

    def admits(self, score: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        ks, kr = self.kth_score[cols], self.kth_row[cols]
        return (score > ks + TIE_EPS) | ((np.abs(score - ks) <= TIE_EPS) & (rows <= kr))


def threshold_block(eng: Engine, r0: int, r1: int, t: float, rule: ColumnRule | None):
    """All pairs >= t of rows r0:r1 (and admitted by `rule`): global rows, cols and their canonical
    scores (as float32). The block score only decides; what is kept is the canonical score, so a
    stored score (and a set's content hash) does not depend on the BLAS, the block or the device."""
    rows, cols, scores = [], [], []
    cb = eng.block[1]
    for c0 in range(0, eng.n_cols, cb):
        r, c, s = eng.candidates(eng.scores(r0, r1, c0, min(c0 + cb, eng.n_cols)), t)
        if len(r) == 0:
            continue
        r += r0
        c += c0
        bound = np.maximum(t, rule.kth_score[c]) if rule is not None else t
        sure = s >= bound + eng.margin
        band = ~sure & (s >= bound - eng.margin - (2.0 ** -8 if eng.low else 0.0))
        out = s.copy()
        if sure.any():
            out[sure] = eng.canonical(r[sure], c[sure])
        keep = sure.copy()
        if band.any():
            can = eng.canonical(r[band], c[band])
            ok = can >= t
            if rule is not None:
                ok &= rule.admits(can, r[band], c[band])
            keep[band] = ok
            out[band] = can
        rows.append(r[keep])
        cols.append(c[keep])
        scores.append(out[keep])
    return _cat(rows, np.int64), _cat(cols, np.int64), _cat(scores, np.float32)


def _cat(parts, dtype):
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


def settle_ties(eng: Engine, r: np.ndarray, c: np.ndarray, s: np.ndarray):
    """Sort by (row, score desc, col), re-scoring canonically the pairs whose block scores nearly
    tie within a caption, so ranks follow the canonical order (duplicate clips rank by position,
    as in the reference). Returns sorted (r, c, s, 0-based rank)."""
    order, rank = lexrank(r, c, s)
    r, c, s = r[order], c[order], s[order]
    near = np.flatnonzero((r[1:] == r[:-1]) & (np.abs(s[1:] - s[:-1]) <= TIE_BAND))
    if len(near) == 0:
        return r, c, s, rank
    idx = np.unique(np.r_[near, near + 1])
    s = s.copy()
    s[idx] = eng.canonical(r[idx], c[idx])
    # Re-sort only inside each run of near-tied neighbours (the rescore moves a score by far less
    # than the gap to the pairs around the run).
    run = np.cumsum(np.r_[True, (np.diff(idx) != 1) | (r[idx[1:]] != r[idx[:-1]])])
    perm = idx[np.lexsort((c[idx], -s[idx], run))]
    c[idx], s[idx] = c[perm], s[perm]
    return r, c, s, rank


def topk_select(r, c, s, k):
    """Keep each row's k best (score desc, col asc); return them sorted with their 0-based ranks."""
    order, rank = lexrank(r, c, s)
    keep = rank < k
    sel = order[keep]
    return r[sel], c[sel], s[sel], rank[keep]


def topk_block(eng: Engine, r0: int, r1: int, t: float, k: int):
    """Each row's top-k pairs >= t among all columns, with canonical float64 scores.

    Candidates are held with their block scores and pruned on those (keeping everything within
    2 * margin + slack of a row's k-th block score, so no canonical winner can be dropped); only
    the survivors are re-scored canonically and ranked at the end.
    """
    nb = r1 - r0
    tol = 2 * eng.margin + (2.0 ** -8 if eng.low else 0.0)
    kth = np.full(nb, -np.inf)  # k-th best block score per row, once a row has k candidates
    acc: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0
    prune_at = max(2 * nb * k, 1 << 16)
    cb = eng.block[1]
    for c0 in range(0, eng.n_cols, cb):
        bound = np.maximum(t, kth - tol) if np.isfinite(kth).any() else t
        r, c, s = eng.candidates(eng.scores(r0, r1, c0, min(c0 + cb, eng.n_cols)), bound)
        if len(r) == 0:
            continue
        acc.append((r.astype(np.int64), c + c0, s))
        held += len(r)
        if held > prune_at:
            acc, held = _prune(acc, k, kth, tol)
            prune_at = max(prune_at, 2 * held)
    acc, _ = _prune(acc, k, kth, tol)
    r, c, s = acc[0]
    can = eng.canonical(r + r0, c)
    ok = can >= t
    r, c, s, _ = topk_select(r[ok], c[ok], can[ok], k)
    return r + r0, c, s


def _prune(acc, k, kth, tol):
    """Drop held candidates more than `tol` below their row's k-th block score; raise kth in place."""
    r, c, s = (np.concatenate([a[i] for a in acc]) for i in range(3)) if acc else (
        np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    order, rank = lexrank(r, c, s)
    r, c, s = r[order], c[order], s[order]
    full = rank == k - 1
    kth[r[full]] = s[full]
    keep = (rank < k) | (s >= kth[r] - tol)
    return [(r[keep], c[keep], s[keep])], int(keep.sum())


def column_rule(eng: Engine, t: float, k: int, block_rows: int | None = None, progress: Progress = None) -> ColumnRule:
    """For every column of `eng`, its k-th best row (the extra pass behind per=audio|both)."""
    sw = swapped(eng)
    kth_score = np.full(sw.n_rows, -np.inf)
    kth_row = np.full(sw.n_rows, np.iinfo(np.int64).max, dtype=np.int64)
    step = block_rows or sw.block[0]
    for r0 in range(0, sw.n_rows, step):
        r1 = min(r0 + step, sw.n_rows)
        r, c, s = topk_block(sw, r0, r1, t, k)
        if len(r):
            _, rank = lexrank(r, c, s)  # already sorted by (row, score desc, col)
            last = rank == k - 1
            kth_score[r[last]] = s[last]
            kth_row[r[last]] = c[last]
        if progress:
            progress(r1, sw.n_rows)
    return ColumnRule(kth_score, kth_row)


def match_blocks(text_vecs: np.ndarray, audio_vecs: np.ndarray, threshold: float, top_k: int | None = None,
                 per: str = "text", device: str = "auto", block=None, precision: str = "auto",
                 max_pairs: int = MAX_PAIRS, progress: Progress = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (text_idx, audio_idx, score float32, rank int32 from 1) per block of complete captions,
    sorted by caption then rank. Indices are positions in the two input arrays."""
    t = check_params(threshold, top_k, per)
    check_arrays(text_vecs, audio_vecs)
    if len(text_vecs) == 0 or len(audio_vecs) == 0:
        return
    with blas_threads():
        eng = Engine(text_vecs, audio_vecs, device=device, precision=precision, block=block)
        prev_flag = bf16_reductions_off(eng)
        try:
            rule = column_rule(eng, t, top_k) if top_k and per in ("audio", "both") else None
            yield from _caption_blocks(eng, t, top_k if per in ("text", "both") else None, rule, max_pairs, progress)
        finally:
            restore_bf16(prev_flag)


def _caption_blocks(eng, t, k, rule, max_pairs, progress):
    step, r0 = eng.block[0], 0
    while r0 < eng.n_rows:
        r1 = min(r0 + step, eng.n_rows)
        if k is None:
            r, c, s, rank = settle_ties(eng, *threshold_block(eng, r0, r1, t, rule))
        else:
            r, c, s, rank = ranked_topk(*topk_block(eng, r0, r1, t, k), rule)
        yield r, c, s.astype(np.float32), (rank + 1).astype(np.int32)
        if k is None and len(r) > max_pairs:  # dense output: smaller caption blocks keep memory flat
            step = max(16, int(step * max_pairs / len(r)))
        r0 = r1
        if progress:
            progress(r1, eng.n_rows)


def ranked_topk(r: np.ndarray, c: np.ndarray, s: np.ndarray, rule: ColumnRule | None):
    """The top-k pairs of complete captions, minus those `rule` (per-clip top-k) refuses, sorted by
    (caption, score desc, clip) with their 0-based ranks."""
    if rule is not None:
        ok = rule.admits(s, r, c)
        r, c, s = r[ok], c[ok], s[ok]
    order, rank = lexrank(r, c, s)
    return r[order], c[order], s[order], rank


def bf16_reductions_off(eng: Engine):
    # cuBLAS may otherwise reduce bf16 products in bf16, which would void the rescore margin.
    if eng.low and eng.device.type == "cuda":
        prev = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        return prev
    return None


def restore_bf16(prev) -> None:
    if prev is not None:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = prev


def collect(chunks) -> tuple[np.ndarray, ...]:
    """Concatenate the chunks of `match_blocks` (or `match_sql`) into whole arrays."""
    parts = list(chunks)
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int32)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))
