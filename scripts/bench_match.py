#!/usr/bin/env python
"""Benchmark thresholded cross-modal matching, side by side in one run, on the same data.

Routes: the machine's fp32 matmul rate (torch and numpy, measured before and after the others),
a plain numpy blocked loop, our exact matcher (threshold only, and top-k), faiss-cpu exact
(IndexFlatIP range_search), the DuckDB cross join (on a caption subset, extrapolated), and our ann
(LanceDB IVF index + exact refine, with recall against exact). Each route runs in its own
subprocess so its peak RSS is its own.

    python scripts/bench_match.py --clips 100000 --captions 10000 --dim 512
    python scripts/bench_match.py --clips 200000 --captions 20000 --out docs/bench/match.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

PAPER = (1_900_000, 128_000, 1024)  # clips, captions, dim at the papers' scale


def rss_mb() -> float:
    """Peak RSS of this process. VmHWM, because ru_maxrss survives exec and would report the
    parent's peak (the data generator) for every route."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- routes (each runs in a subprocess) -----------------------------------------------------------

def route_peak(T, A, a):
    import torch

    out = {}
    t, x = torch.from_numpy(T[:2048]), torch.from_numpy(A[:8192])
    buf = torch.empty(2048, 8192)
    flops = 2 * 2048 * 8192 * T.shape[1]
    best = best_cpu = 0.0
    end = time.perf_counter() + a.peak_seconds
    while time.perf_counter() < end:
        t0, c0 = time.perf_counter(), cpu_s()
        torch.mm(t, x.t(), out=buf)
        best = max(best, flops / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, flops / max(cpu_s() - c0, 1e-6))
    out["torch_gflops"] = best / 1e9
    out["torch_gflops_per_cpu_s"] = best_cpu / 1e9
    tn, xn = T[:2048], A[:8192]
    best, end = 0.0, time.perf_counter() + a.peak_seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        np.dot(tn, xn.T)
        best = max(best, flops / (time.perf_counter() - t0))
    out["numpy_gflops"] = best / 1e9
    out["gflops"] = max(out["torch_gflops"], out["numpy_gflops"])
    return out


def route_numpy(T, A, a):
    pairs = 0
    for i in range(0, len(T), 2048):
        for j in range(0, len(A), 8192):
            s = T[i:i + 2048] @ A[j:j + 8192].T
            pairs += len(np.flatnonzero(s >= a.threshold))
    return {"pairs": pairs}


def route_exact(T, A, a, top_k=None):
    import torch

    from curator.match.exact import match_blocks

    torch.set_num_threads(a.threads)
    pairs = 0
    for r, _, _, _ in match_blocks(T, A, a.threshold, top_k, "text", device="cpu", precision="fp32"):
        pairs += len(r)
    return {"pairs": pairs}


def route_exact_topk(T, A, a):
    return route_exact(T, A, a, a.top_k)


def route_faiss(T, A, a):
    import faiss

    faiss.omp_set_num_threads(a.threads)
    index = faiss.IndexFlatIP(A.shape[1])
    index.add(A)
    pairs = 0
    for i in range(0, len(T), 4096):
        lims, _, _ = index.range_search(T[i:i + 4096], a.threshold)
        pairs += int(lims[-1])
    return {"pairs": pairs}


def route_duckdb(T, A, a):
    from curator.match.reference import match_sql

    sub = T[: a.sql_captions]
    pairs = sum(len(b[0]) for b in match_sql(sub, A, a.threshold))
    return {"pairs_subset": pairs, "captions_subset": len(sub)}


def route_ann(T, A, a):
    from curator.demo.vectors import write_model
    from curator.match.ann import DEFAULTS, ann_pairs, ensure_index, measure_recall
    from curator.store.store import Store
    from curator.store.vectors import read_vectors

    store = Store.open(tempfile.mkdtemp(prefix="bench_ann_"))
    write_model(store, "bench", T[:1], A, with_rows=False)
    av = read_vectors(store, "bench", "audio")
    table = store.table(av.table)
    p = DEFAULTS | ({"nprobes": a.nprobes} if a.nprobes else {})
    t0 = time.perf_counter()
    info = ensure_index(table, len(A), p)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    r, c, _, _ = ann_pairs(table, T, av, a.threshold, a.top_k, p)
    search = time.perf_counter() - t0
    sample = np.sort(np.random.default_rng(0).choice(len(T), size=min(256, len(T)), replace=False))
    recall = measure_recall(r, c, T, A, a.threshold, a.top_k, sample)
    return {"pairs": len(r), "build_s": build, "search_s": search, "recall": recall,
            "index": info.get("index"), "partitions": info.get("partitions"), "nprobes": p["nprobes"]}


