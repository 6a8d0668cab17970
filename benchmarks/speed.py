"""Speed and accuracy of loraclf against the reports' Trainer pipeline, on the same rows, model and epochs.

    python benchmarks/speed.py --data ../shared/data --train-rows 3200 --epochs 1

Runs four commands one after another (never in parallel: they would share the cores) and prints a Markdown table:
training samples/s, prediction samples/s, peak RSS, accuracy on the same evaluation rows, and the wall time of each
whole command. The reference is benchmarks/reference_pipeline.py; loraclf runs its CLI with a recipe
(default recipes/minilm-cpu.yaml). ``--tuned`` adds the best-configured Trainer (``reference_pipeline.py
--tuned``: dynamic padding, length-grouped batches, bf16 where the CPU has it, merged adapter for prediction) as a
third pipeline, two more commands, and a column of ratios against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUSAGE = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(r.returncode)"
)


ENV: dict[str, str] = {}


def run(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """Run a command in its own process; return (wall seconds, peak RSS in MB, its stdout)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUSAGE, *cmd],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **ENV},
    )
    wall = time.perf_counter() - start
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    rss = (
        next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
        / 1024
    )
    return wall, rss, proc.stdout


def result_of(stdout: str) -> dict:
    return json.loads(next(line[7:] for line in stdout.splitlines() if line.startswith("RESULT ")))


