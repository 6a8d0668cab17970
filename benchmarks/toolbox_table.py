"""Print the accuracy-toolbox table from the run folders benchmarks/toolbox.sh wrote.

Each configuration is three seeds: accuracy and macro-F1 on test.csv and accuracy on the shifted stand-in
(shifted_proxy.py) as mean ± standard deviation, the predicted class shares on ood_unlabeled.csv (seed 42), the
training rows and the median training time over the seeds.

    .venv/bin/python benchmarks/toolbox_table.py [WORK_DIR]     # default runs/toolbox
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

ROWS = [
    ("baseline (cleaning off)", "base"),
    ("+ cleaning (HTML entities, escapes, whitespace)", "clean"),
    ("+ synonym copies (WordNet, 10% of words)", "syn"),
    ("+ pseudo-labels on ood_unlabeled (≥ 0.9, balanced)", "pseudo"),
    ("+ distillation from the mpnet-base teacher", "distill"),
]
SEEDS = (42, 1, 2)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def shares(path: Path) -> str:
    p = pd.read_csv(path)["Label"].value_counts(normalize=True).sort_index()
    return " / ".join(f"{v:.1%}" for v in p.values)


def mean_std(values: list[float]) -> str:
    x = np.array(values) * 100
    return f"{x.mean():.2f} ± {x.std(ddof=1):.2f}" if len(x) > 1 else f"{x[0]:.2f}"


def table(work: Path) -> list[str]:
    lines = [
        "| configuration | trainable | test acc % | test macro-F1 % | shifted acc % | ood predicted 1/2/3/4 | rows "
        "| train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, key in ROWS:
        runs = [work / f"runs/{key}-{s}" for s in SEEDS if (work / f"runs/{key}-{s}/shifted.json").is_file()]
        if not runs:
            continue
        test = [read(r / "test.json") for r in runs]
        shifted = [read(r / "shifted.json") for r in runs]
        secs = np.median([read(r / "metrics.json")["train_seconds"] for r in runs])
        rows = read(runs[0] / "run.json")["data"]["n_train"]
        trainable = read(runs[0] / "run.json")["plan"]["trainable"]
        lines.append(
            f"| {name} ({len(runs)} seeds) | {trainable:,} | {mean_std([t['accuracy'] for t in test])} | "
            f"{mean_std([t['macro_f1'] for t in test])} | {mean_std([t['accuracy'] for t in shifted])} | "
            f"{shares(runs[0] / 'ood.csv')} | {rows:,} | {secs:.0f} |"
        )
    ens = work / "ens"
    if (ens / "shifted.json").is_file():
        t, s = read(ens / "test.json"), read(ens / "shifted.json")
        total = t.get("ensemble", {}).get("trainable_total", 0)
        lines.append(
            f"| + 3-run ensemble of the distilled runs | {total:,} (3 budgets) | {t['accuracy'] * 100:.2f} | "
            f"{t['macro_f1'] * 100:.2f} | {s['accuracy'] * 100:.2f} | {shares(ens / 'ood.csv')} | — | — |"
        )
    teacher = work / "runs/mpnet"
    if (teacher / "shifted.json").is_file():
        t, s = read(teacher / "test.json"), read(teacher / "shifted.json")
        lines.append(
            f"| teacher: mpnet-base-teacher.yaml (seed 42) | {read(teacher / 'run.json')['plan']['trainable']:,} | "
            f"{t['accuracy'] * 100:.2f} | {t['macro_f1'] * 100:.2f} | {s['accuracy'] * 100:.2f} | "
            f"{shares(teacher / 'ood.csv')} | {read(teacher / 'run.json')['data']['n_train']:,} | "
            f"{read(teacher / 'metrics.json')['train_seconds']:.0f} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", nargs="?", default="runs/toolbox", help="WORK_DIR given to toolbox.sh")
    print("\n".join(table(Path(ap.parse_args().work))))


if __name__ == "__main__":
    main()
