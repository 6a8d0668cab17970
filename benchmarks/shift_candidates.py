"""Candidates against the competition file's machine-written half, in the quick start's time, over three seeds.

Each arm trains ``recipes/minilm-cpu.yaml`` on AG News's train.csv under a time budget, as ``make quickstart`` does,
then scores every labelled set side by side (never one alone): test.csv, the hand-labelled development rows of
kaggle_test.csv split into real and machine-written ones (``kaggle_dev.py``), and the constructed shifts of test.csv
(``shift_sets.py``). For each run and set it also records the label-free estimates of ``loraclf shift`` (average
confidence, ATC, DoC; before and after the run's temperature) and their error against the measured accuracy.

Arms (``--arms``, comma separated):

* ``quickstart``: the quick start as it ships (``--time-budget 7m``).
* ``noise``: the same, trained on train.csv plus one noised copy of every row (``loraclf augment --method noise``,
  strength 0.4, which mimics what can be counted in the machine-written rows); the budget is the same, so the plan
  samples the rows it has time for from the doubled file.
* ``short``: ``--time-budget 3m``: fewer steps, the "fit the clean data less" candidate.
* ``swa``: the quick start with ``train.swa_start=0.06``: the kept weights are the mean of every step's after the
  warmup (stochastic weight averaging, training/averaging.py).
* ``swa+match``: the ``swa`` runs predicting with ``--match-priors``, as ``match`` below does.
* ``match``: the ``quickstart`` runs (not trained again), predicting with ``--match-priors uniform``: each class
  re-weighted so that the file's mean probability is a quarter (AG News' test split is balanced; the training
  sample is not: 28/22/22/28%). The file is what a user would predict: the whole of
  kaggle_test.csv for the development rows (their ids pick the rows out of it), each set itself otherwise. It
  predicts with the run's temperature, as ``loraclf predict`` does by default; no estimates are recorded for it.

    python benchmarks/shift_candidates.py --out runs/shift-candidates               # 6 arms x 3 seeds, ~2 h
    python benchmarks/shift_candidates.py --out runs/shift-candidates --score runs/time-budget/3m  # score a run

Every step is skipped when its result exists, so the script can be stopped and started again. Run it alone on the
machine (time-budgeted runs train fewer steps on a busy one) and name the CPU class with its table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import cpu_name  # noqa: E402  (benchmarks/serve_load.py)
from tapt import loraclf  # noqa: E402  (benchmarks/tapt.py: run the CLI offline, fail with its stderr)

from loraclf.inference.estimate import estimate  # noqa: E402

RECIPE = ROOT / "recipes" / "minilm-cpu.yaml"
# arm: (time budget, trained on the noised copy, the arm whose runs it reuses or None, predict flags, recipe overrides)
ARMS = {
    "quickstart": ("7m", False, None, (), ()),
    "noise": ("7m", True, None, (), ()),
    "short": ("3m", False, None, (), ()),
    "match": ("7m", False, "quickstart", ("--match-priors", "uniform"), ()),
    "swa": ("7m", False, None, (), ("train.swa_start=0.06",)),
    "swa+match": ("7m", False, "swa", ("--match-priors", "uniform"), ()),
}
DEV = {"real": 0, "machine": 1}  # the development sets and their kaggle_dev.csv machine flag
SHIFTS = ("title_only", "description_only_tokenised", "noised", "prior_shift")
SETS = ("test", "real", "machine", *SHIFTS)
ESTIMATES = ("average_confidence", "atc", "doc")


def prepare(data: Path, work: Path) -> dict[str, Path]:
    """The labelled sets (written once): test.csv, dev real/machine rows, the constructed shifts."""
    here = Path(__file__).resolve().parent
    dev, shifts = work / "dev", work / "shift-sets"
    if not (dev / "machine.csv").is_file():
        subprocess.run([sys.executable, here / "kaggle_dev.py", "--data", data, "--out", dev], check=True)
    if not (shifts / "prior_shift.csv").is_file():
        cmd = [sys.executable, here / "shift_sets.py", "--data", data, "--out", shifts, "--seed", "0"]
        subprocess.run(cmd, check=True)
    sets = {"test": data / "ag_news" / "test.csv", "real": dev / "real.csv", "machine": dev / "machine.csv"}
    return sets | {name: shifts / f"{name}.csv" for name in SHIFTS}


def noised_train(data: Path, work: Path) -> Path:
    """train.csv plus one noised copy of each row (written once)."""
    out = work / "train-noised.csv"
    if not out.is_file():
        loraclf(
            "augment", "--method", "noise", "--input", data / "ag_news" / "train.csv", "--output", out,
            "--strength", "0.4", "--seed", "0", "--quiet",
        )  # fmt: skip
    return out


def score_set(run: Path, path: Path, scratch: Path) -> dict:
    """Accuracy of ``run`` on one labelled file and the estimates' errors, from its raw probabilities."""
    loraclf(
        "predict", run, "--input", path, "--output", scratch, "--probabilities", "--no-calibration", "--quiet"
    )
    frame, truth = pd.read_csv(scratch), pd.read_csv(path)["label"].astype(str).to_numpy()
    columns = [c for c in frame.columns if c.startswith("prob_")]
    names = np.array([c[len("prob_") :] for c in columns])
    probs = frame[columns].to_numpy(dtype=np.float64)
    accuracy = float((names[probs.argmax(1)] == truth).mean())
    calibration = json.loads((run / "run.json").read_text())["calibration"]
    est = estimate(probs, calibration["validation"], calibration["temperature"])
    result = {"accuracy": accuracy, "rows": len(truth)}
    for stage in ("before", "after"):
        for key in ESTIMATES:
            result[f"{key}_{stage}_error"] = est[stage][key] - accuracy
    return result


