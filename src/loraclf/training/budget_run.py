"""Keeping a budgeted run to its plan while it trains: re-plans on drift, the deadline guard, and run.json's record.

The rules are in training/budget.py; here they meet the loop. A re-plan at step k with a new total N' keeps the
learning rate of step k and lays a linear decay from it to zero over steps k..N' (whatever the schedule: the cut run
still ends at its end value); the deadline guard is a re-plan with N' = k. Each is written to the run's recipe
(``train.replans``, session.py's ``relay_schedule``) and to run.json's ``time_plan`` before the checkpoint of that
step, so ``--resume`` continues with the learning rates the interrupted run would have used and the folder's
recipe.yaml reproduces the run without timing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from loraclf.config import save_recipe
from loraclf.runfolder.schema import read_run_info, write_run_info
from loraclf.training.budget import REPLAN_SPACING, BudgetPlan, must_stop, replan
from loraclf.training.session import relay_schedule
from loraclf.utils.durations import format_duration

if TYPE_CHECKING:
    from loraclf.training.context import LoopContext

PLAN_KEY = "time_plan"  # run.json key


def record_plan(out: Path, plan: BudgetPlan) -> None:
    """Write (or update) the plan in run.json's ``time_plan``."""
    info = read_run_info(out)
    info.extra[PLAN_KEY] = plan.as_dict()
    write_run_info(out, info)


def record_phases(out: Path, clock: float, **phases: float) -> None:
    """Add the seconds phases took (``setup``, ``training``; ``finishing`` and ``total`` from ``clock``, the
    command's start) to run.json's plan, beside the estimates (the report sets them side by side)."""
    info = read_run_info(out)
    if PLAN_KEY not in info.extra:
        return
    actual = info.extra[PLAN_KEY].setdefault("actual", {})
    actual.update({k: round(v, 2) for k, v in phases.items()})
    if "finishing" in phases or not phases:
        total = time.monotonic() - clock
        actual["total"] = round(total, 2)
        actual["finishing"] = round(total - actual.get("setup", 0) - actual.get("training", 0), 2)
    write_run_info(out, info)


def read_plan(out: Path) -> BudgetPlan | None:
    """The plan run.json records, or None for a run without a time budget."""
    data = read_run_info(out).extra.get(PLAN_KEY)
    return BudgetPlan.from_dict(data) if data else None


def _elapsed(ctx: LoopContext) -> float:
    return time.monotonic() - ctx.clock


def keep_to_plan(ctx: LoopContext) -> None:
    """After every optimizer step: end the run here when only a last evaluation and finishing still fit
    (budget.must_stop), or cut the remaining steps when at the speed seen they no longer fit (budget.replan; at
    most once per :data:`~loraclf.training.budget.REPLAN_SPACING` of the steps, so that noise cannot cut again and
    again). Called before the step's evaluation: a cut to this step makes it the last step, which is evaluated."""
    plan, step, total = ctx.budget, ctx.state.step, ctx.s.total_steps
    if step >= total:
        return  # the last step: nothing left to cut
    elapsed = _elapsed(ctx)
    if must_stop(plan, elapsed):
        _cut(ctx, step, elapsed, "stopping to finish in time")
        return
    last = plan.replans[-1]["step"] if plan.replans else 0
    if step - last < max(1, round(REPLAN_SPACING * plan.steps)):
        return
    new_total = replan(plan, step, elapsed, time.perf_counter() - ctx.started)
    if new_total is not None:
        _cut(
            ctx,
            new_total,
            elapsed,
            "behind the plan: the learning-rate decay is laid over the remaining steps",
        )


def seen_evaluation(ctx: LoopContext, seconds: float) -> None:
    """An evaluation took ``seconds``: later decisions price evaluations at the slowest seen (the warm-up timed a
    sample of the rows; a loaded machine may be slower)."""
    ctx.budget.eval_seconds = max(ctx.budget.eval_seconds, round(seconds, 3))


def _cut(ctx: LoopContext, total: int, elapsed: float, why: str) -> None:
    """End the run at step ``total`` (the current step: stop now), recorded as a re-plan in the recipe and run.json.

    The recipe's ``train.replans`` gets the cut before this step's checkpoint is written, so ``--resume`` and a
    run of the folder's recipe.yaml continue with the same schedule.
    """
    plan, s, t, step = ctx.budget, ctx.s, ctx.p.recipe.train, ctx.state.step
    plan.replans.append({"step": step, "steps": total, "elapsed": round(elapsed, 2)})
    if total == step:
        plan.stopped_at = step
    t.replans = [*(t.replans or []), step, total]
    relay_schedule(s.scheduler, step, total)
    shown = s.total_steps
    s.total_steps = total
    if s.dist.main:
        save_recipe(ctx.p.recipe, ctx.out / "recipe.yaml")
        record_plan(ctx.out, plan)
        ctx.bar.set_total(total)
        ctx.bar.write(
            f"time budget: {format_duration(elapsed)} used at step {step:,} of {shown:,}; "
            f"training ends at step {total:,} ({why})"
        )