def accuracy(pred_file: Path, truth: pd.DataFrame) -> float:
    pred = pd.read_csv(pred_file)
    return float((pred["Label"].astype(str).values == truth["label"].astype(str).values).mean())


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A stratified random sample of n rows."""
    if n >= len(df):
        return df
    parts = [
        g.sample(n=max(1, round(n * len(g) / len(df))), random_state=seed) for _, g in df.groupby("label")
    ]
    return pd.concat(parts).sample(frac=1, random_state=seed).head(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("LORACLF_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument(
        "--model", default="minilm", help="loraclf model alias or folder (the reference uses its folder)"
    )
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "minilm-cpu.yaml"))
    ap.add_argument("--train-rows", type=int, default=3200)
    ap.add_argument(
        "--eval-rows", type=int, default=5600, help="rows of ag_news/test.csv to predict and score"
    )
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workdir", help="keep outputs here (default: a temporary folder)")
    ap.add_argument(
        "--tuned", action="store_true", help="also run the best-configured Trainer (module docstring)"
    )
    args = ap.parse_args()

    from loraclf.modeling.backbones import resolve_weights
    from loraclf.utils.devices import cpu_has_fast_bf16

    model_dir = resolve_weights(args.model)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="loraclf-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # A cache of loraclf's own (token ids, int8 graphs) in the work folder: nothing from earlier runs helps it.
    shutil.rmtree(work / "cache", ignore_errors=True)
    ENV["LORACLF_CACHE"] = str(work / "cache")
    full = pd.read_csv(Path(args.data) / "ag_news" / "train.csv")
    train = sample(full, args.train_rows, args.seed)
    # loraclf picks its best weights on a validation set; give it separate rows so both pipelines train on the
    # same rows (the reference does no evaluation while training).
    dev = sample(full.drop(train.index), max(40, args.train_rows // 20), args.seed)
    dev.to_csv(work / "dev.csv", index=False)
    test = pd.read_csv(Path(args.data) / "ag_news" / "test.csv").head(args.eval_rows)
    train.to_csv(work / "train.csv", index=False)
    test.to_csv(work / "test.csv", index=False)
    py = sys.executable

    def trainer_pipeline(name: str, extra: list[str]) -> dict:
        """Train and predict with reference_pipeline.py; its figures, wall times and peak RSS."""
        script = str(ROOT / "benchmarks" / "reference_pipeline.py")
        wall, rss, out = run(
            [py, script, "train", "--model", model_dir, "--train", str(work / "train.csv"),
             "--out", str(work / name), "--epochs", str(args.epochs), "--seed", str(args.seed), *extra],
            work / f"{name}_train.log",
        )  # fmt: skip
        train_result = result_of(out)
        pwall, prss, out = run(
            [py, script, "predict", "--model", model_dir, "--adapter", str(work / name),
             "--input", str(work / "test.csv"), "--output", str(work / f"{name}_pred.csv"), *extra],
            work / f"{name}_predict.log",
        )  # fmt: skip
        return {
            "train": train_result["train_samples_per_s"],
            "predict": result_of(out)["predict_samples_per_s"],
            "train_wall": wall,
            "predict_wall": pwall,
            "train_rss": rss,
            "predict_rss": prss,
            "accuracy": accuracy(work / f"{name}_pred.csv", test),
        }

    pipelines = {"reference (Trainer)": trainer_pipeline("ref", [])}
    if args.tuned:
        tuned_flags = ["--tuned", *(["--bf16"] if cpu_has_fast_bf16() else [])]
        pipelines[f"tuned Trainer ({'bf16' if '--bf16' in tuned_flags else 'fp32'})"] = trainer_pipeline(
            "tuned", tuned_flags
        )

    lc_wall, lc_rss, _ = run(
        [
            py,
            "-m",
            "loraclf",
            "train",
            "--config",
            args.recipe,
            "--model",
            args.model,
            "--train",
            str(work / "train.csv"),
            "--eval",
            str(work / "dev.csv"),
            "--out",
            str(work / "run"),
            "--epochs",
            str(args.epochs),
            "--seed",
            str(args.seed),
            "--quiet",
        ],
        work / "lc_train.log",
    )
    lc_metrics = json.loads((work / "run" / "metrics.json").read_text())
    lc_pwall, lc_prss, _ = run(
        [
            py,
            "-m",
            "loraclf",
            "predict",
            str(work / "run"),
            "--input",
            str(work / "test.csv"),
            "--output",
            str(work / "lc_pred.csv"),
            "--quiet",
        ],
        work / "lc_predict.log",
    )
    lc_log = (work / "lc_predict.log").read_text()
    # "predict: 5,600 rows in 6.61 s (846.7 rows/s, int8, ONNX Runtime)"
    lc_line = next(line for line in lc_log.splitlines() if "rows in" in line)
    lc_rate = float(lc_line.split("(")[1].split(" rows/s")[0])
    lc_engine = lc_line.split("rows/s, ")[1].rstrip(")")

    pipelines["loraclf"] = {
        "train": lc_metrics["train_samples_per_s"],
        "predict": lc_rate,
        "train_wall": lc_wall,
        "predict_wall": lc_pwall,
        "train_rss": lc_rss,
        "predict_rss": lc_prss,
        "accuracy": accuracy(work / "lc_pred.csv", test),
    }
    measures = [
        ("training samples/s", "train", "{:.1f}", "speed"),
        ("prediction samples/s", "predict", "{:.1f}", "speed"),
        ("train command wall time (s)", "train_wall", "{:.1f}", "ratio"),
        ("predict command wall time (s)", "predict_wall", "{:.1f}", "ratio"),
        ("peak RSS training (MB)", "train_rss", "{:.0f}", "ratio"),
        ("peak RSS prediction (MB)", "predict_rss", "{:.0f}", "ratio"),
        (f"accuracy on {len(test):,} test.csv rows", "accuracy", "{:.2%}", "points"),
    ]
    names = list(pipelines)
    baselines = names[:-1]  # loraclf against each Trainer pipeline
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {len(train):,} training rows, "
        f"{args.epochs:g} epoch(s), model {args.model}; loraclf predicts in {lc_engine}; workdir {work}\n"
    )
    vs = [f"vs {b.split(' (')[0]}" if len(baselines) > 1 else "ratio / difference" for b in baselines]
    print("| measure | " + " | ".join(names) + " | " + " | ".join(vs) + " |")
    print("|---" * (1 + len(names) + len(baselines)) + "|")
    lc = pipelines["loraclf"]
    for label, key, fmt, kind in measures:
        cells = [fmt.format(pipelines[n][key]) for n in names]
        for b in baselines:
            base = pipelines[b][key]
            if kind == "points":
                cells.append(f"{(lc[key] - base) * 100:+.2f} points")
            else:
                cells.append(f"{lc[key] / base:.2f}x")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
