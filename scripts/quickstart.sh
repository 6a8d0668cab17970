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
# The recipe follows the CPU class (benchmarks/README.md): with AMX or AVX-512 BF16 the full recipe trains in bf16 in
# about 5 minutes; without them (AVX2 only, fp32) it would take about half an hour, so the upper-block recipe on a
# 14,000-row sample keeps the quick start near 10 minutes. RECIPE=... chooses one yourself.
if [[ -z "${RECIPE:-}" ]]; then
  if python -c "import sys; from loraclf.utils.devices import cpu_has_fast_bf16; sys.exit(not cpu_has_fast_bf16())"; then
    RECIPE=recipes/minilm-cpu.yaml
  else
    RECIPE=recipes/minilm-avx2.yaml
    echo "this CPU has no fast bf16 (AVX2 only): training $RECIPE (recipes/minilm-cpu.yaml scores higher in about 30 minutes)"
  fi
fi
loraclf train --config "$RECIPE" --train "$DATA/ag_news/train.csv" --out "$OUT"
echo
echo "== held-out test set: $DATA/ag_news/test.csv =="
loraclf evaluate "$OUT" --data "$DATA/ag_news/test.csv"
if [[ -f "$DATA/ag_news/ood_unlabeled.csv" ]]; then  # the hub's AG News has no unlabelled file
  loraclf predict "$OUT" --input "$DATA/ag_news/ood_unlabeled.csv" --output "$OUT/ood_predictions.csv"
fi
echo "run folder: $OUT"