def matched_accuracy(
    run: Path, name: str, path: Path, flags: tuple, data: Path, scratch: Path, arm: str
) -> dict:
    """Accuracy of ``run`` predicting with ``flags`` (which act on a whole file, as --match-priors does): on a
    development set, the rows of that set picked out of a prediction of all of kaggle_test.csv."""
    if name in DEV:
        whole = scratch.with_name(f"{arm}-{run.name.rsplit('-', 1)[1]}-kaggle.csv")
        if not whole.is_file():
            loraclf("predict", run, "--input", data / "ag_news" / "kaggle_test.csv", "--output", whole, *flags,
                    "--quiet")  # fmt: skip
        labels = pd.read_csv(ROOT / "benchmarks" / "data" / "kaggle_dev.csv")
        rows = labels[labels["machine"] == DEV[name]]
        predicted = pd.read_csv(whole).set_index("ID").loc[rows["id"], "Label"].astype(str).to_numpy()
        truth = rows["label"].astype(str).to_numpy()
    else:
        loraclf("predict", run, "--input", path, "--output", scratch, *flags, "--quiet")
        predicted = pd.read_csv(scratch)["Label"].astype(str).to_numpy()
        truth = pd.read_csv(path)["label"].astype(str).to_numpy()
    return {"accuracy": float((predicted == truth).mean()), "rows": len(truth)}


def score_run(
    run: Path, sets: dict[str, Path], work: Path, arm: str | None = None, data: Path | None = None
) -> dict:
    """Every set's scores for one finished run (predicting as ``arm`` says), kept in WORK/scores/NAME.json (never
    in the run folder, whose file set is loraclf's)."""
    flags = ARMS[arm][3] if arm is not None else ()
    name = run.name if not flags else f"{arm}-{run.name.rsplit('-', 1)[1]}"
    out = work / "scores" / f"{name}.json"
    if out.is_file():
        return json.loads(out.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = work / "scores" / "scratch.csv"
    if flags:
        scores = {s: matched_accuracy(run, s, path, flags, data, scratch, arm) for s, path in sets.items()}
    else:
        scores = {s: score_set(run, path, scratch) for s, path in sets.items()}
    scratch.unlink(missing_ok=True)
    plan = json.loads((run / "run.json").read_text()).get("time_plan") or {}
    scores["plan"] = {k: plan.get(k) for k in ("steps", "rows", "estimated_seconds")}
    out.write_text(json.dumps(scores, indent=1))
    return scores


def train(args, arm: str, seed: int) -> Path:
    trained = ARMS[arm][2] or arm  # the arm whose recipe trains the run
    budget, noised, _, _, overrides = ARMS[trained]
    run = args.out / "runs" / f"{trained}-{seed}"
    if (run / "metrics.json").is_file():
        return run
    data = noised_train(args.data, args.out) if noised else args.data / "ag_news" / "train.csv"
    run.parent.mkdir(parents=True, exist_ok=True)
    loraclf(
        "train", "--config", RECIPE, "--train", data, "--out", run, "--seed", seed, "--time-budget", budget,
        *overrides, log=run.with_suffix(".log"),
    )  # fmt: skip
    return run


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def tables(results: dict[str, list[dict]]) -> str:
    """Accuracy (percent, mean ± std over seeds) per arm and set; then the estimates' errors (points)."""
    head = "| arm | seeds | " + " | ".join(SETS) + " |"
    lines = [head, "|---" * (len(SETS) + 2) + "|"]
    for arm, runs in results.items():
        cells = [mean_sd([100 * r[s]["accuracy"] for r in runs if s in r]) for s in SETS]
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "| arm | estimate | " + " | ".join(SETS) + " |", "|---" * (len(SETS) + 2) + "|"]
    for arm, runs in results.items():
        for stage in ("before", "after"):
            for key in ESTIMATES:
                name = f"{key}_{stage}_error"
                cells = [mean_sd([100 * r[s][name] for r in runs if name in r.get(s, {})]) for s in SETS]
                lines.append(f"| {arm} | {key}, {stage} T | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("LORACLF_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", type=Path, default=default_data, help="shared data folder (has ag_news/)")
    ap.add_argument("--out", type=Path, required=True, help="work folder (runs/, sets, results.json)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma separated, of {', '.join(ARMS)}")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, comma separated (0,1,2)")
    ap.add_argument("--score", type=Path, nargs="*", default=[], help="also score these finished runs")
    ap.add_argument(
        "--score-sets",
        default="test,real,machine",
        help="the sets --score runs are scored on (test,real,machine)",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets = prepare(args.data, args.out)
    results: dict[str, list[dict]] = {}
    chosen = {name: sets[name] for name in args.score_sets.split(",")}
    for run in args.score:
        results.setdefault(run.name, []).append(score_run(run, chosen, args.out))
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in args.arms.split(","):
            scores = score_run(train(args, arm, seed), sets, args.out, arm, args.data)
            results.setdefault(arm, []).append(scores)
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
            print(f"{arm} seed {seed} done", file=sys.stderr, flush=True)
    text = f"CPU: {cpu_name()}\n\n" + tables(results)
    (args.out / "tables.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
