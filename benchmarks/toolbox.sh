#!/usr/bin/env bash
# The accuracy-toolbox measurements on AG News (benchmarks/README.md, "Accuracy toolbox"): the MiniLM CPU recipe as
# a baseline, then + cleaning, + synonym copies, + pseudo-labels on ood_unlabeled.csv, + distillation from an
# mpnet-base teacher, each over three seeds, and a 3-run ensemble of the distilled runs. Every step is skipped when
# its result exists, so the script can be stopped and started again. Run it alone: about 3 hours on 2 CPU cores.
#
#   make setup mpnet wordnet
#   bash benchmarks/toolbox.sh [DATA_DIR] [WORK_DIR]     # defaults: ../shared/data, runs/toolbox
#   .venv/bin/python benchmarks/toolbox_table.py [WORK_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "${1:-$ROOT/../shared/data}" && pwd)/ag_news
WORK=${2:-$ROOT/runs/toolbox}
L=$ROOT/.venv/bin/loraclf
R=$ROOT/recipes/minilm-cpu.yaml
SEEDS="42 1 2"
NOCLEAN="data.clean.html=false data.clean.escapes=false data.clean.whitespace=false"
export HF_HUB_OFFLINE=1 LORACLF_QUIET=1
mkdir -p "$WORK/runs" && cd "$WORK"
log() { echo "[$(date +%H:%M:%S)] $*"; }

finish() {  # score test.csv and the shifted stand-in, predict ood_unlabeled.csv
  local run=$1
  [ -f "$run/test.json" ] || $L evaluate "$run" --data "$DATA/test.csv" --json > "$run/test.json"
  [ -f "$run/shifted.json" ] || $L evaluate "$run" --data shifted_test.csv --json > "$run/shifted.json"
  [ -f "$run/ood.csv" ] || $L predict "$run" --input "$DATA/ood_unlabeled.csv" --output "$run/ood.csv" > /dev/null
}
trainrun() {  # NAME SEED ARGS…: train runs/NAME-SEED with the MiniLM recipe unless it finished before
  local run=runs/$1-$2; shift 2
  if [ ! -f "$run/metrics.json" ]; then
    rm -rf "$run"; log "train $run"
    $L train --config "$R" --out "$run" "$@" > "$run.log" 2>&1
  fi
  finish "$run"
}

[ -f shifted_test.csv ] || "$ROOT/.venv/bin/python" "$ROOT/benchmarks/shifted_proxy.py" "$DATA/test.csv" shifted_test.csv
[ -f syn.csv ] || $L augment --method synonym --input "$DATA/train.csv" --output syn.csv --rate 0.1 --copies 1 \
  --no-keep-original --seed 0
for s in $SEEDS; do trainrun base $s --train "$DATA/train.csv" --seed $s $NOCLEAN; done
for s in $SEEDS; do trainrun clean $s --train "$DATA/train.csv" --seed $s; done
for s in $SEEDS; do trainrun syn $s --train "$DATA/train.csv" --train syn.csv --seed $s; done
[ -f ood_pseudo.csv ] || $L pseudo-label runs/syn-42 runs/syn-1 runs/syn-2 --input "$DATA/ood_unlabeled.csv" \
  --output ood_pseudo.csv --threshold 0.9 > pseudo.log 2>&1
for s in $SEEDS; do trainrun pseudo $s --train "$DATA/train.csv" --train syn.csv --train ood_pseudo.csv --seed $s; done
if [ ! -f runs/mpnet/metrics.json ]; then
  rm -rf runs/mpnet; log "train the mpnet-base teacher"
  $L train --config "$ROOT/recipes/mpnet-base-teacher.yaml" --train "$DATA/train.csv" --out runs/mpnet --seed 42 \
    > runs/mpnet.log 2>&1
fi
finish runs/mpnet
for s in $SEEDS; do
  trainrun distill $s --train "$DATA/train.csv" --train syn.csv --train ood_pseudo.csv --seed $s \
    'distill.teachers=[runs/mpnet]'
done
ENS="runs/distill-42 runs/distill-1 runs/distill-2"
mkdir -p ens
[ -f ens/test.json ] || $L evaluate $ENS --data "$DATA/test.csv" --json > ens/test.json
[ -f ens/shifted.json ] || $L evaluate $ENS --data shifted_test.csv --json > ens/shifted.json
[ -f ens/ood.csv ] || $L predict $ENS --input "$DATA/ood_unlabeled.csv" --output ens/ood.csv > /dev/null
log "done; the table: $ROOT/.venv/bin/python $ROOT/benchmarks/toolbox_table.py $WORK"
