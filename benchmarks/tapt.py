"""Task-adaptive pretraining against the plain backbone: the quick-start recipe trained from each, scored on
test.csv and on the hand-labelled rows of kaggle_test.csv split into real and machine-written ones.

    python benchmarks/tapt.py --out runs/tapt-bench                       # the full measurement (hours on 2 cores)
    python benchmarks/tapt.py --out /tmp/tapt-tiny --tapt-texts 200 --tapt-steps 3 \\
        --train-samples 400 --epochs 0.2 --seeds 42 --test-rows 400      # a check that every step runs (minutes)

Steps, each skipped when its result exists (the script can be stopped and started again):

1. ``benchmarks/kaggle_dev.py`` writes ``dev/real.csv`` and ``dev/machine.csv`` (the labelled dev rows).
2. ``loraclf tapt`` adapts MiniLM on the texts of train.csv and kaggle_test.csv (all 8,000, the dev rows included:
   TAPT reads unlabelled texts, as a competitor may) into ``backbone/``.
3. For each seed, ``loraclf train`` with recipes/minilm-cpu.yaml from the plain backbone (``plain-SEED``) and from
   ``backbone/`` (``tapt-SEED``); ``loraclf evaluate`` scores each run on test.csv, real.csv and machine.csv.
4. A table of accuracy (mean ± std over the seeds) per arm and set, printed and written to ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "minilm-cpu.yaml"
SETS = ("test", "real", "machine")


def loraclf(*args, log: Path | None = None) -> str:
    """Run ``python -m loraclf ARGS`` offline; returns stdout, exits with its stderr tail on failure."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LORACLF_QUIET": "1"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "loraclf", *map(str, args)], capture_output=True, text=True, env=env
    )
    if log is not None:
        log.write_text(proc.stderr, encoding="utf-8")
    if proc.returncode:
        raise SystemExit(f"tapt benchmark: loraclf {args[0]} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def prepare_sets(args, work: Path) -> dict[str, Path]:
    """The scored files: test.csv (or its first --test-rows rows) and the dev set's real and machine rows."""
    dev = work / "dev"
    if not (dev / "machine.csv").is_file():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "kaggle_dev.py"),
                "--out",
                str(dev),
                "--data",
                str(args.data),
            ],
            check=True,
        )
    test = args.data / "ag_news" / "test.csv"
    if args.test_rows:
        test = work / "test-head.csv"
        if not test.is_file():
            pd.read_csv(args.data / "ag_news" / "test.csv").head(args.test_rows).to_csv(test, index=False)
    return {"test": test, "real": dev / "real.csv", "machine": dev / "machine.csv"}


def adapt(args, work: Path) -> Path:
    """``loraclf tapt`` on train.csv + kaggle_test.csv into work/backbone (once)."""
    out = work / "backbone"
    if (out / "tapt.json").is_file():
        return out
    extra = ["--max-texts", args.tapt_texts] if args.tapt_texts else []
    extra += ["--max-steps", args.tapt_steps] if args.tapt_steps else ["--epochs", args.tapt_epochs]
    extra += ["--lr", args.tapt_lr] if args.tapt_lr else []
    extra += ["--head-lr", args.tapt_head_lr] if args.tapt_head_lr else []
    data = args.data / "ag_news"
    loraclf(
        "tapt", "--config", RECIPE, "--train", data / "train.csv", "--unlabelled", data / "kaggle_test.csv",
        "--out", out, *extra, log=work / "tapt.log",
    )  # fmt: skip
    return out


def train_and_score(args, work: Path, arm: str, seed: int, backbone: Path | None, sets: dict) -> dict:
    """Train one run (skipped if done) and score it on every set; returns {set: accuracy, "seconds": s}."""
    run = work / "runs" / f"{arm}-{seed}"
    scores = run / "scores.json"
    if scores.is_file():
        return json.loads(scores.read_text())
    extra = [f"model.name={backbone}"] if backbone else []
    extra += ["--max-train-samples", args.train_samples] if args.train_samples else []
    extra += ["--epochs", args.epochs] if args.epochs else []
    run.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    loraclf(
        "train", "--config", RECIPE, "--train", args.data / "ag_news" / "train.csv", "--out", run,
        "--seed", seed, *extra, log=run.with_suffix(".log"),
    )  # fmt: skip
    result = {"seconds": round(time.perf_counter() - started, 1)}
    for name, path in sets.items():
        result[name] = json.loads(loraclf("evaluate", run, "--data", path, "--json"))["accuracy"]
    scores.write_text(json.dumps(result, indent=1))
    return result


def table(results: dict) -> str:
    """Markdown: one row per arm, accuracy mean ± std (percent) per set over the seeds."""
    lines = ["| arm | " + " | ".join(SETS) + " | train s |", "|---" * (len(SETS) + 2) + "|"]
    for arm, runs in results.items():
        cells = []
        for key in (*SETS, "seconds"):
            values = [r[key] * (100 if key != "seconds" else 1) for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("LORACLF_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", type=Path, default=default_data, help="shared data folder (has ag_news/)")
    ap.add_argument("--out", type=Path, required=True, help="work folder (results.json, runs/, backbone/)")
    ap.add_argument("--seeds", default="42,1,2", help="training seeds, comma separated (42,1,2)")
    ap.add_argument("--tapt-texts", type=int, help="TAPT on a seeded sample of N texts (default: all)")
    ap.add_argument("--tapt-steps", type=int, help="TAPT optimizer steps (default: --tapt-epochs)")
    ap.add_argument("--tapt-epochs", type=float, default=1.0, help="TAPT passes over the texts (1)")
    ap.add_argument("--tapt-lr", type=float, help="TAPT learning rate (default: loraclf tapt's, 5e-4)")
    ap.add_argument(
        "--tapt-head-lr", type=float, help="TAPT masked-LM head learning rate (default: --tapt-lr)"
    )
    ap.add_argument("--train-samples", type=int, help="classifier rows (default: the recipe's, all)")
    ap.add_argument("--epochs", type=float, help="classifier epochs (default: the recipe's, 2)")
    ap.add_argument("--test-rows", type=int, help="score only the first N rows of test.csv")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets = prepare_sets(args, args.out)
    backbone = adapt(args, args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {
        arm: [train_and_score(args, args.out, arm, s, bb, sets) for s in seeds]
        for arm, bb in (("plain", None), ("tapt", backbone))
    }
    record = {"tapt": json.loads((backbone / "tapt.json").read_text()), "results": results}
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