def route_read(T, A, a):
    """read_vectors from a real store vs np.load of the same matrix (both from the page cache)."""
    from curator.demo.vectors import write_model
    from curator.store.store import Store
    from curator.store.vectors import read_vectors

    store = Store.open(tempfile.mkdtemp(prefix="bench_read_"))
    write_model(store, "bench", T[:1], A, with_rows=False)
    read_vectors(store, "bench", "audio")  # warm the page cache
    t0 = time.perf_counter()
    v = read_vectors(store, "bench", "audio")
    lance_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.load(Path(a.data) / "audio.npy")
    npy_s = time.perf_counter() - t0
    gb = v.vecs.nbytes / 1e9
    return {"gb": gb, "store_gb_s": gb / lance_s, "npy_gb_s": gb / npy_s}


ROUTES = {"read": route_read, "peak": route_peak, "numpy": route_numpy, "exact": route_exact, "exact_topk": route_exact_topk,
          "faiss": route_faiss, "duckdb": route_duckdb, "ann": route_ann}


PRELOAD = {"read": ["curator.demo.vectors", "curator.store.store", "curator.store.vectors", "lancedb"], "peak": ["torch"], "exact": ["torch", "curator.match.exact"], "exact_topk": ["torch", "curator.match.exact"],
           "faiss": ["faiss"], "duckdb": ["curator.match.reference"], "numpy": [],
           "ann": ["curator.match.ann", "curator.demo.vectors", "curator.store.store", "curator.store.vectors", "lancedb"]}


def worker(a) -> None:
    import importlib

    for mod in PRELOAD[a.worker]:  # imports are not the route's time or working memory
        importlib.import_module(mod)
    T = np.load(Path(a.data) / "text.npy")
    A = np.load(Path(a.data) / "audio.npy")
    base = rss_mb()
    t0, c0 = time.perf_counter(), cpu_s()
    out = ROUTES[a.worker](T, A, a)
    out["seconds"] = time.perf_counter() - t0
    out["cpu_s"] = cpu_s() - c0
    out["peak_rss_mb"] = rss_mb()
    out["input_rss_mb"] = base
    print("RESULT " + json.dumps(out))


# -- driver ---------------------------------------------------------------------------------------

def run_route(name: str, a, data: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--data", data, "--threshold", str(a.threshold)]
    for flag in ("top_k", "sql_captions", "threads", "peak_seconds", "nprobes"):
        v = getattr(a, flag)
        if v is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(v)]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"route {name} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][7:])
    out["load_before"] = load
    print(f"{name:11s} {out['seconds']:8.2f} s  {json.dumps({k: v for k, v in out.items() if k != 'seconds'})}", flush=True)
    return out


def make_data(a, folder: Path) -> float:
    from curator.demo.vectors import clustered

    A = clustered(a.clips, a.dim, n_clusters=a.clusters, spread=1.0, seed=1)
    T = clustered(a.captions, a.dim, n_clusters=a.clusters, spread=1.0, seed=2)
    np.save(folder / "audio.npy", A)
    np.save(folder / "text.npy", T)
    sample = T[: min(len(T), 500)] @ A[: min(len(A), 20000)].T
    return float(np.quantile(sample, 1 - a.pass_fraction))


