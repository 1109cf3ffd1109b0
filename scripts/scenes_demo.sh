#!/usr/bin/env bash
# City/time-aware semi-supervised scene classification, end to end, with the public CLIs only
# (docs/SCENES.md explains each step). CPU-sized: ~3-4 min on a quiet 2-core machine.
#
#   scripts/scenes_demo.sh                    # seed 0, work folder ./scenes_demo
#   SEED=3 WORK=/tmp/sd scripts/scenes_demo.sh
#
# Stages, each evaluated on a held-out, fully labelled test corpus:
#   A  audio-only classifier on the 10 % labelled clips          (--loss hybrid --lambda 0)
#   B  hybrid: classifier + 0.1 x contrastive vs context caption  (--loss hybrid --lambda 0.1)
#   C  B + metadata fusion (city embedding + time MLP)            (--fuse-metadata)
#   R1 pseudo-label the unlabelled clips with B, fine-tune B on labelled + pseudo-labelled clips
#   R1-flex  the same round with FlexMatch class-wise thresholds (--per-class-threshold flexmatch)
#   R1-quant the same round with quantile class-wise thresholds (--per-class-threshold quantile)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

SEED=${SEED:-0}
WORK=${WORK:-./scenes_demo}
CLIPS=${CLIPS:-1000}          # training corpus; 10 % of it labelled
TEST_CLIPS=${TEST_CLIPS:-300}
EPOCHS0=${EPOCHS0:-15}        # round 0: ~100 labelled rows
EPOCHS1=${EPOCHS1:-2}         # round 1: labelled + pseudo-labelled rows (balanced: ~1000+), from B's towers
MIN_CONF=${MIN_CONF:-0.9}
# Pseudo-labels at p >= 0.9 are ~98 % right but come almost only from the classes the model was
# already sure of; every fit therefore oversamples classes to equal counts (docs/SCENES.md).
STUDENT='{"dim": 64, "window_s": 1.0, "n_fft": 512, "hop_length": 320, "n_mels": 32, "channels": [16, 32],
          "transformer_layers": 1, "heads": 2, "freeze_layers": 5, "dropout": 0.0}'

rm -rf "$WORK"
mkdir -p "$WORK/runs"
export CURATOR_STORE="$WORK/store"
T0=$(date +%s)
declare -A ACC

stage() { echo; echo "== $*"; }
fit() {  # fit OUT SET [extra options...]
  local out=$1 set=$2; shift 2
  trainer fit --loss hybrid --classes scenes --set "$set" --student-config "$STUDENT" --batch-size 16 \
    --lr 1e-3 --warmup-steps 10 --seed "$SEED" --cache-mb 512 --log-every 20 --balance-classes \
    --out "$WORK/runs/$out" "$@"
}
evaluate() {  # evaluate NAME [extra options...]: accuracy on the held-out test corpus
  local name=$1; shift
  trainer eval --classifier "$WORK/runs/$name" --audio-where "source = 'scenes_test'" "$@" | tee "$WORK/eval_$name.txt"
  ACC[$name]=$(sed -n 's/^classifier: accuracy \([0-9.]*\).*/\1/p' "$WORK/eval_$name.txt")
}

stage "corpus: $CLIPS training clips (10 % labelled) and $TEST_CLIPS test clips, seed $SEED"
curator demo scenes "$WORK/train" --clips "$CLIPS" --labelled-fraction 0.1 --seed "$SEED" --seconds 2
curator demo scenes "$WORK/test" --clips "$TEST_CLIPS" --labelled-fraction 1.0 --seed "$((SEED + 1000))" --seconds 2
curator ingest audio "$WORK/train/scenes.csv" --source scenes
curator ingest audio "$WORK/test/scenes.csv" --source scenes_test
curator ingest labels --label-set scenes --labels "$WORK/train/labels.txt"
curator query "select part_of_day, count(*) as clips, count(*) filter (where len(labels) > 0) as labelled
               from audio_context where source = 'scenes' group by 1 order by 1"

stage "round 0: the labelled clips as a set"
curator build labelled --name scenes_lab --label-set scenes --audio-where "source = 'scenes'"

