"""Demo-corpus benchmark: time to generate each scale (and the scene corpus) on one core.

Budgets: tiny < 10 s (tests / CI), small < 60 s (a CPU demo). Reports wall time and this process's
CPU time (on a shared machine wall time includes waiting for a core; CPU time is what one free
core would need), clips/s and bytes written.

    python scripts/bench_demo.py [--scales tiny,small] [--scenes 200] [--out docs/bench/demo.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.demo import CorpusConfig, generate_corpus, generate_scenes  # noqa: E402
from curator.demo.corpus import total_clips  # noqa: E402

BUDGET_S = {"tiny": 10.0, "small": 60.0}


def measure(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="tiny,small")
    ap.add_argument("--scenes", type=int, default=200, help="scene clips (3 s each); 0 to skip")
    ap.add_argument("--out", default="docs/bench/demo.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in [s for s in args.scales.split(",") if s]:
            cfg = CorpusConfig.for_scale(scale, seed=0)
            target = Path(tmp) / scale
            wall, cpu = measure(lambda: generate_corpus(target, cfg))
            n = total_clips(cfg)
            rows.append((f"corpus {scale}", n, wall, cpu, folder_bytes(target), BUDGET_S.get(scale)))
            print(rows[-1], flush=True)
        if args.scenes:
            target = Path(tmp) / "scenes"
            wall, cpu = measure(lambda: generate_scenes(target, args.scenes, 0.1, seed=0, seconds=3.0))
            rows.append((f"scenes ({args.scenes} × 3 s)", args.scenes, wall, cpu, folder_bytes(target), None))
            print(rows[-1], flush=True)
    lines = [
        "## Demo corpus generation",
        "",
        f"`python scripts/bench_demo.py` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared), numpy single-threaded, one process.",
        "",
        "| corpus | clips | wall s | CPU s | clips/s (CPU) | MB written | budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, n, wall, cpu, size, budget in rows:
        verdict = "" if budget is None else f"< {budget:.0f} s: {'met' if cpu < budget else 'MISSED'}"
        lines.append(f"| {name} | {n} | {wall:.1f} | {cpu:.1f} | {n / max(cpu, 1e-9):.0f} | {size / 1e6:.1f} | {verdict} |")
    lines += ["", "CPU s is the process's CPU time (what one free core needs); wall s includes waiting for a core.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
