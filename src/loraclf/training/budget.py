"""Planning a run to a time budget (``train.time_budget``, ``--time-budget 8m``): how many steps, rows and
evaluations fit, and keeping the run to that plan.

The whole command must end within the budget, so the plan starts from what is left of it after preparing (reading,
tokenising, building the model) and a short timed warm-up (training/warmup.py measures one optimizer step and one
validation row at the recipe's real batch shapes). From that remainder it takes, in this order:

* the **finishing** costs: the final evaluation of the validation rows, the int8 export on a CPU (estimated from the
  model's size), calibration and the report;
* a **safety margin** of :data:`MARGIN_SHARE` of the budget plus :data:`MARGIN_SECONDS` (timing noise, checkpoints);
* the **evaluations** during training (one per epoch, at least :data:`MIN_EVALUATIONS`, at most
  :data:`EVAL_SHARE` of the training time);

and the optimizer steps fill the rest, never more than ``train.epochs`` allows (a budget larger than the recipe
needs finishes early). Fewer steps than an epoch train on a stratified sample of exactly the rows those steps see
(``data.max_train_samples``), so that every class is present and no row repeats.

The plan is data: :meth:`BudgetPlan.overrides` are the recipe keys that reproduce it without any timing
(``train.max_steps``, ``train.eval_every``, ``data.max_train_samples``, ``data.max_length``, and
``train.replans`` after re-plans). The run folder's
``recipe.yaml`` holds them (with ``train.time_budget`` cleared) and run.json's ``time_plan`` the plan, so
``--resume`` continues the same plan and ``loraclf train --config RUN/recipe.yaml`` trains the same weights.

**Drift.** On a shared machine the steps may slow down after the warm-up. After each step the loop compares the
speed seen so far with the plan (:func:`replan`, at most once per :data:`REPLAN_SPACING` of the steps); when the remaining steps at that speed would eat more than
:data:`DRIFT_TOLERANCE` of the safety margin, they are cut to what still fits and the learning-rate decay is laid
over the new remainder (session.py's ``relay_schedule``); each re-plan is logged, and recorded in ``time_plan`` and
in the recipe's ``train.replans``, so a re-planned run reproduces too. As a last guard, :func:`must_stop` ends
training at a step boundary (with a last evaluation) when finishing would no longer fit before the deadline; that
is recorded as a re-plan to the current step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from loraclf.utils.durations import format_duration
from loraclf.utils.errors import PointError

MARGIN_SHARE = 0.04  # of the budget, kept free for timing noise and checkpoints
MARGIN_SECONDS = 2.0
EVAL_SHARE = 0.15  # the most of the training time that evaluations during training may take
MIN_EVALUATIONS = 3
DRIFT_TOLERANCE = 0.5  # re-plan when the run, at the speed seen, would use more than this share of the margin
REPLAN_SPACING = 0.05  # of the planned steps: the least distance between two re-plans
FIRST_CHECK = 3  # steps before the speed is judged
REPORT_SECONDS = 4.0  # drawing report.html and its figures (measured 2-3 s on a 2-core EPYC)
EXPORT_SECONDS_PER_MPARAM = 0.5  # int8 ONNX export, per million parameters (MiniLM, 23.2M: 6-14 s measured)
EXPORT_SECONDS = 3.0


@dataclass
class Rates:
    """What the warm-up measured on this machine (seconds).

    Attributes:
        step_seconds: One optimizer step, averaged over an epoch's real mix of batch widths.
        eval_seconds: One evaluation of all validation rows (PyTorch, ``train.eval_batch_size``).
        cache_row_seconds: Building the frozen-layer cache, per training row (0 when the cache does not apply).
        export_seconds: The int8 export after training (0 when the run does not export).
        warmup_seconds: How long measuring took (already spent).
        new_shapes_seconds: The one-off cost of the batch shapes training will meet for the first time (kernel
            selection and allocation), in all.
    """

    step_seconds: float
    eval_seconds: float
    cache_row_seconds: float = 0.0
    export_seconds: float = 0.0
    warmup_seconds: float = 0.0
    new_shapes_seconds: float = 0.0


@dataclass
class BudgetPlan:
    """The plan of a budgeted run, as recorded in run.json's ``time_plan`` (seconds; rows are training rows)."""

    budget_seconds: float
    steps: int
    rows: int
    sampled: bool
    eval_every: int
    evaluations: int
    epochs: float
    samples_per_s: float
    step_seconds: float
    eval_seconds: float
    finish_seconds: float
    margin_seconds: float
    setup_seconds: float
    estimated_seconds: float
    max_length: int = 0
    warmup_seconds: float = 0.0
    new_shapes_seconds: float = 0.0  # the one-off cost of batch shapes not met in the warm-up (Rates)
    replans: list = field(default_factory=list)
    stopped_at: int | None = None
    actual: dict = field(
        default_factory=dict
    )  # seconds per phase as they went: setup, training, finishing, total

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "overrides": self.overrides()}

    @classmethod
    def from_dict(cls, data: dict) -> BudgetPlan:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def overrides(self) -> list[str]:
        """The recipe keys that reproduce this plan without timing (the run's recipe.yaml holds them)."""
        keys = [f"train.max_steps={self.steps}", f"train.eval_every={self.eval_every}"]
        if self.sampled:
            keys.append(f"data.max_train_samples={self.rows}")
        if self.replans:
            cuts = ",".join(f"{c['step']},{c['steps']}" for c in self.replans)
            keys.append(f"train.replans=[{cuts}]")
        return [*keys, f"data.max_length={self.max_length}"]

    def line(self) -> str:
        """``8m budget: 5,120 steps = 1.6 epochs at 57 samples/s, 3 evaluations, finishing about 7m40s``."""
        if self.sampled:
            span = f"one pass over a stratified sample of {self.rows:,} rows"
        else:
            span = f"{self.epochs:.3g} epoch{'s' * (self.epochs != 1)}"
        return (
            f"{format_duration(self.budget_seconds)} budget: {self.steps:,} steps = {span} at "
            f"{self.samples_per_s:.0f} samples/s, {self.evaluations} evaluation{'s' * (self.evaluations != 1)}, "
            f"finishing about {format_duration(self.estimated_seconds)}"
        )


