#!/usr/bin/env bash
# The README's main job: set up what is missing, train the offline MiniLM recipe on AG News, evaluate on the test file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
DATA=${LORACLF_DATA:-../shared/data}
OUT=${OUT:-runs/minilm-agnews-$(date +%Y%m%d-%H%M%S)}
loraclf train --config recipes/minilm-cpu.yaml --train "$DATA/ag_news/train.csv" --out "$OUT"
echo
echo "== held-out test set: $DATA/ag_news/test.csv =="
loraclf evaluate "$OUT" --data "$DATA/ag_news/test.csv"
loraclf predict "$OUT" --input "$DATA/ag_news/ood_unlabeled.csv" --output "$OUT/ood_predictions.csv"
echo "run folder: $OUT"
