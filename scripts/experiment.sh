#!/usr/bin/env bash
# The miniature experiment of docs/EXPERIMENT.md: the demo over several seeds, then every row's
# mean ± 95 % t-interval and each claim's paired difference (`curator demo report --aggregate`).
#
#   bash scripts/experiment.sh                    # tuning run: seeds 0-4, small scale, ./experiment_out/tuning
#   bash scripts/experiment.sh --confirm          # confirmation run: seeds 5-9, ./experiment_out/confirm
#   bash scripts/experiment.sh --seeds "0 1" --scale tiny --out /tmp/exp --teacher-fraction 0.5
#
# Honest procedure: choose every setting (corpus, thresholds, budgets, K) on the tuning seeds 0-4
# only; then run the confirmation seeds 5-9 once, unchanged, and report both runs separately.
# Each seed is a full `scripts/demo.sh` run in OUT/<run>/seed_<S> (a new corpus, teacher, students).
set -euo pipefail
OUT=./experiment_out
SEEDS=""
RUN=tuning
SCALE=small
DEMO_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; RUN=custom; shift 2 ;;
    --confirm) RUN=confirm; shift ;;
    --scale) SCALE="$2"; shift 2 ;;
    --teacher-fraction) DEMO_ARGS+=(--teacher-fraction "$2"); shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$SEEDS" ]; then
  case "$RUN" in
    tuning) SEEDS="0 1 2 3 4" ;;
    confirm) SEEDS="5 6 7 8 9" ;;
  esac
elif [ "$RUN" = confirm ]; then
  echo "error: --confirm runs the fixed confirmation seeds 5-9; do not combine it with --seeds" >&2
  exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$OUT/$RUN"
OUT="$(cd "$OUT/$RUN" && pwd)"
echo "run: $RUN; seeds: $SEEDS; scale: $SCALE; out: $OUT"
DIRS=()
for seed in $SEEDS; do
  echo "==== seed $seed"
  bash "$HERE/demo.sh" --seed "$seed" --scale "$SCALE" --out "$OUT/seed_$seed" "${DEMO_ARGS[@]}" 2>&1 \
    | tee "$OUT/seed_$seed.log"
  DIRS+=("$OUT/seed_$seed")
done
if [ "${CURATOR_DEMO_NO_SETUP:-0}" != 1 ]; then
  # shellcheck source=scripts/setup_env.sh
  source "$HERE/setup_env.sh"
fi
curator demo report --aggregate "${DIRS[@]}" --out "$OUT"