def lay_out(
    budget: float,
    elapsed: float,
    rates: Rates,
    n_train: int,
    min_class_rows: int,
    batch_size: int,
    grad_accum: int,
    max_epochs: float,
    max_steps: int | None = None,
) -> BudgetPlan:
    """The steps, rows and evaluations that fit in what is left of ``budget`` after ``elapsed`` seconds.

    Args:
        budget, elapsed: The whole command's time and the part already spent (preparing, warm-up), seconds.
        rates: The warm-up's measurements.
        n_train, min_class_rows: Training rows available, and those of the rarest class (a sample keeps one).
        batch_size, grad_accum: The recipe's batch shape (rows per optimizer step = their product).
        max_epochs, max_steps: ``train.epochs`` and ``train.max_steps`` (None: unset): ceilings when the budget
            allows more.

    Raises:
        PointError: the budget does not cover preparing, finishing and one step; names ``--time-budget`` and the
            least budget that would (in a sweep, only that trial fails).
    """
    margin = MARGIN_SHARE * budget + MARGIN_SECONDS
    finish = rates.eval_seconds + rates.export_seconds + REPORT_SECONDS
    rows_per_step = batch_size * grad_accum
    steps_per_epoch = math.ceil(math.ceil(n_train / batch_size) / grad_accum)
    ceiling = max(1, math.ceil(max_epochs * steps_per_epoch))
    ceiling = ceiling if max_steps is None else min(ceiling, max_steps)
    left = budget - elapsed - finish - margin - rates.new_shapes_seconds
    # Evaluations take at most EVAL_SHARE of the time left; the last step is always evaluated.
    eval_cap = max(1, int(EVAL_SHARE * left / max(rates.eval_seconds, 1e-9)))

    def fitting(evaluations: int) -> int:
        return min(ceiling, _steps_in(left - evaluations * rates.eval_seconds, rates, rows_per_step, n_train))

    steps = 0
    most = max(MIN_EVALUATIONS, math.ceil(ceiling / steps_per_epoch))  # one per epoch, at least three
    for evaluations in range(min(eval_cap, most), 0, -1):
        steps = fitting(evaluations)
        if steps >= 1:
            break
    if steps < 1:
        one_step = rates.step_seconds + rows_per_step * rates.cache_row_seconds
        need = elapsed + finish + margin + rates.eval_seconds + one_step
        raise _too_short(budget, elapsed, finish, need)
    rows = _rows_seen(n_train, min_class_rows, steps * rows_per_step)
    sampled = rows < n_train
    epochs = steps * rows_per_step / max(rows, 1)
    per_epoch = math.ceil(math.ceil(rows / batch_size) / grad_accum)
    wanted = max(min(MIN_EVALUATIONS, evaluations), math.ceil(steps / per_epoch))
    evaluations = min(wanted, evaluations, steps)
    if not sampled:  # time reserved for evaluations that will not run goes to steps
        steps = max(steps, fitting(evaluations))
        epochs = steps * rows_per_step / max(rows, 1)
    eval_every = math.ceil(steps / evaluations)
    evaluations = math.ceil(steps / eval_every)
    train_seconds = (
        steps * rates.step_seconds + evaluations * rates.eval_seconds + rows * rates.cache_row_seconds
    )
    return BudgetPlan(
        budget_seconds=budget,
        steps=steps,
        rows=rows,
        sampled=sampled,
        eval_every=eval_every,
        evaluations=evaluations,
        epochs=round(epochs, 3),
        samples_per_s=round(rows_per_step / rates.step_seconds, 2),
        step_seconds=round(rates.step_seconds, 4),
        eval_seconds=round(rates.eval_seconds, 3),
        finish_seconds=round(finish, 2),
        margin_seconds=round(margin, 2),
        setup_seconds=round(elapsed, 2),
        warmup_seconds=round(rates.warmup_seconds, 2),
        new_shapes_seconds=round(rates.new_shapes_seconds, 2),
        estimated_seconds=round(elapsed + train_seconds + rates.new_shapes_seconds + finish, 2),
    )


