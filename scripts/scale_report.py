"""The Markdown section `scripts/bench_scale.py` writes: the stage table and the hot-path ratios
against their targets, from a run's figures (also re-rendered from a saved run: `--render JSON`)."""

from __future__ import annotations

import os
import platform

CLASSES = 50
N_STAGES = 16
PROBE_ORDER = ("peak", "read_store", "read_npy", "read_rounds", "exact_sub", "topk_sub", "faiss_sub", "query", "write")


def _div(x: float, y: float) -> float:
    return x / max(y, 1e-9)


def _command(a) -> str:
    opts = [("--clips", a.clips), ("--captions", a.captions), ("--dim", a.dim), ("--match-captions", a.match_captions),
            ("--pass-fraction", a.pass_fraction), ("--sub-clips", a.sub_clips), ("--query-rows", a.query_rows),
            ("--read-rounds", a.read_rounds)]
    return "python scripts/bench_scale.py " + " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in opts) + (" --hot-paths" if a.hot_paths else "")


def _read_row(what: str, ours: str, o: dict, alt: str, n: dict, gb: float, target: str) -> str:
    """A read ratio row: GB/s at the median and the best of the interleaved rounds; ratio of medians
    (and of the best reads)."""
    return (f"| {what} | {ours} {_div(gb, o['median']):.2f} GB/s median, {_div(gb, o['min']):.2f} best | {alt} "
            f"{_div(gb, n['median']):.2f} GB/s median, {_div(gb, n['min']):.2f} best | {_div(n['median'], o['median']):.2f}x "
            f"(best reads {_div(n['min'], o['min']):.2f}x) | {target} |")


