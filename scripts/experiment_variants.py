"""Tuning only: extra student rows on finished `scripts/demo.sh` folders, to choose a setting on the
tuning seeds before the confirmation run (docs/EXPERIMENT.md, "Tuning").

Each variant is one student trained from the folder's teacher with the demo's budget (20 steps,
batch 32, lr 2e-4, the seed of the folder), through the public CLIs, and evaluated zero-shot on
the folder's eval split exactly like the demo's rows. Prints every row's mean ± 95 % interval over
the folders and the paired difference of each variant against the demo rows it would replace.

    python scripts/experiment_variants.py experiment_out/tuning/seed_{0,1,2,3,4}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from curator.demo.stats import mean_interval

# name: (set, replay set or None, replay ratio, loss, the demo row it would replace)
VARIANTS = {
    "ADS+SL, replay 0.5": ("ads", "ds", 0.5, "soft", "ADS+SL"),
    "ADS-bal+SL, replay 0.5": ("ads_bal", "ds", 0.5, "soft", "ADS-bal+SL"),
    "ADS+SL, replay teacher pairs 0.5": ("ads", "replay", 0.5, "soft", "ADS+SL"),
    "ADS-bal+SL, replay teacher pairs 0.5": ("ads_bal", "replay", 0.5, "soft", "ADS-bal+SL"),
}
COMPARE = ("Teacher", "SL", "ADS+SL", "ADS-bal+SL")
STUDENT = ["--steps", "20", "--batch-size", "32", "--lr", "2e-4", "--log-every", "5"]
EVAL_WHERE = "split = 'eval'"


def _run(cmd: list[str], store: Path) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CURATOR_STORE": str(store)})
    if res.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{res.stderr.strip()}")
    return res.stdout


def variant_accuracy(demo: Path, name: str, spec: tuple, seed: int) -> float:
    set_name, replay, ratio, loss, _ = spec
    out = demo / "runs" / ("variant_" + "".join(c if c.isalnum() else "_" for c in name))
    evals = out / "eval.json"
    if not evals.exists():
        cmd = ["trainer", "fit", "--set", set_name, "--loss", loss, "--init", str(demo / "runs" / "teacher"),
               *STUDENT, "--seed", str(seed), "--out", str(out)]
        if replay:
            cmd += ["--replay", replay, "--replay-ratio", str(ratio)]
        _run(cmd, demo / "store")
        text = _run(["trainer", "eval", "--model", str(out), "--label-set", "demo", "--audio-where", EVAL_WHERE,
                     "--json"], demo / "store")
        evals.write_text(text)
    return json.loads(evals.read_text())["zero_shot"]["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="finished demo.sh --out folders")
    a = ap.parse_args()
    rows: dict[str, list[float]] = {}
    for demo in a.folders:
        report = json.loads((demo / "report" / "report.json").read_text())
        seed = report.get("seed", 0)
        for m in report["models"]:
            if m["label"] in COMPARE:
                rows.setdefault(m["label"], []).append(m["accuracy"])
        for name, spec in VARIANTS.items():
            acc = variant_accuracy(demo, name, spec, seed)
            rows.setdefault(name, []).append(acc)
            print(f"{demo.name}: {name} {100 * acc:.1f}", flush=True)

    def pm(xs):
        ci = mean_interval(xs)
        return f"{100 * ci['mean']:.1f}" + (f" ± {100 * ci['half']:.1f}" if ci["half"] is not None else "")

    print("\n| row | zero-shot acc (%), mean ± 95 % CI | per seed |\n|---|---|---|")
    for name, xs in rows.items():
        print(f"| {name} | {pm(xs)} | {' / '.join(f'{100 * x:.1f}' for x in xs)} |")
    print("\n| paired difference | points, mean ± 95 % CI | held on |\n|---|---|---|")
    pairs = [(name, other) for name, spec in VARIANTS.items() for other in (spec[4], "SL", "Teacher")]
    for a_name, b_name in pairs + [("ADS-bal+SL", "SL"), ("ADS-bal+SL", "ADS+SL")]:
        d = [x - y for x, y in zip(rows[a_name], rows[b_name])]
        print(f"| {a_name} − {b_name} | {pm(d)} | {sum(x > 0 for x in d)}/{len(d)} |")

if __name__ == "__main__":
    main()
