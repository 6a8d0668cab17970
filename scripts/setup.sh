#!/usr/bin/env bash
# Create .venv and install loraclf with what it needs; quick when everything is already there.
# torch: the CPU build (2.13.0) unless a torch is already installed (GPU users install their CUDA build first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
stamp=.venv/.loraclf-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
# Some machines' pip configuration names index folders that do not exist; pip then warns once per package.
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }; }
python -c "import torch" 2>/dev/null || quiet pip install --quiet "torch==2.13.0"
quiet pip install --quiet -e ".[dev,offline-models,serve,docs]"
echo "$want" > "$stamp"