def report(a, p: dict, rows: list[dict], probes: dict, loads: tuple, complete: bool = True,
           in_process: bool = False) -> str:
    flops = 2.0 * a.match_captions * a.clips * a.dim
    peak = probes["peak"]
    by = {r["stage"]: r for r in rows}
    title = ("## Hot paths, side by side (`scripts/bench_scale.py --hot-paths`)" if a.hot_paths
             else "## Scale rehearsal (`scripts/bench_scale.py`)")
    shared = (" (the machine was shared with other jobs: absolute times are bent by their load, the ratios "
              "measured side by side less so)") if max(loads) > 2 else " (nothing else was running)"
    lines = [
        title, "",
        f"`{_command(a)}`: {a.clips:,} clips x "
        f"{a.dim}-d clustered unit vectors ({CLASSES} classes), {a.captions:,} captions, a {CLASSES}-class label set; "
        f"matching uses {a.match_captions:,} captions (tau {p['tau']}, ~{a.pass_fraction:g} of pairs). "
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, {_ram_gb():.0f} GB RAM, Python "
        f"{platform.python_version()}. Load average (1 min) {loads[0]:.1f} at the start, {loads[1]:.1f} at the end"
        f"{shared}.", "",
        "Setup (library, not a user's stage: the `audio` / `texts` rows, as no CLI makes rows for clips without "
        "files, and the vectors as parquet shards): "
        f"{probes['setup']['wall_s']:.0f} s wall, {probes['setup']['cpu_s']:.0f} CPU s, "
        f"{probes['setup']['rss_gb']:.2f} GB peak RSS.", "",
        "| stage | wall s | CPU s | peak RSS GB | input | note |", "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['rss_gb']:.2f} | {r['inputs']} | "
                     f"{r['note']} |")
    if a.hot_paths:
        lines.append("| *--hot-paths run: the other stages were not run* | | | | | |")
    elif not complete:
        lines.append(f"| *run cut short: {N_STAGES - len(rows)} more stage(s) not reached* | | | | | |")
    lines += ["", "<details><summary>commands</summary>", ""]
    lines += [f"- {r['stage']}: `{r['cmd']}`" for r in rows]
    lines += ["", "</details>", ""]
    if not all(k in probes for k in PROBE_ORDER if k != "write"):
        missing = [k for k in PROBE_ORDER if k not in probes]
        return "\n".join(lines) + f"\nHot-path probes not run (run cut short): {', '.join(missing)}.\n"
    rs, rn, rr = probes["read_store"], probes["read_npy"], probes["read_rounds"]
    ex, tk, fa = probes["exact_sub"], probes["topk_sub"], probes["faiss_sub"]
    sub_flops = 2.0 * a.match_captions * a.sub_clips * a.dim

    def sub_pct(r):
        if not r:
            return "not run"
        return (f"{_div(sub_flops / 1e9, r['seconds']):.0f} GFLOP/s wall = "
                f"{100 * _div(sub_flops / 1e9, r['seconds'] * peak['gflops']):.0f} % of peak; "
                f"{_div(sub_flops / 1e9, r['cpu']):.0f} GFLOP per CPU-s = "
                f"{100 * _div(sub_flops / 1e9, r['cpu'] * peak['gflops_per_cpu_s']):.0f} %")

    q, w = probes["query"], probes.get("write")

    def pct(stage):
        if stage not in by:
            return "not run"
        r = by[stage]
        return (f"{_div(flops / 1e9, r['wall_s']):.0f} GFLOP/s wall = {100 * _div(flops / 1e9, r['wall_s'] * peak['gflops']):.0f} % "
                f"of peak; {_div(flops / 1e9, r['cpu_s']):.0f} GFLOP per CPU-s = "
                f"{100 * _div(flops / 1e9, r['cpu_s'] * peak['gflops_per_cpu_s']):.0f} %")

    lines += [
        "Hot paths, side by side in this run (" + ("in one process: --in-process" if in_process else
                                                   "each route its own process; the read ratios from "
                                                   f"{rr['rounds']} rounds with the routes interleaved in one process") + "):", "",
        "| what | ours | alternative | ratio | target |", "|---|---|---|---|---|",
        _read_row(f"vector reads, {rr['gb']:.2f} GB (page cache), the vectors alone", "our read",
                  rr["ours_vectors"], "`np.load`", rr["npy"], rr["gb"], ">= 0.8x"),
        _read_row("the same with the ids (duplicate check included)", "`read_vectors`", rr["ours_read_vectors"],
                  "`np.load` + ids from the parquet shards", rr["npy_ids"], rr["gb"], "measured"),
        f"| peak RSS a read adds (first read, own process) | `read_vectors` {rs['peak_gb']:.2f} GB "
        f"({_div(rs['peak_gb'], rs['gb']):.2f}x the vectors) | `np.load` {rn['peak_gb']:.2f} GB | | <= 1.2x |",
        f"| exact threshold, whole stage (read + match + write), vs fp32 matmul peak ({peak['gflops']:.0f} GFLOP/s, "
        f"{peak['gflops_per_cpu_s']:.0f} per CPU-s) | {pct('match, threshold (in memory)')} | | | |",
        f"| exact top-50, whole stage | {pct('match, top-50 per caption')} | | | |",
        f"| matching alone, {a.match_captions:,} x {a.sub_clips:,} clips in memory: exact threshold | {sub_pct(ex)} "
        f"| | | |",
        f"| matching alone: exact top-50 | {sub_pct(tk)} | | | >= 80 % |",
        f"| exact threshold vs faiss `IndexFlatIP.range_search`, {a.match_captions:,} x {a.sub_clips:,} clips | "
        f"{ex['seconds']:.1f} s ({ex['cpu']:.1f} CPU s), {ex['pairs']:,} pairs | {fa['seconds']:.1f} s "
        f"({fa['cpu']:.1f} CPU s), {fa['pairs']:,} pairs | {_div(fa['seconds'], ex['seconds']):.2f}x wall, "
        f"{_div(fa['cpu'], ex['cpu']):.2f}x CPU | >= 1.0x |",
        f"| `curator query` group-by over {q['rows']:,} rows (open store + views + run) | {q['ours_ms']:.0f} ms | "
        f"DuckDB on the same rows as Parquet, new connection {q['duckdb_ms']:.0f} ms (warm {q['duckdb_warm_ms']:.0f}) | "
        f"{_div(q['ours_ms'], q['duckdb_ms']):.2f}x the time | <= 2x |",
        _write_row(w),
        "",
    ]
    return "\n".join(lines) + "\n"


def _write_row(w: dict | None) -> str:
    if not w:
        return "| write the candidate pairs of run thr | not run (run cut short) | | | measured |"
    return (f"| write {w['rows']:,} candidate pairs ({w['mb']:.0f} MB in Arrow) | store append "
            f"{_div(w['rows'] / 1e6, w['ours_s']):.2f} M rows/s ({w['ours_s']:.2f} s) | `pq.write_table` "
            f"{_div(w['rows'] / 1e6, w['parquet_s']):.2f} M rows/s ({w['parquet_s']:.2f} s) | "
            f"{_div(w['parquet_s'], w['ours_s']):.2f}x | measured |")


def _ram_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
