#!/usr/bin/env bash
# The README's main job: set up what is missing, train the offline MiniLM recipe on AG News, evaluate on the test file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
# $LORACLF_DATA, else ../shared/data, else AG News from the Hugging Face hub into data/ (one line and exit 2 offline)
DATA=$(env -u HF_HUB_OFFLINE -u HF_DATASETS_OFFLINE python -m loraclf.data.hub_fetch data)
OUT=${OUT:-runs/minilm-agnews-$(date +%Y%m%d-%H%M%S)}
# One recipe for every machine, under a time budget: loraclf times a few steps on this CPU and plans the steps,
# evaluations and rows that fit (training/budget.py), so training, the test-set evaluation and the prediction of the
# shifted file stay within 10 minutes whatever the CPU class. A fast CPU finishes the recipe's 2 epochs early; a slow
# one trains fewer steps. RECIPE=... and TIME_BUDGET=... (e.g. 20m, or "none") choose yourself.
RECIPE=${RECIPE:-recipes/minilm-cpu.yaml}
TIME_BUDGET=${TIME_BUDGET:-7m}
BUDGET_FLAGS=()
if [[ "$TIME_BUDGET" != "none" ]]; then
  BUDGET_FLAGS=(--time-budget "$TIME_BUDGET")
fi
loraclf train --config "$RECIPE" --train "$DATA/ag_news/train.csv" --out "$OUT" "${BUDGET_FLAGS[@]}"
echo
echo "== held-out test set: $DATA/ag_news/test.csv =="
loraclf evaluate "$OUT" --data "$DATA/ag_news/test.csv"
if [[ -f "$DATA/ag_news/ood_unlabeled.csv" ]]; then  # the hub's AG News has no unlabelled file
  loraclf predict "$OUT" --input "$DATA/ag_news/ood_unlabeled.csv" --output "$OUT/ood_predictions.csv"
fi
echo "run folder: $OUT"
