"""Time budgets (train.time_budget, --time-budget): durations, the plan, its reproduction, the deadline, sweeps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, write_text_csv
from loraclf.utils.durations import format_duration, parse_duration
from loraclf.utils.errors import UserError

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


def ok(res):
    assert res.returncode == 0, res
    return res


# --- durations ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (90, 90), (12.5, 12.5), ("90s", 90), ("8m", 480), ("1h30m", 5400), ("1h", 3600),
     ("2m30s", 150), ("1.5h", 5400), (" 8M ", 480)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "8x", "m", "8m5", "5s8m", "1m1m", "-5", "0", "0s", True, "inf", "8 minutes"]
)
def test_parse_duration_refuses_with_the_flag_named(text):
    with pytest.raises(UserError, match=r"--time-budget"):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (0, 45.4, 460, 3600, 5430)] == [
        "0s",
        "45s",
        "7m40s",
        "1h00m",
        "1h30m",
    ]


def test_bad_budget_flag_is_one_line_exit_2(tiny_csv, tmp_path):
    res = run_cli("train", "--train", tiny_csv, "--out", tmp_path / "run", "--time-budget", "8 minutes")
    assert res.returncode == 2
    assert "--time-budget" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# --- a budgeted run on a tiny model ------------------------------------------------------------------------------


def _plan_of(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["time_plan"]


@pytest.fixture(scope="module")
def budgeted(tiny_bert_dir, tmp_path_factory):
    """A 20 s budget on 400 tiny rows: (run folder, train csv, command seconds, stderr)."""
    d = tmp_path_factory.mktemp("budget")
    csv = write_text_csv(d / "train.csv", 400, seed=3)
    started = time.monotonic()
    res = ok(run_cli("train", "--model", tiny_bert_dir, "--train", csv, "--out", d / "run", "--time-budget", "20s",
                     "--epochs", "50", *TINY))  # fmt: skip
    return d / "run", csv, time.monotonic() - started, res.stderr


def test_budgeted_run_ends_within_budget_and_says_its_plan(budgeted):
    run, _, seconds, stderr = budgeted
    plan = _plan_of(run)
    assert plan["steps"] > 0 and plan["evaluations"] >= 1
    print(f"budgeted tiny run: {seconds:.1f} s of 20 s; plan {plan}")
    assert seconds < 20 * 1.05, seconds
    line = next(x for x in stderr.splitlines() if x.startswith("20s budget:"))
    assert f"{plan['steps']:,} steps" in line and "finishing about" in line
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert recipe["train"]["time_budget"] is None and recipe["train"]["max_steps"] == plan["steps"]


def test_plan_reproduces_without_timing(budgeted, tiny_bert_dir, tmp_path):
    run, csv, _, _ = budgeted
    plan = _plan_of(run)
    assert (
        not plan["replans"] and plan["stopped_at"] is None
    )  # a tiny run on an idle enough machine keeps its plan
    ok(run_cli("train", "--model", tiny_bert_dir, "--train", csv, "--out", tmp_path / "again", "--epochs", "50",
               *TINY, *plan["overrides"]))  # fmt: skip
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
