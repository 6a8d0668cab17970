"""The pruner's side of a trial: each evaluation reported to Optuna as a step, and the answer passed back to training.

Evaluation k is reported as step k, so that trials with other batch sizes compare at the same share of their
training; the last evaluation is the end of the run anyway, so a finished trial is never pruned there. A trial with a
time budget plans its steps itself (training/budget.py): its total is read from its run folder's recipe.yaml, where
the plan and any re-plans are written before the first evaluation.
"""

from __future__ import annotations

import math
from pathlib import Path

from loraclf.utils.errors import UserError


def total_steps(p) -> int:
    """Optimizer steps of a prepared run, counted as ``train()`` counts them."""
    t = p.recipe.train
    steps_per_epoch = math.ceil(math.ceil(len(p.train_ids) / t.batch_size) / t.grad_accum)
    return t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))


class Reporter:
    """``train()``'s ``on_evaluate`` hook: report evaluation k as step k, ask the pruner, stop when told."""

    def __init__(self, trial, metric: str, total: int | None, n_evals: int | None, run: Path | None = None):
        """``total`` (steps) and ``n_evals`` are None for a time-budgeted trial: its plan, in the ``run`` folder's
        recipe.yaml (``train.max_steps``, cut by ``train.replans``), gives the total."""
        self.trial, self.metric, self.total, self.n_evals, self.run = trial, metric, total, n_evals, run
        self.evals, self.pruned_note = 0, ""

    def __call__(self, step: int, m: dict) -> bool:
        self.evals += 1
        self.trial.report(float(m[self.metric]), self.evals)
        total = self.total if self.total is not None or self.run is None else _planned_total(self.run)
        # The last evaluation is the end of the run anyway: a finished trial stays finished.
        if (total is None or step < total) and self.trial.should_prune():
            of = (
                f" of {self.n_evals} (step {step:,} of {self.total:,})" if self.total else f" (step {step:,})"
            )
            self.pruned_note = f"pruned at evaluation {self.evals}{of}"
            return True
        return False


def _planned_total(run: Path) -> int | None:
    """The steps a time-budgeted run plans, from its recipe.yaml (None if unreadable)."""
    from loraclf.config import load_recipe

    try:
        t = load_recipe(run / "recipe.yaml").train
    except UserError:
        return None
    return t.replans[-1] if t.replans else t.max_steps