NOTES = """### How the exact matcher gets there

- Caption blocks x streamed clip blocks (one block product into one reused buffer, default 2048x4096 on
  CPU): memory is one score block plus the kept pairs of one caption block, not the pool size.
- The threshold test runs in numpy on the torch buffer (zero-copy): SIMD compare + `flatnonzero`
  cost ~5 ms per 8 M scores against ~20 ms for `torch.ge` + `nonzero`; it was the largest overhead.
- Decisions use one canonical score per pair (float64 sum of the float32 products, what DuckDB's
  `array_inner_product` over DOUBLE arrays computes); the matmul is a prefilter with a provable
  margin (fp32: max(1e-4, d*2^-23); bf16: 0.01), and only pairs inside the band are re-scored. So
  exact (fp32 or bf16) and sql keep identical pairs; faiss / a plain numpy loop decide a pair that
  sits within fp32 rounding of the threshold by their own rounding (hence a pair-count difference
  of one or two above).
- top-k keeps candidates with their block scores and prunes them against each caption's running
  k-th score; only the survivors are re-scored canonically (float64 gathers of ~k pairs per
  caption). That re-score is what top-k costs over the plain threshold: ~35 % more CPU time at
  100 k clips, falling as the pool grows (it scales with captions x k, the matmul with captions x clips).
- Load: this run shared 2 cores with other jobs (load average 3-7). An interleaved check on 65 k x 4 k
  x 512 (same process, alternating) measured our exact at 47-55 GFLOP per CPU-second against 49-54
  for the plain numpy loop, i.e. equal within the noise; single runs like the table above swing by
  +-20 %. Rerun on an idle machine before quoting the % of peak.
- On CPU the block product uses whichever of torch (MKL) and numpy (OpenBLAS) is faster, timed once
  per process: on these AMD cores OpenBLAS was ~20-30 % faster than MKL. Both write into the same
  zero-copy buffer; on a GPU it is always torch.
- ann defaults: IVF_FLAT, ~sqrt(n) partitions (>= 256 clips each), nprobes 16, no index below
  1024 clips (LanceDB's flat scan is exact). IVF_PQ built ~25x slower at 10 k clips and needed
  refine_factor 10 to reach the same recall. On 10 k clips x 2 k captions x 512-d clustered data
  the defaults measured recall 1.0 over all 2 k captions (top-10 and top-50). ann answers top-k per
  caption only; recall is measured against exact on 256 sampled captions in every run.
"""


