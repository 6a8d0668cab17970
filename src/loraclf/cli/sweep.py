"""The ``sweep`` command (see :mod:`loraclf.sweep`).

Only argparse is imported here: Optuna, SQLAlchemy and torch load when the command runs, so that ``--help`` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse

SWEEP_EXAMPLES = """SPACE.yaml maps recipe keys to distributions:
  adapter.r: {int: [2, 64], log: true}
  adapter.targets: {choice: [[query, value], [query, key, value, dense]]}
  train.lr: {float: [1e-4, 3e-3], log: true}
  train.scheduler: {choice: [linear, cosine]}

examples:
  loraclf sweep --config recipes/minilm-cpu.yaml --space benchmarks/sweep-space.yaml --train train.csv \\
      --out runs/sweep --trials 20 --max-train-samples 3200 --epochs 1
  loraclf sweep …same flags… --trials 10     # again: resumes the study in runs/sweep/study.db, adds 10 trials
  loraclf sweep …same flags… --storage postgresql://user:pw@db-host/loraclf --study agnews   # one per machine
  loraclf sweep …same flags… --trials 0 --top 3 --seeds 1,2,3 --test test.csv   # retrain the 3 best
"""


def add_commands(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="search recipe keys with Optuna under the budget; prune weak trials; leaderboard and report",
        description="Search recipe keys with Optuna (TPE). Every suggestion is planned exactly first; over the "
        "budget it is never trained. Each trial is a run folder under DIR/trials; weak trials are pruned.",
        epilog=SWEEP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="RECIPE", help="the recipe the space varies")
    p.add_argument("--space", required=True, metavar="SPACE.yaml", help="recipe keys → distributions")
    p.add_argument(
        "--train", action="append", required=True, metavar="FILE", help="training file (repeatable)"
    )
    p.add_argument("--eval", metavar="FILE", help="validation file (default: a stratified split of --train)")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder: study.db, trials/, results")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="trials to add to the study")
    p.add_argument(
        "--budget", type=int, metavar="N", help="trainable-parameter limit (default: the recipe's)"
    )
    p.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    p.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="the study ends within this (seconds, 90s, 8m, 2h): each trial gets a time budget, its share of "
        "what is left, and no trial starts too late to finish (sweep/timing.py)",
    )
    p.add_argument(
        "--storage", metavar="URL", help="study database (default sqlite:///DIR/study.db); postgresql://…"
    )
    p.add_argument("--study", metavar="NAME", help="study name (default: the name of DIR)")
    p.add_argument(
        "--metric", choices=("accuracy", "macro_f1", "loss"), help="what to optimise (default: train.metric)"
    )
    p.add_argument("--seed", type=int, help="training seed of every trial, and the sampler's (train.seed)")
    p.add_argument("--max-train-samples", type=int, metavar="N", help="stratified sample of N training rows")
    p.add_argument("--epochs", type=float, help="passes over the training rows per trial (train.epochs)")
    p.add_argument(
        "--pruner", choices=("median", "halving", "none"), default="median", help="stops weak trials early"
    )
    p.add_argument("--top", type=int, metavar="K", help="retrain the K best finished trials over --seeds")
    p.add_argument("--seeds", metavar="S,S,…", help="seeds of the --top retraining (default 1,2,3)")
    p.add_argument("--test", metavar="FILE", help="labelled file the --top runs are scored on")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides for every trial")


def cmd_sweep(args) -> int:
    from loraclf.sweep.run import run_sweep

    return run_sweep(args)


COMMANDS = {"sweep": cmd_sweep}
