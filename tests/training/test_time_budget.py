"""Time budgets (train.time_budget, --time-budget): durations, the plan, its reproduction, the deadline, sweeps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli, write_text_csv
from loraclf.training.budget import BudgetPlan, Rates, lay_out, must_stop, replan
from loraclf.utils.errors import UserError

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


def ok(res):
    assert res.returncode == 0, res
    return res


def test_bad_budget_flag_is_one_line_exit_2(tiny_csv, tmp_path):
    res = run_cli("train", "--train", tiny_csv, "--out", tmp_path / "run", "--time-budget", "8 minutes")
    assert res.returncode == 2
    assert "--time-budget" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_budget_with_several_processes_is_refused_at_once(tiny_csv, tmp_path):
    res = run_cli(
        "train", "--train", tiny_csv, "--out", tmp_path / "run", "--time-budget", "8m", "--nproc", "2"
    )
    assert res.returncode == 2 and "--time-budget plans one process" in res.stderr
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
    assert set(plan["actual"]) == {"setup", "training", "finishing", "total"}
    assert plan["actual"]["total"] <= seconds
    page = (run / "report.html").read_text()
    assert "Time budget" in page and "planned s" in page and "actual s" in page


def test_plan_reproduces_without_timing(budgeted, tiny_bert_dir, tmp_path):
    run, csv, _, _ = budgeted
    plan = _plan_of(run)
    # On a busy machine the run may have re-planned: its overrides then hold the cuts (train.replans) as well.
    assert plan["stopped_at"] is None or any(c["steps"] == plan["stopped_at"] for c in plan["replans"])
    ok(run_cli("train", "--model", tiny_bert_dir, "--train", csv, "--out", tmp_path / "again", "--epochs", "50",
               *TINY, *plan["overrides"]))  # fmt: skip
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()


# --- the plan as arithmetic ---------------------------------------------------------------------------------------

RATES = Rates(step_seconds=0.5, eval_seconds=5.0, export_seconds=10.0)


def test_lay_out_fits_the_budget_and_keeps_the_epoch_ceiling():
    plan = lay_out(
        600, 30, RATES, n_train=100_000, min_class_rows=20_000, batch_size=32, grad_accum=1, max_epochs=2
    )
    spent = plan.setup_seconds + plan.steps * 0.5 + plan.evaluations * 5 + plan.finish_seconds
    assert spent <= 600 - plan.margin_seconds and spent == pytest.approx(plan.estimated_seconds, abs=0.01)
    assert 600 - plan.margin_seconds - spent < 0.5 + 5  # nothing that would still fit is left out
    assert plan.sampled and plan.rows == plan.steps * 32 and plan.epochs == 1.0
    small = lay_out(
        600, 30, RATES, n_train=3_200, min_class_rows=800, batch_size=32, grad_accum=1, max_epochs=2
    )
    assert small.steps == 200 and not small.sampled and small.evaluations == 3  # 2 epochs, done early
    assert small.estimated_seconds < 600 / 2


def test_sampled_rows_keep_the_rarest_class():
    plan = lay_out(
        100, 10, RATES, n_train=10_000, min_class_rows=10, batch_size=8, grad_accum=1, max_epochs=1
    )
    assert plan.sampled and plan.rows >= 1000  # 10,000 / 10: the rarest class keeps one row


def test_too_short_a_budget_says_what_would_do():
    with pytest.raises(UserError, match=r"--time-budget 20s is too short.*give at least"):
        lay_out(20, 15, RATES, n_train=1000, min_class_rows=100, batch_size=8, grad_accum=1, max_epochs=1)


def test_the_one_off_cost_of_new_batch_shapes_is_planned_once_not_per_step():
    plain = lay_out(600, 30, RATES, n_train=100_000, min_class_rows=20_000, batch_size=32, grad_accum=1,
                    max_epochs=2)  # fmt: skip
    shapes = Rates(step_seconds=0.5, eval_seconds=5.0, export_seconds=10.0, new_shapes_seconds=20.0)
    planned = lay_out(600, 30, shapes, n_train=100_000, min_class_rows=20_000, batch_size=32, grad_accum=1,
                      max_epochs=2)  # fmt: skip
    assert planned.steps == plain.steps - 40  # 20 s at 0.5 s a step, once
    assert planned.estimated_seconds == pytest.approx(plain.estimated_seconds, abs=0.6)
    # A run on time whose first steps paid those 20 s is not cut; priced into every step, it would have been.
    on_time = _plan(new_shapes_seconds=20.0, steps=60)
    assert replan(on_time, 25, 20 + 25 * 0.5 + 20, 25 * 0.5 + 20) is None
    assert replan(_plan(steps=60), 25, 20 + 25 * 0.5 + 20, 25 * 0.5 + 20) is not None


def _plan(**kw) -> BudgetPlan:
    base = dict(budget_seconds=100.0, steps=100, rows=800, sampled=False, eval_every=25, evaluations=4, epochs=1.0,
                samples_per_s=16.0, step_seconds=0.5, eval_seconds=2.0, finish_seconds=10.0, margin_seconds=6.0,
                setup_seconds=20.0, estimated_seconds=88.0)  # fmt: skip
    return BudgetPlan(**{**base, **kw})


def test_replan_only_when_the_plan_no_longer_fits():
    plan = _plan()
    assert replan(plan, 25, 20 + 25 * 0.5 + 2, 25 * 0.5 + 2) is None  # on time
    assert replan(plan, 25, 20 + 25 * 0.55 + 2, 25 * 0.55 + 2) is None  # a little slow: the margin absorbs it
    assert replan(plan, 2, 40, 20) is None  # the first steps are not judged
    total = replan(plan, 25, 20 + 25 * 1.0, 25 * 1.0)  # twice as slow
    assert 25 < total < 100
    per_step = 25 / 25
    assert (
        20 + 25 + (total - 25) * per_step + plan.finish_seconds
        <= plan.budget_seconds - plan.margin_seconds + 1
    )
    assert must_stop(plan, 100 - 10 - 2) and not must_stop(plan, 50)


def test_schedule_ends_at_the_planned_step_and_after_a_cut():
    import torch

    from loraclf.config import Recipe
    from loraclf.training.session import make_scheduler

    def lrs(recipe, total):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(opt, recipe, total)
        out = [opt.param_groups[0]["lr"]]
        for _ in range(total):
            opt.step()
            sched.step()
            out.append(opt.param_groups[0]["lr"])
        return out

    r = Recipe()
    plain = lrs(r, 100)
    assert plain[100] == 0.0 and max(plain) == pytest.approx(1.0)
    r.train.replans = [40, 60]
    cut = lrs(r, 100)
    assert cut[:41] == plain[:41]  # the same until the cut
    assert cut[60] == 0.0 and cut[50] == pytest.approx(plain[40] / 2)  # then linear to 0 at the new total


# --- less than an epoch ------------------------------------------------------------------------------------------


def test_sub_epoch_sample_covers_every_class_without_repeats(tiny_bert_dir, tmp_path):
    from loraclf.config import Recipe, apply_overrides
    from loraclf.data.batching import epoch_batches
    from loraclf.training.prepare import prepare
    from loraclf.training.warmup import _sampled

    csv = write_text_csv(tmp_path / "train.csv", 400, seed=5)
    r = apply_overrides(
        Recipe(), [f"model.name={tiny_bert_dir}", "model.head=linear", "train.progress=false"]
    )
    p = prepare(r, str(csv), None)
    plan = lay_out(40, 1, Rates(step_seconds=1.0, eval_seconds=1.0), len(p.train), 90, 8, 1, 3.0)
    assert plan.sampled and plan.rows == plan.steps * 8
    r.train.max_steps, r.data.max_train_samples = plan.steps, plan.rows
    q = _sampled(p, r)
    assert len(q.train) == plan.rows and set(q.train.labels.tolist()) == set(range(len(p.label_map)))
    counts = np.bincount(q.train.labels)
    assert counts.max() - counts.min() <= 1  # stratified: the classes of the fixture are balanced
    seen = np.concatenate(epoch_batches(np.array([len(x) for x in q.train_ids]), 8, r.train.seed, 0, True))
    assert len(seen) == len(set(seen.tolist())) == plan.rows  # the planned steps see each sampled row once
    # The same rows as reading the files with the plan's keys (what --resume and a reproduction do).
    again = prepare(r, str(csv), None)
    assert again.train.texts == q.train.texts and again.notes["rows_digest"] == q.notes["rows_digest"]


# --- resume ------------------------------------------------------------------------------------------------------


def test_resume_continues_the_same_plan(budgeted, tiny_bert_dir, tmp_path):
    """A budgeted run stopped at its first evaluation and resumed trains the weights its plan gives from scratch."""
    from loraclf.config import Recipe, apply_overrides
    from loraclf.training.loop import train
    from loraclf.training.prepare import prepare

    _, csv, _, _ = budgeted
    keys = [f"model.name={tiny_bert_dir}", "model.head=linear", "train.progress=false", "train.batch_size=8",
            "train.lr=2e-2", "train.threads=1", "train.epochs=50", "train.time_budget=12s"]  # fmt: skip
    p = prepare(apply_overrides(Recipe(), keys), str(csv), None)

    def stop(step, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(p, tmp_path / "cut", on_evaluate=stop)
    plan = _plan_of(tmp_path / "cut")
    assert plan["steps"] > plan["eval_every"]  # stopped before the end
    ok(run_cli("train", "--resume", tmp_path / "cut", "--quiet"))
    assert _plan_of(tmp_path / "cut")["steps"] == plan["steps"]
    ok(run_cli("train", "--model", tiny_bert_dir, "--train", csv, "--out", tmp_path / "fresh", "--epochs", "50",
               *TINY, *plan["overrides"]))  # fmt: skip
    assert (tmp_path / "fresh" / "model.safetensors").read_bytes() == (
        tmp_path / "cut" / "model.safetensors"
    ).read_bytes()


# --- the benchmark script ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_time_budget_benchmark_runs_on_a_tiny_model(tiny_bert_dir, tmp_path):
    import subprocess
    import sys

    from conftest import REPO, cli_env

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"model: {{name: {tiny_bert_dir}, head: linear}}\n"
        "train: {epochs: 5, batch_size: 8, lr: 2.0e-2, threads: 1}\n"
    )
    train, test = (
        write_text_csv(tmp_path / "train.csv", 300, seed=1),
        write_text_csv(tmp_path / "test.csv", 60, 2),
    )
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "time_budget.py"), "--budgets", "25s", "--recipe", str(recipe),
         "--train", str(train), "--test", str(test), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=cli_env(), timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.splitlines()[0])
    assert row["command_s"] < 25 * 1.05 and row["steps_run"] > 0 and row["test_accuracy"] > 0.5
    assert (tmp_path / "out" / "time_budget.csv").is_file()


@pytest.mark.slow
def test_plan_with_the_frozen_layer_cache_reproduces(tiny_bert_dir, tmp_path):
    """Adapters on the upper layer only: the cache is built after the warm-up, over the planned rows."""
    csv = write_text_csv(tmp_path / "train.csv", 300, seed=4)
    extra = ["--epochs", "50", *TINY, "adapter.layers=[1]"]
    res = ok(run_cli("train", "--model", tiny_bert_dir, "--train", csv, "--out", tmp_path / "a", "--time-budget",
                     "15s", *extra))  # fmt: skip
    plan = _plan_of(tmp_path / "a")
    assert f"layers 0-0 computed once for {plan['rows']:,} rows" in res.stderr
    ok(run_cli("train", "--model", tiny_bert_dir, "--train", csv, "--out", tmp_path / "b", *extra,
               *plan["overrides"]))  # fmt: skip
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()


def test_the_frozen_cache_is_priced_once_over_the_rows_seen():
    rates = Rates(step_seconds=0.5, eval_seconds=5.0, cache_row_seconds=0.01)
    plan = lay_out(
        600, 30, rates, n_train=3_200, min_class_rows=800, batch_size=32, grad_accum=1, max_epochs=20
    )
    assert not plan.sampled and plan.epochs > 1
    spent = plan.setup_seconds + plan.steps * 0.5 + plan.evaluations * 5 + 3_200 * 0.01 + plan.finish_seconds
    assert spent <= 600 - plan.margin_seconds and spent == pytest.approx(plan.estimated_seconds, abs=0.01)
    assert 600 - plan.margin_seconds - spent < 0.5 + 5
