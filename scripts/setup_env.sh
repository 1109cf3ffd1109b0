# Sourced by demo.sh and test.sh: create .venv if missing and install the project into it.
# Installs the exact versions pinned in constraints.txt (refresh: bash scripts/refresh_constraints.sh).
# Re-installs only when pyproject.toml or constraints.txt changed (a stamp file holds their hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
STAMP=.venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
if [ ! -f "$STAMP" ]; then
  echo "== installing the project into .venv from constraints.txt (first time: torch + torchaudio take a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  # Only open_clip's loss.py is used (as the reference for our CLAP loss); its torchvision/timm deps are not.
  .venv/bin/python -m pip install --quiet --no-deps -c constraints.txt "open_clip_torch>=3.0"
  rm -f .venv/.installed-*
  touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