def _steps_in(seconds: float, rates: Rates, rows_per_step: int, n_train: int) -> int:
    """Optimizer steps that fit in ``seconds`` of training, the frozen-layer cache priced per row it covers."""
    steps = int(seconds / (rates.step_seconds + rows_per_step * rates.cache_row_seconds))
    if steps * rows_per_step >= n_train:  # an epoch or more: the cache is built once over every row
        steps = int((seconds - n_train * rates.cache_row_seconds) / rates.step_seconds)
    return steps


def _too_short(budget: float, elapsed: float, finish: float, need: float) -> PointError:
    """The one-line error of a budget that does not cover preparing, finishing and one step."""
    return PointError(
        f"--time-budget {format_duration(budget)} is too short: preparing took {format_duration(elapsed)} and "
        f"finishing needs about {format_duration(finish)}; give at least {format_duration(need * 1.2)}"
    )


def _rows_seen(n_train: int, min_class_rows: int, wanted: int) -> int:
    """Training rows of a plan that sees ``wanted`` rows: all of them, or a stratified sample that keeps each
    class's share, enlarged so that the rarest class (``min_class_rows`` rows) keeps at least one."""
    if wanted >= n_train:
        return n_train
    return min(n_train, max(wanted, math.ceil(n_train / max(min_class_rows, 1)), 2))


def replan(plan: BudgetPlan, step: int, elapsed: float, trained: float) -> int | None:
    """After ``step`` steps, the new total of steps when the run no longer fits its plan, else None.

    The remaining steps are priced at the speed seen in the training loop so far (evaluations and checkpoints
    included). While the run so priced still ends :data:`DRIFT_TOLERANCE` of the safety margin before the budget,
    the plan stands: the margin absorbs small drift, and a plan that holds is the plan ``train.max_steps``
    reproduces. The first :data:`FIRST_CHECK` steps are not judged (one-off costs of new batch shapes).

    Args:
        plan: The run's plan and its re-plans so far.
        step: Optimizer steps done.
        elapsed: Seconds since the command started.
        trained: Seconds spent in the training loop (from its first step, the frozen-layer cache included).

    Returns:
        None while the plan fits; otherwise the total that fits (at least ``step + 1``), below the current one.
    """
    total = plan.steps if not plan.replans else plan.replans[-1]["steps"]
    if step >= total or step < FIRST_CHECK:
        return None
    # The loop's first steps pay the one-off cost of new batch shapes, which the plan counted apart: priced into
    # every remaining step, it would cut a run that is on time.
    per_step = max(trained - plan.new_shapes_seconds, 0.25 * trained, 1e-9) / step
    projected = elapsed + (total - step) * per_step + plan.finish_seconds
    if projected <= plan.budget_seconds - DRIFT_TOLERANCE * plan.margin_seconds:
        return None
    left = plan.budget_seconds - elapsed - plan.finish_seconds - plan.margin_seconds
    new_total = step + max(1, int(left / per_step))
    return new_total if new_total < total else None


def must_stop(plan: BudgetPlan, elapsed: float) -> bool:
    """Whether training must end now so that finishing (a last evaluation and the finishing costs) ends in time."""
    return elapsed + plan.eval_seconds + plan.finish_seconds > plan.budget_seconds - MARGIN_SECONDS
