#!/usr/bin/env bash
# Two processes against one (benchmarks/README.md, "Two processes on a CPU"): the MiniLM CPU recipe on a stratified
# sample of AG News (3,200 rows, one epoch, a 1,000-row validation split), trained once in one process and once in
# two gloo processes through torchrun, for each seed; every run scored on the 5,600 rows of ag_news/test.csv.
# The global batch (train.batch_size x train.grad_accum) is the same in both, so the two-process run follows the
# one-process data order and schedule; only the head's dropout masks differ (each rank draws its own), so the
# question is whether the two scores lie within the seed-to-seed spread. Finished runs are kept: running the
# script again only adds what is missing. Run it alone on the machine.
#
#   make setup
#   bash benchmarks/ddp_cpu.sh [DATA_DIR] [WORK_DIR]      # defaults: ../shared/data, runs/ddp-cpu
#
# Environment: SEEDS (default "1 2 3"), ROWS (3200), VAL (1000), TEST (the scored file, default test.csv), ONE_FROM (a `loraclf compare --seeds` folder of
# the same recipe, rows, epochs and validation size, e.g. benchmarks/sweep.sh's WORK/shipped/shipped, whose
# seed-S runs are reused, through symbolic links, as the one-process runs instead of training them again; their
# test.json and evaluations/ are then written into those folders).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "${1:-$ROOT/../shared/data}" && pwd)/ag_news
WORK=${2:-$ROOT/runs/ddp-cpu}
SEEDS=${SEEDS:-1 2 3}
ROWS=${ROWS:-3200}
VAL=${VAL:-1000}
TEST=${TEST:-$DATA/test.csv}
PY=${PYTHON:-$ROOT/.venv/bin/python}
export HF_HUB_OFFLINE=1 LORACLF_QUIET=1
mkdir -p "$WORK"
log() { echo "[$(date +%H:%M:%S)] $*"; }
SAME=(train --config "$ROOT/recipes/minilm-cpu.yaml" --train "$DATA/train.csv" --max-train-samples "$ROWS"
  --epochs 1 "data.val_size=$VAL")

for s in $SEEDS; do
  one=$WORK/one-$s two=$WORK/two-$s
  if [ -n "${ONE_FROM:-}" ] && [ ! -e "$one" ] && [ -f "$ONE_FROM/seed-$s/metrics.json" ]; then
    ln -s "$(cd "$ONE_FROM/seed-$s" && pwd)" "$one"
    log "one process, seed $s: reusing $ONE_FROM/seed-$s"
  fi
  if [ ! -f "$one/metrics.json" ]; then
    rm -rf "$one"; log "one process, seed $s"
    "$PY" -m loraclf "${SAME[@]}" --seed "$s" --out "$one" 2> "$WORK/one-$s.log"
  fi
  if [ ! -f "$two/metrics.json" ]; then
    rm -rf "$two"; log "two processes (torchrun), seed $s"
    # torchrun gives each worker OMP_NUM_THREADS=1: the two ranks share the machine's two cores.
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m loraclf "${SAME[@]}" --seed "$s" \
      --out "$two" > "$WORK/two-$s.log" 2>&1
  fi
  for run in "$one" "$two"; do
    if [ ! -f "$run/test.json" ]; then  # through a temporary file: a failed evaluation leaves nothing to skip
      "$PY" -m loraclf evaluate "$run" --data "$TEST" --json > "$run/test.json.tmp"
      mv "$run/test.json.tmp" "$run/test.json"
    fi
  done
done

"$PY" - "$WORK" $SEEDS <<'EOF'
import json, statistics, sys
from pathlib import Path

work, seeds = Path(sys.argv[1]), sys.argv[2:]
print("| processes | seed | test accuracy % | test macro-F1 % | train samples/s | train s |")
print("|---|---|---|---|---|---|")
summary = {}
for kind, n in (("one", 1), ("two", 2)):
    accs = []
    for s in seeds:
        run = work / f"{kind}-{s}"
        test = json.loads((run / "test.json").read_text())
        m = json.loads((run / "metrics.json").read_text())
        accs.append(100 * test["accuracy"])
        print(f"| {n} | {s} | {100 * test['accuracy']:.2f} | {100 * test['macro_f1']:.2f} | "
              f"{m['train_samples_per_s']:.1f} | {m['train_seconds']:.0f} |")
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    summary[n] = (statistics.mean(accs), sd)
for n, (mean, sd) in summary.items():
    print(f"{n} process(es): test accuracy {mean:.2f} ± {sd:.2f} % over seeds {', '.join(seeds)}")
EOF
