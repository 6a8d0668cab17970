"""Where a run is: the part of training that a checkpoint writes as JSON, and the error that stops a diverged run.

A :class:`TrainState` changes only at step boundaries (training/loop.py applies each optimizer step's update as a
whole, signals deferred), so a checkpoint taken at any moment holds one consistent boundary: the weights and
optimizer after step ``step``, the data position of the next step, the best evaluation so far and the statistics of
the log window. Together with the random-number state snapshotted at the same boundary (a checkpoint's
``trainer.pt``), a resumed run continues with the bytes an uninterrupted run would have
(tests/training/test_interrupts.py compares the weights).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from loraclf.runfolder.checkpoint import list_checkpoints
from loraclf.utils.errors import UserError

LOG_EVERY_STEPS = 20  # train lines in metrics.jsonl; the device-side statistics are read only then


@dataclass
class TrainState:
    """The position and history of a run, as of its last finished optimizer step.

    Attributes:
        step: Optimizer steps finished.
        epoch, batch: The data position: the next batch of that epoch's length-grouped order (the same order at
            any world size; ``data/batching.py``).
        evaluated: The step of the newest evaluation whose result is in this state (``best``, ``bad_evals`` and
            the weights in ``model.safetensors``); below ``step`` at an evaluation step means an interruption
            came during that evaluation, and a resumed run evaluates first.
        best, best_loss, best_step: The best evaluation so far by ``train.metric`` (ties: lower loss).
        bad_evals: Evaluations since the best, for early stopping.
        samples: Training rows processed (summed over ranks).
        train_seconds: Wall time since the start, across resumes; pause_seconds the part spent evaluating and
            checkpointing, kept out of samples/s.
        loss_sum, correct, seen: Statistics of the log window since the last train line (so that a resumed run
            logs the numbers an uninterrupted one logs).
        shown: (loss, accuracy) of the last train line, for the progress bar.
        world: How many ranks wrote it (each rank's random stream is part of the checkpoint).
    """

    step: int = 0
    epoch: int = 0
    batch: int = 0
    evaluated: int = 0
    best: float | None = None
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    pause_seconds: float = 0.0
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    shown: tuple[float, float] | None = None
    world: int = 1

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainState:
        """A state from its JSON; checkpoints written before ``evaluated`` existed evaluated at their own step."""
        names = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in names})
        if "evaluated" not in data:
            state.evaluated = data.get("step", 0)
        if isinstance(state.shown, list):
            state.shown = tuple(state.shown)
        return state


class Diverged(UserError):
    """A NaN or infinite loss. The newest checkpoint (written before the fault) stays for inspection or resume."""

    def __init__(self, out: Path, loss: float, step: int):
        ckpts = list_checkpoints(out)
        self.checkpoint = ckpts[-1] if ckpts else None
        kept = (
            f"the last good checkpoint is kept in {self.checkpoint}"
            if self.checkpoint
            else "no checkpoint was written yet"
        )
        super().__init__(
            f"training diverged: loss is {loss} at step {step + 1:,}; {kept}; "
            "lower train.lr, raise train.warmup_ratio or use train.precision=fp32"
        )
