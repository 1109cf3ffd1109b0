"""The arithmetic of exact matching: blocked matrix products and the canonical pair score.

Decisions are made on one *canonical* score per pair, the float64 sum of float32 products, which
does not depend on block shapes, BLAS kernels or the device. The matrix product (fp32 on CPU,
bf16 on a GPU) is only a prefilter: a pair whose block score is more than `margin` away from the
bound it is compared with is decided by the block score (its error is provably below the margin);
only pairs inside the band are re-scored canonically. So fp32, bf16 and DuckDB's double-precision
reference keep exactly the same pairs. Every kept pair is then stored with its canonical score
(`exact.threshold_block`), never the block score.

On CPU the fp32 product runs through torch (MKL) or numpy (OpenBLAS), whichever is faster here
(timed on the first large blocks of a process, `BlasTrial`), into the same zero-copy buffer; on a
GPU through torch. The two round the same product differently (~1e-8), which is why only the
canonical score is ever stored: the choice may differ between processes, the stored scores (and
so a set's content hash) do not.

Margins: fp32 matmul error on unit vectors is below d * 2^-24 in the worst case, so the margin is
max(1e-4, d * 2^-23). bf16 inputs are each off by <= 2^-9 relative, so the product is off by
<= 2 * 2^-9 * sum|t_i a_i| <= 0.0039 (Cauchy-Schwarz), plus <= 2^-9 for rounding the bf16 result:
under 0.006, and the margin is 0.01.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from functools import lru_cache

import numpy as np
import torch

from schemas.errors import ParameterError
from trainer.device import resolve_device

BLAS_ENV = "CURATOR_BLAS"
BF16_MARGIN = 0.01
CPU_BLOCK = (2048, 4096)  # (rows, cols): S is 32 MB, matmul ~90% of peak, compare stays cheap
GPU_BLOCK = (16384, 65536)


@lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="match-compare")


def fp32_margin(dim: int) -> float:
    return max(1e-4, dim * 2.0 ** -23)


# dim -> the faster CPU BLAS, learnt from the first large blocks a process multiplies.
_LEARNT_BLAS: dict[int, str] = {}
TRIAL_FLOPS = 2e9  # blocks smaller than this are too short to time reliably
TRIALS_EACH = 2


class BlasTrial:
    """Picks the faster CPU BLAS from the real work: torch's (MKL) ran ~20-30 % slower than numpy's
    (OpenBLAS) on the AMD machines here, the other way round elsewhere. The first large blocks of a
    process alternate the two and are timed; the rest use the faster. A separate timing run cost
    0.7 s per process, ~25 % of a 500 x 100 k match."""

    def __init__(self, dim: int):
        self.dim = dim
        self.best = {"numpy": np.inf, "torch": np.inf}
        self.runs = {"numpy": 0, "torch": 0}

    def pick(self, flops: float) -> str:
        if flops < TRIAL_FLOPS:
            return "numpy"
        return min(self.runs, key=lambda name: (self.runs[name], name))

    def record(self, name: str, flops: float, seconds: float) -> None:
        if flops < TRIAL_FLOPS:
            return
        self.runs[name] += 1
        self.best[name] = min(self.best[name], seconds / flops)
        if min(self.runs.values()) >= TRIALS_EACH:
            _LEARNT_BLAS[self.dim] = min(self.best, key=self.best.get)


def blas_threads(n: int | None = None):
    """Hold numpy's BLAS to torch's thread count while matching (tests run one thread; a user's
    `torch.set_num_threads` should bind both libraries). No-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=n or torch.get_num_threads(), user_api="blas")


def cpu_blas(dim: int, choice: str = "auto") -> str | None:
    """The CPU BLAS of the prefilter: `choice`, else $CURATOR_BLAS (torch / numpy), else the one this
    process found faster; None while it has not decided yet (`BlasTrial`)."""
    if choice == "auto":
        choice = os.environ.get(BLAS_ENV) or "auto"
    if choice not in ("auto", "torch", "numpy"):
        raise ParameterError(f"blas must be auto, torch or numpy, got {choice!r}")
    return _LEARNT_BLAS.get(max(dim, 1)) if choice == "auto" else choice


