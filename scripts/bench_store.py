"""Store benchmarks: ingest rows/s, 1 M-row vector table write, DuckDB latency on 1 M rows.

Each number is measured side by side with what a user would otherwise do in the same run:
ingest (header + hash) vs decoding every file; LanceDB vector write vs a Parquet write;
DuckDB over the Lance table vs over the same data as Parquet.

    python scripts/bench_store.py [--clips 10000] [--rows 1000000] [--out docs/bench/store.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.ingest.audio import ingest_audio  # noqa: E402
from curator.ingest.sources import scan_folder
from curator.store.sql import query  # noqa: E402
from curator.store.store import Store  # noqa: E402
from schemas.tables import embeddings  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def make_clips(folder: Path, n: int, seconds: float = 1.0, sr: int = 16000, suffix: str = "wav") -> None:
    rng = np.random.default_rng(0)
    base = (0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
    for i in range(n):
        sub = folder / f"d{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"clip{i:05d}.{suffix}", np.roll(base, i), sr)


def bench_ingest(work: Path, n: int, seconds: float, suffix: str) -> list[str]:
    clips = work / f"clips_{suffix}"
    make_clips(clips, n, seconds, suffix=suffix)
    store = Store.open(str(work / "store_ingest"))
    t_ingest, report = timed(lambda: ingest_audio(store, scan_folder(clips, "bench")))
    t_again, _ = timed(lambda: ingest_audio(store, scan_folder(clips, "bench")))
    files = sorted(clips.rglob(f"*.{suffix}"))
    import hashlib

    # What a script without header reads would do: decode each file fully, and hash it.
    t_decode, _ = timed(lambda: [(sf.read(f)[0].shape, hashlib.sha1(f.read_bytes()).hexdigest()) for f in files])
    return [
        f"| ingest {n:,} {seconds:g}-second {suffix.upper()} clips (header + sha1 + write) | {n / t_ingest:,.0f} clips/s | {t_ingest:.2f} s |",
        f"| re-ingest the same folder (adds {report.added - n} rows) | {n / t_again:,.0f} clips/s | {t_again:.2f} s |",
        f"| alternative: decode every file fully with soundfile + sha1 (no write) | {n / t_decode:,.0f} clips/s | {t_decode:.2f} s |",
    ]


def bench_vectors(work: Path, rows: int, dim: int = 512) -> list[str]:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((rows, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = pa.array([f"a:{i:012x}" for i in range(rows)])
    table = pa.table({"audio_id": ids, "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), dim)},
                     schema=embeddings("audio_id", dim))
    store = Store.open(str(work / "store_vec"))
    t_lance, _ = timed(lambda: store.append("emb_bench_audio", table, schema=table.schema))
    t_parquet, _ = timed(lambda: pq.write_table(table, work / "vec.parquet", compression="none"))
    gb = vecs.nbytes / 1e9
    lines = [
        f"| write {rows:,} × {dim}-d float32 vectors to LanceDB | {rows / t_lance:,.0f} rows/s ({gb / t_lance:.2f} GB/s) | {t_lance:.2f} s |",
        f"| alternative: the same table to Parquet (pyarrow, uncompressed) | {rows / t_parquet:,.0f} rows/s ({gb / t_parquet:.2f} GB/s) | {t_parquet:.2f} s |",
    ]
    meta = pa.table({"audio_id": ids, "source": pa.array(np.where(np.arange(rows) % 10 == 0, "esc50", "wild")),
                     "duration_s": pa.array(rng.uniform(1, 10, rows))})
    store.table("meta", meta.schema).add(meta)
    pq.write_table(meta, work / "meta.parquet")
    sql = "select source, count(*), avg(duration_s) from meta group by source"
    query(store, sql)  # warm
    t_q = min(timed(lambda: query(store, sql))[0] for _ in range(5))
    import duckdb

    con = duckdb.connect()
    path = (work / "meta.parquet").as_posix()
    t_pq = min(timed(lambda: con.sql(sql.replace("from meta", f"from '{path}'")).to_arrow_table())[0] for _ in range(5))
    lookup = "select count(*) from meta where audio_id = 'a:0000000003e8'"
    t_l = min(timed(lambda: query(store, lookup))[0] for _ in range(5))
    lines += [
        f"| `curator query` group-by over a {rows:,}-row table (open store + register views + run) | {t_q * 1e3:.0f} ms | |",
        f"| alternative: DuckDB on the same rows as a Parquet file | {t_pq * 1e3:.0f} ms | |",
        f"| `curator query` point lookup by audio_id over {rows:,} rows | {t_l * 1e3:.0f} ms | |",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--flac-clips", type=int, default=2000, help="also ingest this many 10 s FLAC clips")
    ap.add_argument("--out", default="docs/bench/store.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        lines = ["## Store (`scripts/bench_store.py`)", "",
                 f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
                 f"{platform.python_version()}; temp folder on local disk.", "",
                 "| what | rate | time |", "|---|---|---|"]
        lines += bench_ingest(work, args.clips, 1.0, "wav")
        if args.flac_clips:
            # Compressed, longer clips are where header-only reads pay: decoding is the cost there.
            lines += bench_ingest(work, args.flac_clips, 10.0, "flac")
        lines += bench_vectors(work, args.rows)
        text = "\n".join(lines) + "\n"
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
