"""Threshold sweep: how many pairs (and captions) a match would keep at each threshold.

One blocked pass over the score matrix, whatever the number of thresholds: each block's scores at
or above the lowest threshold are bucketed against the sorted thresholds, and each caption's best
score is carried along (captions with a match at t = captions whose best score >= t). Counts use
fp32 block scores, so a pair within ~1e-5 of a threshold may be counted on the other side of it
(`curator match` decides those exactly).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from curator.match.engine import Engine, blas_threads, with_cols
from curator.match.params import check_arrays
from schemas.errors import ParameterError
from schemas.validate import check_threshold


def parse_thresholds(spec: str) -> list[float]:
    """`0.3:0.9:0.05` (start:stop:step, stop included) or `0.5,0.6,0.7`."""
    spec = spec.strip()
    try:
        if ":" in spec:
            start, stop, step = (float(x) for x in spec.split(":"))
            if step <= 0:
                raise ParameterError(f"--thresholds {spec!r}: step must be positive")
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + i * step, 10) for i in range(max(n, 0))]
        else:
            values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ParameterError(f"--thresholds {spec!r}: expected START:STOP:STEP or a comma list of numbers") from None
    if not values:
        raise ParameterError(f"--thresholds {spec!r}: no thresholds")
    return sorted({check_threshold(v) for v in values})


def _score_pass(eng: Engine, ts: np.ndarray, best: np.ndarray, counts: np.ndarray, progress) -> None:
    """Fill `best` (each caption's best score) and `counts` (scores per threshold bucket) in place."""
    edges = torch.tensor(ts, dtype=torch.float32, device=eng.device)
    lo = float(ts[0])
    for r0 in range(0, eng.n_rows, eng.block[0]):
        r1 = min(r0 + eng.block[0], eng.n_rows)
        row_best = torch.full((r1 - r0,), -float("inf"), device=eng.device)
        for c0 in range(0, eng.n_cols, eng.block[1]):
            s = eng.scores(r0, r1, c0, min(c0 + eng.block[1], eng.n_cols))
            torch.maximum(row_best, s.amax(1), out=row_best)
            vals = s.masked_select(s >= lo)
            if vals.numel():
                idx = torch.bucketize(vals, edges, right=True)
                counts += torch.bincount(idx, minlength=len(ts) + 1).cpu().numpy()
        best[r0:r1] = row_best.cpu().numpy()
        if progress:
            progress(r1, eng.n_rows)


def sweep(text_vecs: np.ndarray, audio_vecs, thresholds, bins: int = 50, device: str = "auto",
          block=None, progress=None, max_memory: int | None = None) -> dict:
    """Pair counts per threshold, captions with >= 1 match, and each caption's best score.

    `audio_vecs` is an (n, d) array, or `VectorBlocks` left in the store and scored one block of
    at most `max_memory` bytes at a time (the counts are the same: each block adds its own).

    Returns {"table": pa.Table(threshold, pairs, captions_matched, pair_fraction, caption_fraction),
    "best": float32 (n_text,), "hist_counts", "hist_edges"}.
    """
    streamed = not isinstance(audio_vecs, np.ndarray)
    if not streamed:
        check_arrays(text_vecs, audio_vecs)
    ts = np.array(sorted(check_threshold(t) for t in thresholds), dtype=np.float64)
    if len(ts) == 0:
        raise ParameterError("sweep needs at least one threshold")
    n_t, n_a = len(text_vecs), len(audio_vecs)
    best = np.full(n_t, -np.inf, dtype=np.float32)
    counts = np.zeros(len(ts) + 1, dtype=np.int64)  # counts[i]: scores in [ts[i-1], ts[i])
    if n_t and n_a:
        with blas_threads():
            if not streamed:
                _score_pass(Engine(text_vecs, audio_vecs, device=device, precision="fp32", block=block),
                            ts, best, counts, progress)
            else:
                _stream_pass(text_vecs, audio_vecs, ts, best, counts, device, block, max_memory, progress)
    return _result(ts, best, counts, n_t, n_a, bins)


def _stream_pass(text_vecs, pool, ts, best, counts, device, block, max_memory, progress) -> None:
    from curator.match.params import default_max_memory
    from curator.match.stream import block_rows

    base = Engine(text_vecs, np.empty((0, pool.dim), np.float32), device=device, precision="fp32", block=block)
    rows = block_rows(max_memory or default_max_memory(), pool.dim, base.block[1])
    part = np.empty_like(best)
    for start, vecs in pool.blocks(rows):
        _score_pass(with_cols(base, vecs), ts, part, counts, None)
        np.maximum(best, part, out=best)
        if progress:
            progress(int(len(text_vecs) * min(start + len(vecs), len(pool)) / len(pool)), len(text_vecs))


def _result(ts: np.ndarray, best: np.ndarray, counts: np.ndarray, n_t: int, n_a: int, bins: int) -> dict:
    at_least = np.cumsum(counts[::-1])[::-1][1:]  # pairs with score >= ts[i]
    matched = np.array([(best >= t).sum() for t in ts.astype(np.float32)], dtype=np.int64)
    total = max(n_t * n_a, 1)
    table = pa.table({
        "threshold": pa.array(ts),
        "pairs": pa.array(at_least),
        "captions_matched": pa.array(matched),
        "pair_fraction": pa.array(at_least / total),
        "caption_fraction": pa.array(matched / max(n_t, 1)),
    })
    finite = best[np.isfinite(best)]
    hist_counts, hist_edges = np.histogram(finite, bins=bins, range=(-1.0, 1.0) if not len(finite) else None)
    return {"table": table, "best": best, "hist_counts": hist_counts, "hist_edges": hist_edges}


def plot(result: dict, path: str, title: str = "") -> str:
    """Write the sweep as a PNG: pairs and matched captions per threshold, best-score histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result["table"]
    ts = t.column("threshold").to_numpy()
    fig, (ax1, ax3) = plt.subplots(1, 2, figsize=(11, 4))
    pairs = t.column("pairs").to_numpy()
    # Zero pairs cannot sit on a log axis: leave those thresholds unplotted rather than fake a 1.
    ax1.semilogy(ts, np.where(pairs > 0, pairs, np.nan), "o-", color="tab:blue", label="pairs >= t")
    ax1.set_xlabel("threshold")
    ax1.set_ylabel("pairs kept", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(ts, t.column("caption_fraction").to_numpy(), "s--", color="tab:orange")
    ax2.set_ylabel("captions with >= 1 match", color="tab:orange")
    ax2.set_ylim(0, 1.05)
    edges, counts = result["hist_edges"], result["hist_counts"]
    ax3.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:green")
    if len(ts) <= 20:  # mark the swept thresholds while they are few enough to read
        for x in ts:
            ax3.axvline(x, color="grey", lw=0.5)
    ax3.set_xlabel("best-match score per caption")
    ax3.set_ylabel("captions")
    fig.suptitle(title or "threshold sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