def as_f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 without a copy when it already is one."""
    return np.ascontiguousarray(x, dtype=np.float32)


class Engine:
    """Two matrices (rows x d, cols x d) on one device, scored block by block.

    On CPU the fp32 tensors are `torch.from_numpy` views of the caller's arrays: no copy.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, device: str = "auto", precision: str = "auto",
                 block: tuple[int, int] | int | None = None, blas: str = "auto"):
        self.device = resolve_device(device)
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision not in ("fp32", "bf16"):
            raise ParameterError(f"precision must be fp32 or bf16, got {precision!r}")
        self.precision = precision
        self.rows = torch.from_numpy(as_f32(rows)).to(self.device)
        self.cols = torch.from_numpy(as_f32(cols)).to(self.device)
        self.dim = int(self.rows.shape[1]) if self.rows.ndim == 2 else 0
        self.low = precision == "bf16"
        self.margin = BF16_MARGIN if self.low else fp32_margin(self.dim)
        # The bf16 copies cost half the fp32 memory once, instead of a cast per block.
        self._rows_mm = self.rows.to(torch.bfloat16) if self.low else self.rows
        self._cols_mm = self.cols.to(torch.bfloat16) if self.low else self.cols
        if isinstance(block, int):
            block = (block, block)
        self.block = tuple(block or (GPU_BLOCK if self.device.type == "cuda" else CPU_BLOCK))
        mm_dtype = torch.bfloat16 if self.low else torch.float32
        self._buf = torch.empty(self.block[0] * self.block[1], dtype=mm_dtype, device=self.device)
        self._mask = torch.empty(self.block[0] * self.block[1], dtype=torch.bool, device=self.device)
        self._mask_np = self._mask.numpy() if self.device.type == "cpu" else None
        self.compare_threads: int | None = None  # default: torch's thread count
        # fp32 on CPU: numpy's or torch's BLAS, into the same buffer (`BlasTrial` when undecided).
        self._cpu32 = self.device.type == "cpu" and not self.low
        self._blas = cpu_blas(self.dim, blas) if self._cpu32 else "torch"
        self._trial = BlasTrial(self.dim) if self._blas is None else None
        if self._cpu32:
            self._rows_np, self._cols_np = self.rows.numpy(), self.cols.numpy()

    @property
    def n_rows(self) -> int:
        return int(self.rows.shape[0])

    @property
    def n_cols(self) -> int:
        return int(self.cols.shape[0])

    def scores(self, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        """Block scores rows[r0:r1] . cols[c0:c1] into a reused buffer (valid until the next call)."""
        out = self._buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
        blas, flops = self._blas, 2.0 * (r1 - r0) * (c1 - c0) * self.dim
        if blas is None:
            blas = _LEARNT_BLAS.get(self.dim) or self._trial.pick(flops)
            t0 = time.perf_counter()
        if blas == "numpy":
            np.matmul(self._rows_np[r0:r1], self._cols_np[c0:c1].T, out=out.numpy())
        else:
            torch.mm(self._rows_mm[r0:r1], self._cols_mm[c0:c1].t(), out=out)
        if self._blas is None:
            self._trial.record(blas, flops, time.perf_counter() - t0)
            self._blas = _LEARNT_BLAS.get(self.dim)
        return out

    def candidates(self, s: torch.Tensor, bound: np.ndarray | float):
        """Local (r, c, block score as float32 numpy) of entries >= bound - margin.

        `bound` is a scalar or one float per row. On CPU the compare runs in numpy (SIMD compare +
        flatnonzero took ~5 ms per 8M scores against ~20 ms for torch.ge + nonzero), split over
        threads because numpy releases the GIL there.
        """
        # bf16 rounds the bound by up to 2^-9 in the compare, so widen the band by 2^-8.
        slack = self.margin + (2.0 ** -8 if self.low else 0.0)
        lo = np.asarray(bound, dtype=np.float64) - slack
        if self.device.type == "cpu" and not self.low:
            return self._candidates_np(s.numpy(), lo)
        mask = self._mask[: s.numel()].view(s.shape)
        if lo.ndim:
            torch.ge(s, torch.from_numpy(lo.astype(np.float32)).to(s.device, s.dtype)[:, None], out=mask)
        else:
            torch.ge(s, float(lo), out=mask)
        idx = mask.nonzero()
        if idx.shape[0] == 0:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.float32)
        r, c = idx[:, 0], idx[:, 1]
        vals = s[r, c].float()
        return r.cpu().numpy(), c.cpu().numpy(), vals.cpu().numpy()

    def _candidates_np(self, a: np.ndarray, lo: np.ndarray):
        n_rows, n_cols = a.shape
        mask = self._mask_np[: a.size].reshape(a.shape)
        lo32 = lo.astype(np.float32)

        def part(span):
            r0, r1 = span
            bound = lo32[r0:r1, None] if lo32.ndim else lo32
            np.greater_equal(a[r0:r1], bound, out=mask[r0:r1])
            return np.flatnonzero(mask[r0:r1]) + r0 * n_cols

        threads = min(self.compare_threads or torch.get_num_threads(), max(1, n_rows // 64))
        if threads > 1:
            edges = np.linspace(0, n_rows, threads + 1).astype(int)
            flat = np.concatenate(list(_pool(threads).map(part, zip(edges[:-1], edges[1:]))))
        else:
            flat = part((0, n_rows))
        r, c = np.divmod(flat, n_cols)
        return r, c, a.reshape(-1)[flat]

    def _pairwise(self, ri: np.ndarray, ci: np.ndarray, dtype: torch.dtype) -> np.ndarray:
        return pairwise(self.rows, self.cols, ri, ci, dtype)

    def canonical(self, ri: np.ndarray, ci: np.ndarray) -> np.ndarray:
        """float64 scores of global (row, col) pairs, identical whatever the block layout."""
        return self._pairwise(ri, ci, torch.float64)


def pairwise(rows: torch.Tensor, cols: torch.Tensor, ri: np.ndarray, ci: np.ndarray,
             dtype: torch.dtype = torch.float64) -> np.ndarray:
    """rows[ri] . cols[ci] pair by pair in `dtype`, in chunks that bound the gathered copies."""
    out = np.empty(len(ri), dtype=np.float64 if dtype == torch.float64 else np.float32)
    dim = int(rows.shape[1]) if rows.ndim == 2 else 1
    if rows.device.type == "cpu":
        # numpy, one thread, ~2 MB chunks that stay in cache: 20k pairs x 1024-d in ~35 ms, where
        # torch's 32 MB chunks took ~360 ms (page faults on fresh temporaries) and small torch chunks
        # stalled on OpenMP hand-offs whenever the machine was busy. Row sums do not depend on the
        # chunking.
        rows_np, cols_np, np_dtype = rows.numpy(), cols.numpy(), out.dtype
        step = max(64, (1 << 18) // max(dim, 1))
        for i in range(0, len(ri), step):
            a = rows_np[ri[i:i + step]].astype(np_dtype)
            b = cols_np[ci[i:i + step]].astype(np_dtype, copy=False)
            out[i:i + step] = np.multiply(a, b, out=a).sum(1)
        return out
    step = max(1024, (1 << 22) // max(dim, 1))
    for i in range(0, len(ri), step):
        r = torch.from_numpy(np.ascontiguousarray(ri[i:i + step])).to(rows.device)
        c = torch.from_numpy(np.ascontiguousarray(ci[i:i + step])).to(cols.device)
        a = rows.index_select(0, r).to(dtype)
        b = cols.index_select(0, c).to(dtype)
        out[i:i + step] = a.mul_(b).sum(1).cpu().numpy()
    return out


def canonical_scores(rows: np.ndarray, cols: np.ndarray, ri: np.ndarray, ci: np.ndarray) -> np.ndarray:
    """The canonical float64 score of (rows[ri], cols[ci]) pairs from numpy arrays (no copies)."""
    if len(ri) == 0:
        return np.empty(0, np.float64)
    return pairwise(torch.from_numpy(as_f32(rows)), torch.from_numpy(as_f32(cols)), ri, ci)


def lexrank(rows: np.ndarray, cols: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by (row, score desc, col) and the 0-based rank of each pair within its row."""
    order = np.lexsort((cols, -score, rows))
    r = rows[order]
    if len(r) == 0:
        return order, np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    counts = np.diff(np.r_[starts, len(r)])
    rank = np.arange(len(r)) - np.repeat(starts, counts)
    return order, rank


def with_cols(eng: Engine, cols: np.ndarray) -> Engine:
    """The same engine (rows, device, precision, buffers) over another column block: streamed pools
    move and cast the caption side once, not once per block."""
    other = object.__new__(Engine)
    other.__dict__.update(eng.__dict__)
    other.cols = torch.from_numpy(as_f32(cols)).to(eng.device)
    other._cols_mm = other.cols.to(torch.bfloat16) if eng.low else other.cols
    if eng._cpu32:
        other._cols_np = other.cols.numpy()
    return other


def swapped(eng: Engine) -> Engine:
    """The same engine with rows and columns exchanged (shares tensors and buffers)."""
    other = object.__new__(Engine)
    other.__dict__.update(eng.__dict__)
    other.rows, other.cols = eng.cols, eng.rows
    other._rows_mm, other._cols_mm = eng._cols_mm, eng._rows_mm
    if eng._cpu32:
        other._rows_np, other._cols_np = eng._cols_np, eng._rows_np
    return other
