#!/usr/bin/env python
"""Scale rehearsal: a store of 2,000,000 clips x 1024-d, then every stage through the CLI as a user runs it.

Each stage runs as its own `curator` process; the table records its wall time, CPU seconds, peak RSS
(from `wait4`, so the process's own) and the size of its inputs. The hot-path ratios of the issue are
measured side by side in the same run, each route in its own process:

- vector reads out of the store vs `np.load` of the same bytes (and the reader's peak RSS);
- our exact matching (threshold and top-k) vs the machine's fp32 matmul rate;
- our exact threshold vs faiss `IndexFlatIP.range_search` on the same sub-pool;
- `curator query` over 1 M rows vs DuckDB on the same rows as Parquet;
- writing candidates to the store vs a plain Parquet write of the same pairs.

    python scripts/bench_scale.py                       # 2 M clips: ~40 GB of disk, ~1-2 h on 2 cores
    python scripts/bench_scale.py --clips 2000 --captions 200 --dim 64 --out /tmp/scale.md   # seconds

Setup writes the `audio` / `texts` rows through the library (no CLI makes rows for clips without files)
and the vectors as parquet shards; the model is registered with `curator models add --kind external`
and the vectors come in with `curator import-embeddings` over the folder of shards.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scale_probes import MODEL, PROBES, _cpu, _layout, _rss_gb  # noqa: E402
from scale_report import CLASSES, PROBE_ORDER, report  # noqa: E402

IN_PROCESS = False  # --in-process: stages and probes in this process (fast; for the test suite)
CLI = "import sys; from curator.cli import main; main(sys.argv[1:])"


# -- processes ------------------------------------------------------------------------------------

def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def run_process(cmd: list[str], cwd: Path) -> dict:
    """Run one process; its wall, CPU seconds and peak RSS from wait4 (its own, not the bench's)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=_env())
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
            "rss_gb": ru.ru_maxrss * 1024 / 1e9, "rc": proc.returncode, "output": out}


def run_inline(fn) -> dict:
    """`--in-process` (the test suite's mode): run in this process; RSS is then this process's peak."""
    import contextlib
    import io

    buf, rc = io.StringIO(), 0
    t0, c0 = time.perf_counter(), _cpu()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            result = fn()
            if result is not None:
                print("RESULT " + json.dumps(result))
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "rss_gb": _rss_gb(), "rc": rc,
            "output": buf.getvalue()}


def curator(store: Path, *args) -> dict:
    argv = ["--store", str(store), *map(str, args)]
    if IN_PROCESS:
        from curator.cli import main as cli_main

        res = run_inline(lambda: cli_main(argv))
    else:
        res = run_process([sys.executable, "-c", CLI, *argv], ROOT)
    if res["rc"] != 0:
        raise SystemExit(f"`curator {' '.join(map(str, args))}` failed ({res['rc']}):\n{res['output'][-3000:]}")
    return res


def probe(a, name: str) -> dict:
    cmd = [sys.executable, __file__, "--probe", name, "--work", str(a.work), "--clips", str(a.clips),
           "--captions", str(a.captions), "--dim", str(a.dim), "--match-captions", str(a.match_captions),
           "--sub-clips", str(a.sub_clips), "--query-rows", str(a.query_rows), "--read-rounds", str(a.read_rounds)]
    res = run_inline(lambda: PROBES[name](a)) if IN_PROCESS else run_process(cmd, ROOT)
    lines = [ln for ln in res["output"].splitlines() if ln.startswith("RESULT ")]
    if res["rc"] or not lines:
        raise SystemExit(f"probe {name} failed:\n{res['output'][-3000:]}")
    return {**json.loads(lines[-1][7:]), **{k: res[k] for k in ("wall_s", "cpu_s", "rss_gb")}}


# -- the run --------------------------------------------------------------------------------------

