#!/usr/bin/env bash
# The sweep benchmark (benchmarks/README.md, "Sweep"): an Optuna sweep of the MiniLM CPU recipe on a stratified
# sample of AG News (3,200 rows, one epoch per trial, median pruning, budget 1,000,000), then the best trial and
# the shipped recipe retrained with seeds 1, 2, 3 on the same rows and scored on test.csv. Validation is a
# stratified split of 1,000 rows (not the recipe's 5% of the whole file, 6,000 rows, whose four evaluations per
# trial would cost more than the training). Finished parts are kept: running the script again only adds missing
# trials and runs.
#
#   make setup
#   bash benchmarks/sweep.sh [DATA_DIR] [WORK_DIR] [TRIALS] [ROWS] [VAL_ROWS]
#        # defaults: ../shared/data, runs/sweep-bench, 20, 3200, 1000
#   bash benchmarks/sweep.sh ../shared/data /tmp/sweep-smoke 3 200 200   # a smoke run of the same steps
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "${1:-$ROOT/../shared/data}" && pwd)/ag_news
WORK=${2:-$ROOT/runs/sweep-bench}
TRIALS=${3:-20}
ROWS=${4:-3200}
VAL=${5:-1000}
L=${LORACLF:-$ROOT/.venv/bin/loraclf}
SAME=(--train "$DATA/train.csv" --max-train-samples "$ROWS" --epochs 1)
export HF_HUB_OFFLINE=1 LORACLF_QUIET=1
mkdir -p "$WORK"
log() { echo "[$(date +%H:%M:%S)] $*"; }

done_trials=0
[ -f "$WORK/sweep/leaderboard.csv" ] && done_trials=$(($(wc -l < "$WORK/sweep/leaderboard.csv") - 1))
log "sweep: $done_trials of $TRIALS trials done"
$L sweep --config "$ROOT/recipes/minilm-cpu.yaml" --space "$ROOT/benchmarks/sweep-space.yaml" "${SAME[@]}" \
  --out "$WORK/sweep" --trials $((TRIALS > done_trials ? TRIALS - done_trials : 0)) --pruner median \
  --top 1 --seeds 1,2,3 --test "$DATA/test.csv" adapter.alpha=null "data.val_size=$VAL" 2> "$WORK/sweep.log"
log "the shipped recipe, same rows and epochs, seeds 1,2,3"
$L compare "shipped=$ROOT/recipes/minilm-cpu.yaml" "${SAME[@]}" --seeds 1,2,3 --test "$DATA/test.csv" \
  --val-size "$VAL" --out "$WORK/shipped" 2> "$WORK/shipped.log"
log "done: $WORK/sweep/report.html, $WORK/sweep/top/leaderboard.csv, $WORK/shipped/leaderboard.csv"
