#!/usr/bin/env bash
# What only a GPU can show, in one run (< 8 minutes on one H100): full-size ClapModel embedding
# clips/s against the Hugging Face extractor path, paper-scale bf16 + re-check matching from the store
# to the candidates table with the decisions that differ from fp32 (must be 0), and bf16 training
# samples/s with nvidia-smi utilisation. Writes docs/bench/gpu.md (then: python scripts/merge_bench.py).
#
#   bash scripts/device_check.sh               # on a machine with a CUDA GPU
#   bash scripts/device_check.sh --cpu --tiny  # the same code paths at toy sizes on the CPU (the tests run this)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false \
       HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-python}"
if [[ " $* " != *" --cpu "* ]]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec timeout "${DEVICE_CHECK_TIMEOUT:-480}" "$PY" scripts/device_check.py "$@"
