#!/usr/bin/env bash
# The miniature experiment of docs/EXPERIMENT.md: the demo for seeds 0, 1, 2, then mean ± std.
#
#   bash scripts/experiment.sh                   # small scale, writes ./experiment_out
#   bash scripts/experiment.sh --out /tmp/exp --seeds "0 1 2 3 4" --scale tiny
#
# Each seed is a full `scripts/demo.sh` run in OUT/seed_<S> (a new corpus, teacher and students);
# `curator demo report --aggregate` folds their report.json files into OUT/aggregate.md.
set -euo pipefail
OUT=./experiment_out
SEEDS="0 1 2"
SCALE=small
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --scale) SCALE="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
DIRS=()
for seed in $SEEDS; do
  echo "==== seed $seed"
  bash "$HERE/demo.sh" --seed "$seed" --scale "$SCALE" --out "$OUT/seed_$seed" 2>&1 | tee "$OUT/seed_$seed.log"
  DIRS+=("$OUT/seed_$seed")
done
if [ "${CURATOR_DEMO_NO_SETUP:-0}" != 1 ]; then
  # shellcheck source=scripts/setup_env.sh
  source "$HERE/setup_env.sh"
fi
curator demo report --aggregate "${DIRS[@]}" --out "$OUT"
