"""Print the adaptation-methods table from the run folders benchmarks/methods.sh wrote.

Per method, over its seeds: accuracy and macro-F1 on test.csv as mean ± standard deviation, trainable parameters
(loraclf's plan, as peft counts them), training samples/s (optimisation steps only, from metrics.json) and
prediction rows/s (the whole ``loraclf evaluate`` command on test.csv: model loading, the int8 graph's export,
tokenising and scoring; median over the seeds); a method that refused to train shows its one-line reason.

    .venv/bin/python benchmarks/methods_table.py [WORK_DIR]     # default runs/methods
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METHODS = [
    "lora",
    "dora",
    "rslora",
    "loraplus",
    "vera",
    "adalora",
    "ia3",
    "loha",
    "lokr",
    "hra",
    "bitfit",
    "prompt",
    "prefix",
]


def mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    x = np.array(values) * scale
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}" if len(x) > 1 else f"{x[0]:.{digits}f}"


def row(runs: Path, method: str) -> str | None:
    # predict.json is written once the evaluate command has finished (test.json may still be being written).
    done = sorted(p for p in runs.glob(f"{method}-*") if (p / "predict.json").is_file() and p.is_dir())
    refused = sorted(runs.glob(f"{method}-*.refused"))
    if not done:
        return f"| {method} | refused: {refused[0].read_text().strip()} | | | | | |" if refused else None
    tests = [json.loads((p / "test.json").read_text()) for p in done]
    train = [json.loads((p / "metrics.json").read_text()) for p in done]
    info = json.loads((done[0] / "run.json").read_text())
    pred = [json.loads((p / "predict.json").read_text()) for p in done]
    rows_s = np.median([p["rows"] / p["seconds"] for p in pred]) if pred else float("nan")
    trainable = info.get("trainable") or info.get("plan", {}).get("trainable")
    return (
        f"| {method} | {mean_std([t['accuracy'] for t in tests])} | {mean_std([t['macro_f1'] for t in tests])} | "
        f"{trainable:,} | {np.median([m['train_samples_per_s'] for m in train]):.1f} | {rows_s:.0f} | {len(done)} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", nargs="?", default="runs/methods")
    runs = Path(ap.parse_args().work) / "runs"
    print("| method | accuracy % | macro-F1 % | trainable | train samples/s | predict rows/s | seeds |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
        line = row(runs, method)
        if line:
            print(line)


if __name__ == "__main__":
    main()