stage "A: audio-only classifier (lambda 0)"
fit audio_only scenes_lab --lambda 0 --epochs "$EPOCHS0"
evaluate audio_only

stage "B: hybrid loss, context caption '{label}, recorded in {city} in the {part_of_day}' (lambda 0.1)"
fit hybrid_r0 scenes_lab --lambda 0.1 --epochs "$EPOCHS0"
evaluate hybrid_r0

stage "C: hybrid + metadata fusion"
fit fused_r0 scenes_lab --lambda 0.1 --fuse-metadata --epochs "$EPOCHS0"
evaluate fused_r0

stage "round 1: pseudo-label the unlabelled clips with B"
curator models add clf_r0 --kind checkpoint "$WORK/runs/hybrid_r0"
curator embed --model clf_r0 --audio --where "source = 'scenes'"
curator embed --model clf_r0 --texts --where "label_set = 'scenes'"
declare -A PL
round1() {  # round1 KEY SUFFIX [pseudo-label options...]: label the unlabelled clips with B, union them
  # with the labelled set, fine-tune B on it, evaluate (and check the labels against ground truth)
  local key=$1 sfx=$2; shift 2
  curator pseudo-label --model clf_r0 --classifier "$WORK/runs/hybrid_r0" --label-set scenes --name "scenes_pl$sfx" \
    --min-confidence "$MIN_CONF" --audio-where "source = 'scenes' and len(labels) = 0" "$@"
  curator build union --name "scenes_r1$sfx" --from scenes_lab --from "scenes_pl$sfx"
  fit "hybrid_r1$sfx" "scenes_r1$sfx" --lambda 0.1 --epochs "$EPOCHS1" --init "$WORK/runs/hybrid_r0"
  evaluate "hybrid_r1$sfx" --truth "$WORK/train/ground_truth.csv" --pseudo-set "scenes_pl$sfx"
  PL[$key]=$(sed -n 's/^pseudo-labels of \([^:]*\): \([0-9]*\)\/\([0-9]*\) right.*/\2 of \3 (\1)/p' "$WORK/eval_hybrid_r1$sfx.txt")
}
round1 global ""

stage "round 1 with class-wise thresholds: FlexMatch lowers the bar of the classes B is rarely sure of"
round1 flex _flex --per-class-threshold flexmatch

stage "round 1 with class-wise quantile thresholds: every class keeps the global τ's acceptance rate"
round1 quant _quant --per-class-threshold quantile

stage "lineage of the round-1 training set"
curator sets show scenes_r1

stage "summary (seed $SEED, test accuracy on $TEST_CLIPS held-out clips, $(( $(date +%s) - T0 )) s)"
printf '  %-52s %s\n' "A  audio-only (labelled)" "${ACC[audio_only]}" \
  "B  hybrid + context text (labelled)" "${ACC[hybrid_r0]}" \
  "C  hybrid + metadata fusion (labelled)" "${ACC[fused_r0]}" \
  "R1 hybrid, labelled + pseudo-labelled" "${ACC[hybrid_r1]}" \
  "R1-flex the same, FlexMatch class-wise thresholds" "${ACC[hybrid_r1_flex]}" \
  "R1-quant the same, quantile class-wise thresholds" "${ACC[hybrid_r1_quant]}"
echo "  pseudo-labels right: ${PL[global]} (global); ${PL[flex]} (FlexMatch); ${PL[quant]} (quantile)"
# The same figures as JSON, for scripts/scenes_experiment.sh to fold over seeds.
python -c 'import json, sys; seed, out, *kv = sys.argv[1:]
acc = {k: float(v) for k, v in zip(kv[::2], kv[1::2])}
json.dump({"seed": int(seed), "accuracy": acc}, open(out, "w"), indent=1)' "$SEED" "$WORK/summary.json" \
  A "${ACC[audio_only]}" B "${ACC[hybrid_r0]}" C "${ACC[fused_r0]}" R1 "${ACC[hybrid_r1]}" R1-flex "${ACC[hybrid_r1_flex]}" \
  R1-quant "${ACC[hybrid_r1_quant]}"
for sfx in "" _flex _quant; do curator sets show "scenes_pl$sfx"; done
