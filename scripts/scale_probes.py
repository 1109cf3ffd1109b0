"""The scale rehearsal's setup (the store's rows and the vectors as parquet shards) and its
side-by-side probes; `scripts/bench_scale.py` runs each in its own process (`--probe NAME`)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scale_report import CLASSES

MODEL = "scale"


# -- setup: vectors and rows ----------------------------------------------------------------------

def _layout(a) -> dict:
    n_eval = max(10, min(a.match_captions // 2, a.clips // 20))  # guard's work: half a match
    return {"paired": a.captions, "eval": n_eval, "wild0": a.captions + n_eval}


def _centers(dim: int) -> np.ndarray:
    from curator.demo.vectors import unit

    return unit(np.random.default_rng(12345).standard_normal((CLASSES, dim)))


def _clips(a, start: int, n: int, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of clips start..start+n: clip i belongs to class i % CLASSES; deterministic per clip."""
    from curator.demo.vectors import unit

    cls = (np.arange(start, start + n) % CLASSES)
    rng = np.random.default_rng(start)
    noise = rng.standard_normal((n, a.dim), dtype=np.float32) / np.sqrt(a.dim)
    return unit(centers[cls] + noise), cls


def setup(a) -> dict:
    """Parquet shards of the vectors, `.npy` copies for the read ratio, and the store's rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curator.demo.vectors import unit
    from curator.store.store import Store
    from curator.store.vectors import vector_array
    from schemas.tables import AUDIO, TEXTS

    work, lay, centers = Path(a.work), _layout(a), _centers(a.dim)
    shards = work / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    npy = np.lib.format.open_memmap(work / "audio.npy", mode="w+", dtype=np.float32, shape=(a.clips, a.dim))
    ids = np.array([f"wild:{i:08d}" for i in range(a.clips)], dtype=object)
    for i, s in enumerate(range(0, a.clips, a.shard_rows)):
        n = min(a.shard_rows, a.clips - s)
        vecs, _ = _clips(a, s, n, centers)
        for e in range(min(10, lay["eval"])):  # ten wild clips re-upload eval clips: guard finds them
            if s <= lay["paired"] + e and lay["wild0"] + e < s + n:
                vecs[lay["wild0"] + e - s] = vecs[lay["paired"] + e - s]
        npy[s:s + n] = vecs
        pq.write_table(pa.table({"id": pa.array(ids[s:s + n], pa.string()), "vector": vector_array(vecs)}),
                       shards / f"audio_{i:04d}.parquet", compression="none")
    npy.flush()
    del npy
    # Captions of paired clips sit near their clip's class; prompts are the class centres.
    rng = np.random.default_rng(7)
    cls = np.arange(a.captions) % CLASSES
    tvecs = unit(centers[cls] + rng.standard_normal((a.captions, a.dim), dtype=np.float32) * (1.2 / np.sqrt(a.dim)))
    pvecs = unit(centers + rng.standard_normal((CLASSES, a.dim), dtype=np.float32) * (0.3 / np.sqrt(a.dim)))
    text_ids = [f"c:{i:07d}" for i in range(a.captions)] + [f"p:{j:03d}" for j in range(CLASSES)]
    np.save(work / "text.npy", tvecs[: a.match_captions])
    pq.write_table(pa.table({"id": pa.array(text_ids, pa.string()), "vector": vector_array(np.vstack([tvecs, pvecs]))}),
                   work / "texts.parquet", compression="none")

    store = Store.open(str(work / "store"))
    idx = np.arange(a.clips)
    source = np.where(idx < lay["paired"], "clotho", np.where(idx < lay["wild0"], "esc50", "wild"))
    split = np.where(idx < lay["paired"], "train", np.where(idx < lay["wild0"], "eval", "wild"))
    labels = [[f"class{i % CLASSES}"] if lay["paired"] <= i < lay["wild0"] else None for i in range(a.clips)]
    for s in range(0, a.clips, 500_000):  # appends of 500 k rows keep the setup's memory flat
        e = min(a.clips, s + 500_000)
        store.append("audio", pa.table({
            "audio_id": pa.array(ids[s:e], pa.string()),
            "uri": pa.array([f"/synthetic/wild/{i:08d}.wav" for i in range(s, e)]),
            "source": pa.array(source[s:e]), "split": pa.array(split[s:e]),
            "duration_s": pa.array(np.full(e - s, 10.0)), "sample_rate": pa.array(np.full(e - s, 48000, np.int32)),
            "labels": pa.array(labels[s:e], pa.list_(pa.string())),
            "sha1": pa.array([f"{i:040x}" for i in range(s, e)]),
        }), schema=AUDIO)
    kinds = ["caption"] * a.captions + ["prompt"] * CLASSES
    store.append("texts", pa.table({
        "text_id": text_ids,
        "text": [f"caption {i} of class {i % CLASSES}" for i in range(a.captions)]
        + [f"this is a sound of class{j}" for j in range(CLASSES)],
        "kind": kinds,
        "source": ["clotho" if i < a.match_captions else "audiocaps" for i in range(a.captions)] + ["esc"] * CLASSES,
        "audio_id": [ids[i] for i in range(a.captions)] + [None] * CLASSES,
        "label_set": [None] * a.captions + ["esc"] * CLASSES,
        "label": [None] * a.captions + [f"class{j}" for j in range(CLASSES)],
    }), schema=TEXTS)
    # Thresholds from a sample: tau keeps ~pass_fraction of caption x clip pairs; tau_ds keeps about
    # match_captions captions in DS, so ADS matches as many captions as `match` does.
    sample = np.load(work / "audio.npy", mmap_mode="r")[: min(a.clips, 50_000)]
    scores = tvecs[: min(a.match_captions, 400)] @ np.asarray(sample).T
    tau = float(np.quantile(scores, 1 - a.pass_fraction))
    tau_ds = float(np.quantile((tvecs @ pvecs.T).max(axis=1), 1 - a.match_captions / a.captions))
    return {"tau": round(tau, 4), "tau_ds": round(tau_ds, 4)}


# -- probes (each in its own process) -------------------------------------------------------------

def _cpu() -> float:
    r = os.times()
    return r.user + r.system


def _rss_gb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident set, GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    return 0.0


def _read_growth(read) -> dict:
    """Time `read()` from a warm page cache; the peak RSS it adds over what the process held before
    (imports and the warm-up are excluded: the peak is reset through /proc/self/clear_refs)."""
    del_ = read()
    del del_
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass
    base = _rss_gb("VmRSS")
    t0 = time.perf_counter()
    v = read()
    seconds = [time.perf_counter() - t0]
    peak, gb = _rss_gb() - base, v.nbytes / 1e9
    # Best of three: a fresh multi-GB array's page faults swing single reads by 2x on this machine
    # (one route 0.42-1.13 s, the other 0.78-1.77 s in back-to-back runs).
    for _ in range(2):
        del v
        t0 = time.perf_counter()
        v = read()
        seconds.append(time.perf_counter() - t0)
    del v  # freed after its timing, as np.load's array is
    return {"seconds": min(seconds), "all_seconds": seconds, "gb": gb, "peak_gb": peak, "base_gb": base}


def probe_peak(a) -> dict:
    import torch

    rng = np.random.default_rng(0)
    t = rng.standard_normal((2048, a.dim), dtype=np.float32)
    x = rng.standard_normal((8192, a.dim), dtype=np.float32)
    flops = 2 * 2048 * 8192 * a.dim
    best = {"torch": 0.0, "numpy": 0.0, "cpu": 0.0}
    tt, xx, out = torch.from_numpy(t), torch.from_numpy(x), torch.empty(2048, 8192)
    end = time.perf_counter() + a.peak_seconds
    while time.perf_counter() < end:
        for name, fn in (("torch", lambda: torch.mm(tt, xx.t(), out=out)), ("numpy", lambda: np.matmul(t, x.T))):
            t0, c0 = time.perf_counter(), _cpu()
            fn()
            best[name] = max(best[name], flops / (time.perf_counter() - t0) / 1e9)
            best["cpu"] = max(best["cpu"], flops / max(_cpu() - c0, 1e-6) / 1e9)
    return {"gflops": max(best["torch"], best["numpy"]), "gflops_per_cpu_s": best["cpu"], **best}


def probe_read_store(a) -> dict:
    from curator.store.store import Store
    from curator.store.vectors import read_vectors

    store = Store.open(str(Path(a.work) / "store"))
    return _read_growth(lambda: read_vectors(store, MODEL, "audio").vecs)


def probe_read_npy(a) -> dict:
    return _read_growth(lambda: np.load(Path(a.work) / "audio.npy"))


def probe_read_rounds(a) -> dict:
    """The read ratio, routes interleaved round by round in one process. Fresh multi-GB arrays on this
    VM cost 0.4-2 s at random (the host backs freed guest memory lazily), so one read of each route is
    a lottery; interleaving gives both routes the same spells and the median is robust to them.
    Routes: `np.load` of the vectors; our read of the vectors alone (the same bytes); `read_vectors`,
    which also reads the ids and checks them for duplicates, against `np.load` plus the ids from the
    parquet shards (what a user holding .npy files and an id list would do)."""
    import pyarrow.parquet as pq

    from curator.store.store import Store
    from curator.store.vectors import read_vectors, whole_table

    work, store = Path(a.work), Store.open(str(Path(a.work) / "store"))
    shards = sorted((work / "shards").glob("*.parquet"))

    def npy_and_ids():
        ids = [pq.read_table(s, columns=["id"]).column(0) for s in shards]
        return np.load(work / "audio.npy"), ids

    routes = {
        "npy": lambda: np.load(work / "audio.npy"),
        "ours_vectors": lambda: whole_table(store, MODEL, "audio").read(a.clips),
        "npy_ids": npy_and_ids,
        "ours_read_vectors": lambda: read_vectors(store, MODEL, "audio"),
    }
    seconds: dict[str, list[float]] = {k: [] for k in routes}
    for _ in range(a.read_rounds + 1):  # the first round warms imports and the page cache: dropped
        for name, read in routes.items():
            t0 = time.perf_counter()
            got = read()
            seconds[name].append(time.perf_counter() - t0)
            del got
    out = {}
    for name, times in seconds.items():
        times = sorted(times[1:])
        out[name] = {"min": times[0], "median": times[len(times) // 2], "all": times}
    return {"rounds": a.read_rounds, "gb": a.clips * a.dim * 4 / 1e9, **out}


def _sub(a):
    A = np.array(np.load(Path(a.work) / "audio.npy", mmap_mode="r")[: a.sub_clips])
    T = np.load(Path(a.work) / "text.npy")
    return T, A


def probe_exact_sub(a, top_k: int | None = None) -> dict:
    from curator.match.exact import match_blocks

    T, A = _sub(a)
    tau = json.loads((Path(a.work) / "params.json").read_text())["tau"]
    t0, c0 = time.perf_counter(), _cpu()
    pairs = sum(len(b[0]) for b in match_blocks(T, A, tau, top_k, device="cpu", precision="fp32"))
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "pairs": pairs}


def probe_topk_sub(a) -> dict:
    return probe_exact_sub(a, 50)


def probe_faiss_sub(a) -> dict:
    import faiss

    T, A = _sub(a)
    tau = json.loads((Path(a.work) / "params.json").read_text())["tau"]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0, c0 = time.perf_counter(), _cpu()
    index = faiss.IndexFlatIP(A.shape[1])
    index.add(A)
    pairs = 0
    for i in range(0, len(T), 4096):
        lims, _, _ = index.range_search(T[i:i + 4096], tau)
        pairs += int(lims[-1])
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "pairs": pairs}


def probe_query(a) -> dict:
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curator.store.sql import query
    from curator.store.store import Store

    folder = Path(tempfile.mkdtemp(prefix="q_", dir=a.work))
    rows, rng = a.query_rows, np.random.default_rng(0)
    meta = pa.table({"audio_id": pa.array([f"a:{i:012x}" for i in range(rows)]),
                     "source": pa.array(np.where(np.arange(rows) % 10 == 0, "esc50", "wild")),
                     "duration_s": pa.array(rng.uniform(1, 10, rows))})
    store = Store.open(str(folder / "store"))
    store.append("meta", meta, schema=meta.schema)
    pq.write_table(meta, folder / "meta.parquet")
    sql = "select source, count(*), avg(duration_s) from meta group by source"
    path = (folder / "meta.parquet").as_posix()
    con = duckdb.connect()

    def best(fn, k=7):
        fn()
        times = []
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    ours = best(lambda: query(store, sql))
    duck = best(lambda: duckdb.connect().sql(sql.replace("from meta", f"from '{path}'")).to_arrow_table())
    duck_warm = best(lambda: con.sql(sql.replace("from meta", f"from '{path}'")).to_arrow_table())
    return {"ours_ms": ours * 1e3, "duckdb_ms": duck * 1e3, "duckdb_warm_ms": duck_warm * 1e3, "rows": rows}


def probe_write(a) -> dict:
    import pyarrow.parquet as pq

    from curator.store.store import Store
    from schemas.tables import CANDIDATES

    src = Store.open(str(Path(a.work) / "store"))
    pairs = src.dataset("candidates").to_table(columns=list(CANDIDATES.names), filter="run_id = 'thr'")
    folder = Path(tempfile.mkdtemp(prefix="w_", dir=a.work))
    store = Store.open(str(folder / "store"))
    store.append("candidates", pairs.slice(0, 1))  # LanceDB's import and connection are not the write
    t0 = time.perf_counter()
    store.append("candidates", pairs)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    pq.write_table(pairs, folder / "pairs.parquet")
    plain = time.perf_counter() - t0
    return {"rows": pairs.num_rows, "ours_s": ours, "parquet_s": plain, "mb": pairs.nbytes / 1e6}


PROBES = {"setup": setup, "peak": probe_peak, "read_store": probe_read_store, "read_npy": probe_read_npy,
          "read_rounds": probe_read_rounds,
          "exact_sub": probe_exact_sub, "topk_sub": probe_topk_sub, "faiss_sub": probe_faiss_sub, "query": probe_query, "write": probe_write}
