"""A sweep's time budget (``loraclf sweep --time-budget 2h``): each trial gets its share, none runs past the deadline.

Optuna's study ``timeout`` only stops *starting* trials, so the last one may run long past it. Here every trial is a
time-budgeted run (``train.time_budget``, training/budget.py): when it starts, it gets what is left of the study's
budget divided by the trials still to come (at least :data:`MIN_TRIAL_SECONDS`, so that a trial can train at all),
or its own ``train.time_budget`` when the recipe or the space sets one (a searched key like any other), never more
than what is left. No trial starts with less than the minimum left, and trials end within their budgets, so the
study ends within its own. The time of ``--top`` retraining comes after the study and is not part of it.
"""

from __future__ import annotations

import time

MIN_TRIAL_SECONDS = 60.0  # less than this does not cover preparing, a few steps and finishing a MiniLM run


def trial_seconds(left: float, trials_left: int, own: float | None, minimum: float) -> float | None:
    """The time budget of the next trial, or None when it should not start.

    Args:
        left: Seconds left of the study's budget.
        trials_left: Trials still to run, this one included.
        own: The trial's own ``train.time_budget`` (seconds), or None.
        minimum: The least budget worth starting a trial with.
    """
    if left < minimum or trials_left < 1:
        return None
    share = own if own is not None else max(left / trials_left, minimum)
    return min(share, left)


class StudyClock:
    """The deadline of one ``loraclf sweep`` command and the trials it has started."""

    def __init__(self, budget: float, trials: int, started: float, minimum: float = MIN_TRIAL_SECONDS):
        """``started``: ``time.monotonic()`` when the command began; ``minimum`` is capped at a quarter of the
        budget (a short study still runs trials)."""
        self.deadline, self.trials, self.begun = started + budget, trials, 0
        self.minimum = min(minimum, budget / 4)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def trial_budget(self, own) -> float:
        """Seconds for the trial starting now (``own``: its recipe's ``train.time_budget``, any spelling)."""
        from loraclf.utils.durations import parse_duration

        seconds = trial_seconds(
            self.left(), self.trials - self.begun, parse_duration(own), min(self.minimum, self.left())
        )
        self.begun += 1
        return round(seconds if seconds is not None else max(self.left(), 1.0), 1)

    def room_for_another(self, _study=None) -> bool:
        """Whether another trial may start: trials remain and at least the minimum is left."""
        return self.begun < self.trials and self.left() >= self.minimum

    def timeout(self, user_timeout: float | None) -> float:
        """Optuna's ``timeout`` (no trial starts after it): the time until only the minimum is left."""
        until = max(self.left() - self.minimum, 0.0)
        return until if user_timeout is None else min(until, user_timeout)
