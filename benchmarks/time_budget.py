"""Time budgets on MiniLM: accuracy on test.csv, the command's time against its budget, the plan's estimate error.

For each budget, ``loraclf train --config RECIPE --train TRAIN --time-budget B`` runs as its own process (timed from
outside: interpreter start-up, imports, tokenising, the warm-up, training, the final evaluation, the int8 export and
the report), then ``loraclf evaluate RUN --data TEST --json`` scores it. The table gives per budget: the planned
steps, epochs and evaluations, re-plans, the command's wall time and its ratio to the budget, the plan's relative
time-estimate error ((actual − estimated) / estimated, from run.json's ``time_plan.estimated_seconds``) and the
test accuracy. Run it on an otherwise idle machine and name its CPU class in benchmarks/README.md.

    .venv/bin/python benchmarks/time_budget.py                       # 3, 5, 10, 20 minutes on ../shared/data/ag_news
    .venv/bin/python benchmarks/time_budget.py --budgets 60s --max-rows 2000 --out runs/tb-smoke   # a quick try
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    data = Path(os.environ.get("LORACLF_DATA", REPO.parent / "shared" / "data")) / "ag_news"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="3m,5m,10m,20m", help="comma-separated budgets (loraclf durations)")
    p.add_argument("--recipe", default=str(REPO / "recipes" / "minilm-cpu.yaml"))
    p.add_argument("--train", default=str(data / "train.csv"))
    p.add_argument("--test", default=str(data / "test.csv"))
    p.add_argument("--max-rows", type=int, help="use the first N rows of --train (a quick try of the script)")
    p.add_argument("--out", default=str(REPO / "runs" / "time-budget"), help="folder for the runs and table")
    p.add_argument(
        "overrides", nargs="*", help="key.sub=value overrides passed to every run (e.g. a tiny model)"
    )
    return p.parse_args(argv)


def loraclf(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "loraclf", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def one_budget(budget: str, train: str, args: argparse.Namespace, out: Path) -> dict:
    """Train with ``budget`` and score on test.csv; the row of the table."""
    run = out / f"budget-{budget}"
    started = time.monotonic()
    res = loraclf("train", "--config", args.recipe, "--train", train, "--out", str(run), "--time-budget", budget,
                  "--quiet", *args.overrides)  # fmt: skip
    wall = time.monotonic() - started
    (out / f"budget-{budget}.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        return {"budget": budget, "error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    info = json.loads((run / "run.json").read_text())
    plan = info["time_plan"]
    scored = loraclf("evaluate", str(run), "--data", args.test, "--json")
    test = json.loads(scored.stdout) if scored.returncode == 0 else {}
    return {
        "budget": budget,
        "budget_s": plan["budget_seconds"],
        "steps_planned": plan["steps"],
        "steps_run": plan["steps"] if not plan["replans"] else plan["replans"][-1]["steps"],
        "epochs": plan["epochs"],
        "rows": plan["rows"],
        "evaluations": plan["evaluations"],
        "replans": len(plan["replans"]),
        "samples_per_s_planned": plan["samples_per_s"],
        "estimated_s": plan["estimated_seconds"],
        "command_s": round(wall, 1),
        "of_budget": round(wall / plan["budget_seconds"], 3),
        "estimate_error": round((wall - plan["estimated_seconds"]) / plan["estimated_seconds"], 3),
        "test_accuracy": test.get("accuracy"),
        "precision": info["environment"].get("precision"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = args.train
    if args.max_rows:
        train = str(out / "train-head.csv")
        pd.read_csv(args.train, nrows=args.max_rows).to_csv(train, index=False)
    rows = []
    for budget in [b.strip() for b in args.budgets.split(",") if b.strip()]:
        rows.append(one_budget(budget, train, args, out))
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "time_budget.csv", index=False)
    print(f"\nCPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    print(f"table: {out / 'time_budget.csv'}")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
