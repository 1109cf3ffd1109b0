#!/usr/bin/env bash
# The scene workflow (scripts/scenes_demo.sh) over several seeds, then every stage's mean test
# accuracy ± 95 % Student-t interval and the paired per-seed differences that docs/SCENES.md quotes
# (above all R1-flex − R1: FlexMatch class-wise pseudo-label thresholds against one global one).
#
#   bash scripts/scenes_experiment.sh                          # seeds 0 1 2, ./scenes_out
#   bash scripts/scenes_experiment.sh --seeds "3 4" --out /tmp/sc
set -euo pipefail
OUT=./scenes_out
SEEDS="0 1 2"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARIES=()
for seed in $SEEDS; do
  echo "==== seed $seed"
  SEED="$seed" WORK="$OUT/seed_$seed" bash "$HERE/scenes_demo.sh" 2>&1 | tee "$OUT/seed_$seed.log"
  SUMMARIES+=("$OUT/seed_$seed/summary.json")
done
# shellcheck source=scripts/setup_env.sh
source "$HERE/setup_env.sh"
python - "$OUT/aggregate.md" "${SUMMARIES[@]}" <<'PY'
import json, sys
from curator.demo.stats import mean_interval

out, paths = sys.argv[1], sys.argv[2:]
runs = [json.load(open(p)) for p in paths]
stages = list(runs[0]["accuracy"])
acc = {s: [r["accuracy"][s] for r in runs] for s in stages}

def pm(xs):
    ci = mean_interval(xs)
    return f"{100 * ci['mean']:.1f}" + (f" ± {100 * ci['half']:.1f}" if ci["half"] is not None else "")

lines = [f"# Scenes over seeds {', '.join(str(r['seed']) for r in runs)}", "",
         "| stage | test accuracy (%), mean ± 95 % CI | per seed |", "|---|---|---|"]
lines += [f"| {s} | {pm(acc[s])} | {' / '.join(f'{100 * x:.1f}' for x in acc[s])} |" for s in stages]
lines += ["", "| paired difference | points, mean ± 95 % CI | held on |", "|---|---|---|"]
for a, b in (("R1-flex", "R1"), ("R1-quant", "R1"), ("R1", "B"), ("R1-flex", "B"), ("R1-quant", "B"), ("B", "A"),
             ("C", "B")):
    d = [x - y for x, y in zip(acc[a], acc[b])]
    lines.append(f"| {a} − {b} | {pm(d)} | {sum(x > 0 for x in d)}/{len(d)} seeds |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