def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def stages(a, p: dict, save=lambda rows: None, after_import=lambda: None) -> list[dict]:
    """Every stage through the CLI; returns rows for the table (`save(rows)` after each,
    `after_import()` once the vectors are in)."""
    work, store = Path(a.work), Path(a.work) / "store"
    tau, tau_ds = p["tau"], p["tau_ds"]
    vec_gb = a.clips * a.dim * 4
    cap_gb = a.match_captions * a.dim * 4
    rows: list[dict] = []

    def stage(name, args, inputs, note=""):
        print(f"[{time.strftime('%H:%M:%S')}] {name}: curator {shlex.join(map(str, args))}", flush=True)
        r = curator(store, *args)
        last = [ln for ln in r["output"].strip().splitlines() if ln.strip()][-1:] or [""]
        rows.append({"stage": name, "cmd": "curator " + shlex.join(map(str, args)), "inputs": inputs, "note": note,
                     **{k: r[k] for k in ("wall_s", "cpu_s", "rss_gb")}, "out": last[0][:160]})
        print(f"    {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} CPU s, {r['rss_gb']:.2f} GB peak RSS", flush=True)
        save(rows)
        return r

    shards = sorted((work / "shards").glob("*.parquet"))
    stage("register model", ["models", "add", MODEL, "--kind", "external", "--dim", a.dim, "--logit-scale", 14.3],
          "(none)", "vectors made elsewhere: no weights")
    stage("import audio vectors", ["import-embeddings", "--model", MODEL, "--modality", "audio", work / "shards"],
          f"{_gb(_size(shards))} parquet in {len(shards)} shards ({a.clips:,} x {a.dim})", "one folder, shard by shard")
    stage("import text vectors", ["import-embeddings", "--model", MODEL, "--modality", "text", work / "texts.parquet"],
          f"{_gb(_size([work / 'texts.parquet']))} parquet ({a.captions + CLASSES:,} x {a.dim})")
    after_import()
    pool = f"{_gb(vec_gb)} of clip vectors + {_gb(cap_gb)} of caption vectors"
    caps = "source = 'clotho'"
    stage("match, threshold (in memory)", ["match", "--model", MODEL, "--threshold", tau, "--texts-where", caps,
                                           "--run", "thr"], pool, f"{a.match_captions:,} captions x {a.clips:,} clips")
    if a.hot_paths:  # only what the ratios need: the whole-stage matching rates and run thr's pairs
        stage("match, top-50 per caption", ["match", "--model", MODEL, "--threshold", tau, "--top-k", 50,
                                            "--texts-where", caps, "--run", "topk"], pool)
        return rows
    stage("match, threshold, streamed", ["match", "--model", MODEL, "--threshold", tau, "--texts-where", caps,
                                         "--max-memory", a.stream_memory, "--run", "stream"], pool,
          f"--max-memory {a.stream_memory}")
    same = stage("query: streamed vs in-memory pairs", ["query", "select count(*) as differing from ("
                 "(select text_id, audio_id, score, rank from candidates where run_id = 'thr' except all "
                 "select text_id, audio_id, score, rank from candidates where run_id = 'stream') union all "
                 "(select text_id, audio_id, score, rank from candidates where run_id = 'stream' except all "
                 "select text_id, audio_id, score, rank from candidates where run_id = 'thr'))", "--format", "csv"],
                 "candidates of both runs")
    rows[-1]["note"] = f"pairs differing: {same['output'].split()[-1]}"
    stage("match, top-50 per caption", ["match", "--model", MODEL, "--threshold", tau, "--top-k", 50,
                                        "--texts-where", caps, "--run", "topk"], pool)
    stage("sweep (5 thresholds)", ["sweep", "--model", MODEL, "--texts-where", caps, "--thresholds",
                                   f"{tau - 0.1:.4f}:{tau + 0.1:.4f}:0.05"], pool)
    stage("build du (top-50)", ["build", "du", "--model", MODEL, "--name", "du", "--threshold", tau, "--top-k", 50,
                                "--pairs-where", caps, "--pool-where", "source = 'wild'"], pool)
    stage("build ds", ["build", "ds", "--model", MODEL, "--name", "ds", "--label-set", "esc", "--threshold", tau_ds],
          f"{a.captions:,} captions x {CLASSES} prompts, paired clips")
    stage("build ads (top-50)", ["build", "ads", "--model", MODEL, "--name", "ads", "--from-set", "ds", "--threshold",
                                 tau, "--top-k", 50, "--pool-where", "source = 'wild'"], f"ds captions x {_gb(vec_gb)}")
    cap = max(10, a.clips // 1000)
    stage("pseudo-label", ["pseudo-label", "--model", MODEL, "--label-set", "esc", "--name", "pl", "--audio-where",
                           "source = 'wild'", "--max-per-class", cap], f"{_gb(vec_gb)} x {CLASSES} classes")
    stage("guard", ["guard", "--model", MODEL, "--pool-where", "source = 'wild'", "--eval-where",
                    "source = 'esc50'"], f"{_gb(vec_gb)} pool x {_layout(a)['eval']:,} eval clips")
    stage("query group-by", ["query", "select source, split, count(*) n, avg(duration_s) s from audio group by all"
                             " order by 1, 2", "--format", "csv"], f"audio: {a.clips:,} rows")
    stage("sets diff", ["sets", "diff", "du@1", "ads@1", "--limit", 0], "two set versions")
    stage("review (1 run)", ["review", "--run", "thr", "--media", 0, "--out", work / "review"],
          "candidates of run thr", "page only; synthetic clips have no audio")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=2_000_000)
    ap.add_argument("--captions", type=int, default=20_000)
    ap.add_argument("--match-captions", type=int, default=None, help="captions matched (default min(2000, captions))")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--pass-fraction", type=float, default=2.5e-4, help="share of pairs above tau (1 M at 2 M x 2 k)")
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--sub-clips", type=int, default=None, help="clips in the faiss comparison (default min(250k, clips))")
    ap.add_argument("--query-rows", type=int, default=None, help="rows for the query ratio (default min(1 M, clips))")
    ap.add_argument("--stream-memory", default="2GB", help="--max-memory of the streamed match")
    ap.add_argument("--peak-seconds", type=float, default=5.0)
    ap.add_argument("--read-rounds", type=int, default=7,
                    help="interleaved rounds of the read ratio (each reads the vectors four times)")
    ap.add_argument("--work", default=None, help="work folder (default: a temp folder, deleted at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out", default="docs/bench/scale.md")
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    ap.add_argument("--in-process", action="store_true",
                    help="run stages and probes in this process (the test suite's mode: no start-up costs; "
                         "peak RSS is then the bench's own)")
    ap.add_argument("--hot-paths", action="store_true",
                    help="only the import, the two match stages and the side-by-side ratios (a short run for a "
                         "quiet window; the full stage table needs the whole run)")
    ap.add_argument("--render", metavar="JSON", help="only write the section from a run's progress.json")
    ap.add_argument("--probe", choices=sorted(PROBES), help=argparse.SUPPRESS)
    a = ap.parse_args()
    global IN_PROCESS
    IN_PROCESS = a.in_process
    a.match_captions = a.match_captions or min(2000, a.captions)
    a.sub_clips = a.sub_clips or min(250_000, a.clips)
    a.query_rows = a.query_rows or min(1_000_000, a.clips)
    if a.probe:
        print("RESULT " + json.dumps(PROBES[a.probe](a)), flush=True)
        return
    if a.render:  # a (possibly cut-short) run's progress.json -> the section
        raw = json.loads(Path(a.render).read_text())
        a.hot_paths = raw["args"].get("hot_paths") == "True"
        for k, v in raw["args"].items():
            if k in ("clips", "captions", "dim", "match_captions", "sub_clips", "query_rows", "read_rounds"):
                setattr(a, k, int(v))
            elif k == "pass_fraction":
                a.pass_fraction = float(v)
        Path(a.out).write_text(report(a, raw["params"], raw["stages"], raw["probes"],
                                      (raw["loads"][0], raw["loads"][-1]), complete="write" in raw["probes"],
                                      in_process=IN_PROCESS))
        print(Path(a.out).read_text())
        return
    made = a.work is None
    a.work = Path(a.work or tempfile.mkdtemp(prefix="bench_scale_"))
    a.work.mkdir(parents=True, exist_ok=True)
    loads = [os.getloadavg()[0]]
    try:
        print(f"[{time.strftime('%H:%M:%S')}] setup in {a.work} (load {loads[0]:.1f})", flush=True)
        probes = {"setup": probe(a, "setup")}
        p = {k: probes["setup"][k] for k in ("tau", "tau_ds")}
        (a.work / "params.json").write_text(json.dumps(p))
        rows: list[dict] = []

        def save(done):
            rows[:] = done
            raw = {"args": {k: str(v) for k, v in vars(a).items()}, "params": p, "stages": rows, "probes": probes,
                   "loads": loads + [os.getloadavg()[0]]}
            (a.work / "progress.json").write_text(json.dumps(raw, default=str, indent=1))
            if a.json:
                Path(a.json).write_text(json.dumps(raw, default=str, indent=1))

        def run_probes(names):
            for name in names:
                print(f"[{time.strftime('%H:%M:%S')}] probe {name}", flush=True)
                probes[name] = probe(a, name)
                print("    " + json.dumps(probes[name]), flush=True)
                save(rows)

        # The ratios first (they need only the imported vectors), so a run cut short still has them.
        stages(a, p, save, lambda: run_probes([n for n in PROBE_ORDER if n != "write"]))
        run_probes(["write"])
        loads.append(os.getloadavg()[0])
        save(rows)
        text = report(a, p, rows, probes, tuple(loads), in_process=IN_PROCESS)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
        print(text)
    finally:
        if made and not a.keep:
            shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
