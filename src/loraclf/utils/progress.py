"""Progress reporting: redrawn bars on a terminal, plain lines in a log.

On a terminal, tqdm bars show rate and ETA. Redirected to a file, a redrawn bar leaves hundreds of carriage-return
fragments, so there the short bars (tokenising, evaluation, prediction) stay silent and the training loop prints
one plain line every ``LOG_EVERY`` seconds instead. ``--quiet`` (or ``LORACLF_QUIET=1``) silences both.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

LOG_EVERY = 30.0


def interactive() -> bool:
    """Whether stderr is a terminal that can redraw a bar."""
    return sys.stderr.isatty()


def bar(total: int, desc: str, progress: bool, unit: str = "text") -> tqdm:
    """A transient bar for a short step; shown only on a terminal and when progress is on."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not (progress and interactive()), leave=False)


class TrainProgress:
    """The training loop's progress: a tqdm bar on a terminal, a line every ``LOG_EVERY`` s in a log."""

    def __init__(self, total: int, initial: int, enabled: bool, deadline: float | None = None):
        """``deadline``: ``time.monotonic()`` when a time budget runs out; the bar then counts down to it."""
        self.total, self.step, self.deadline = total, initial, deadline
        self.bar = None
        self.log = enabled and not interactive()
        if enabled and interactive():
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)
        self.started, self.first, self.last = time.perf_counter(), initial, time.perf_counter()

    def update(self, **stats: str) -> None:
        """One optimizer step done; ``stats`` (loss, acc, samples/s) are shown beside the count."""
        self.step += 1
        if self.deadline is not None:
            stats["budget_left"] = _clock(self.deadline - time.monotonic())
        if self.bar is not None:
            self.bar.set_postfix(refresh=False, **stats)  # the bar redraws at its own pace
            self.bar.update(1)
        elif self.log and (time.perf_counter() - self.last >= LOG_EVERY or self.step == self.total):
            now = time.perf_counter()
            rate = (self.step - self.first) / max(now - self.started, 1e-9)
            left = (self.total - self.step) / rate if rate > 0 else 0.0
            names = {"samples_s": "samples/s", "budget_left": "budget left"}
            shown = ", ".join(f"{names.get(k, k)} {v}" for k, v in stats.items())
            print(
                f"train: step {self.step:,}/{self.total:,} ({self.step / self.total:.0%}), {shown}, "
                f"about {_clock(left)} left",
                file=sys.stderr,
                flush=True,
            )
            self.last = now

    def set_total(self, total: int) -> None:
        """A new number of steps (a time budget's re-plan)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def write(self, message: str) -> None:
        """A line that must not be torn by the bar (evaluation results)."""
        if self.bar is not None:
            tqdm.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"