def report(a, res: dict) -> str:
    n = a.clips * a.captions
    flops = 2.0 * n * a.dim
    peaks = [res["peak"]] + ([res["peak_after"]] if "peak_after" in res else [])
    peak = max(p["gflops"] for p in peaks)
    peak_cpu = max(p["torch_gflops_per_cpu_s"] for p in peaks)
    rows = []

    def eff(r):
        return f"{flops / r['seconds'] / 1e9 / peak:.0%} wall, {flops / r['cpu_s'] / 1e9 / peak_cpu:.0%} CPU-time"

    def row(name, r, pairs=None, secs=None, cpu=None, note=""):
        secs = secs if secs is not None else r["seconds"]
        cpu = cpu if cpu is not None else r["cpu_s"]
        pairs = pairs if pairs is not None else r.get("pairs")
        rows.append(f"| {name} | {secs:.2f} | {cpu:.2f} | {n / secs / 1e6:.1f} | {pairs if pairs is not None else '-'} | "
                    f"{r['recall'] if 'recall' in r else '1 (exact)'} | {r['peak_rss_mb']:.0f} "
                    f"({r['peak_rss_mb'] - r['input_rss_mb']:+.0f}) | {r['load_before']:.1f} | {note} |")

    ex = res["exact"]
    row("numpy blocked matmul + threshold", res["numpy"], note=f"{eff(res['numpy'])} of fp32 peak")
    row("**ours: exact, threshold**", ex, note=f"**{eff(ex)} of fp32 peak**")
    row(f"ours: exact, top-{a.top_k} per caption", res["exact_topk"], note=f"{eff(res['exact_topk'])} of fp32 peak")
    fa = res["faiss"]
    row("faiss IndexFlatIP range_search", fa,
        note=f"ours is {fa['seconds'] / ex['seconds']:.2f}x faster (wall), {fa['cpu_s'] / ex['cpu_s']:.2f}x (CPU time)")
    d = res["duckdb"]
    scale = a.captions / d["captions_subset"]
    row("DuckDB cross join, array_inner_product", d, pairs=f"~{int(d['pairs_subset'] * scale)}",
        secs=d["seconds"] * scale, cpu=d["cpu_s"] * scale,
        note=f"extrapolated from {d['captions_subset']} captions ({d['seconds']:.1f} s); "
             f"{d['cpu_s'] * scale / ex['cpu_s']:.0f}x the CPU time of ours")
    an = res["ann"]
    row(f"ours: ann top-{a.top_k} ({an['index']}, nprobes {an['nprobes']})", an, secs=an["build_s"] + an["search_s"],
        note=f"build {an['build_s']:.1f} s + search {an['search_s']:.1f} s (CPU column: whole route incl. recall check)")
    rd = res.get("read")
    read_line = (f"Reading vectors: `curator.store.vectors.read_vectors` from the store ran at {rd['store_gb_s']:.2f} GB/s "
                 f"against {rd['npy_gb_s']:.2f} GB/s for `np.load` of the same {rd['gb']:.2f} GB `.npy` "
                 "(both from the page cache)." if rd else "")
    pa, pc, pd = PAPER
    paper_s = 2.0 * pa * pc * pd / (flops / ex["seconds"])
    lines = [
        "## Matching (`scripts/bench_match.py`)",
        "",
        f"{a.clips:,} clips x {a.captions:,} captions x {a.dim}-d clustered unit vectors ({a.clusters} clusters), "
        f"threshold {a.threshold:.4f} (~{a.pass_fraction:.1%} of pairs pass), top-k {a.top_k}. CPU only, "
        f"{os.cpu_count()} cores, torch threads {a.threads}, OMP_WAIT_POLICY=PASSIVE. "
        "**No GPU this session**: the bf16 + fp32-rescore path was run on CPU by the tests for correctness only.",
        "",
        f"Machine fp32 matmul rate, measured in this run (2048x8192x{a.dim} products, best of "
        f"{a.peak_seconds:.0f} s): before {res['peak']['gflops']:.0f} GFLOP/s wall "
        f"(torch {res['peak']['torch_gflops']:.0f}, numpy {res['peak']['numpy_gflops']:.0f}), "
        f"after {peaks[-1]['gflops']:.0f}; per CPU-second {peak_cpu:.0f} GFLOP. The best of each is the "
        "reference. With other jobs on the cores, wall-time ratios swing with their load; CPU-time ratios "
        "(work done per core-second) are the steadier measure of our overhead over a bare matmul.",
        "",
        "| route | wall s | CPU s | M pairs scored/s (wall) | pairs kept | recall | peak RSS MB (over inputs) | load avg before | note |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Extrapolation (not measured): at the papers' scale, {pa:,} clips x {pc:,} captions x {pd}-d = "
        f"{2.0 * pa * pc * pd:.1e} flops, our exact CPU rate in this run gives ~{paper_s / 3600:.1f} h on this machine "
        f"(~{2.0 * pa * pc * pd / (0.9 * 150e9) / 3600:.1f} h at 90 % of an idle machine's ~150 GFLOP/s); "
        f"DuckDB's pair rate would take ~{paper_s * d['seconds'] * scale / ex['seconds'] / 86400:.0f} days.",
        "",
        read_line,
        "",
        "The machine is shared with other jobs (load average per route above); absolute times move with "
        "that load, the ratios measured side by side less so.",
        "",
        NOTES,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--captions", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=200)
    ap.add_argument("--pass-fraction", type=float, default=0.001)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--sql-captions", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peak-seconds", type=float, default=3.0)
    ap.add_argument("--nprobes", type=int, default=None)
    ap.add_argument("--routes", default="peak,numpy,exact,exact_topk,faiss,duckdb,ann,read,peak_after")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "match.md"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threshold", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    with tempfile.TemporaryDirectory(prefix="bench_match_") as tmp:
        a.threshold = make_data(a, Path(tmp))
        print(f"data: {a.clips} x {a.captions} x {a.dim}, threshold {a.threshold:.4f}", flush=True)
        res = {}
        for name in a.routes.split(","):
            res[name] = run_route("peak" if name == "peak_after" else name, a, tmp)
    text = report(a, res)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
