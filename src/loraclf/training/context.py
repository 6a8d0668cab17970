"""The state one run's phases share, passed as one object instead of ten arguments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loraclf.runfolder.metrics_log import MetricsLogger, NullLogger
from loraclf.training.averaging import WeightAverage
from loraclf.training.budget import BudgetPlan
from loraclf.training.interrupts import Interrupts
from loraclf.training.prepare import Prepared
from loraclf.training.session import Session
from loraclf.training.state import TrainState
from loraclf.utils.progress import TrainProgress


@dataclass
class LoopContext:
    """What the phases of one run share: the prepared data, the folder, the live session and the state.

    Attributes:
        rng: The random-number state at the last step boundary (what a checkpoint saves).
        started: ``time.perf_counter()`` origin of the run's wall time, resumed runs included.
        window: ``[start, rows]`` of the progress bar's speed, which counts optimisation time only.
        last_save: ``checkpointing.clock()`` at the last checkpoint (time-based saves count from here).
        on_evaluate: ``train()``'s evaluation callback (sweeps report to their pruner through it).
        budget: The time plan of a budgeted run (training/budget.py) while its deadline is kept, else None.
        clock: ``time.monotonic()`` when the command started (a budget counts from there).
        average: The running mean of the trainable weights (``train.swa_start``; training/averaging.py), or None.
    """

    p: Prepared
    out: Path
    s: Session
    state: TrainState
    device: torch.device
    precision: str
    interrupts: Interrupts = field(default_factory=Interrupts)
    logger: MetricsLogger | NullLogger = field(default_factory=NullLogger)
    bar: TrainProgress | None = None
    rng: dict = field(default_factory=dict)
    started: float = 0.0
    window: list = field(default_factory=lambda: [0.0, 0])
    last_save: float = 0.0
    on_evaluate: Callable[[int, dict], bool] | None = None
    budget: BudgetPlan | None = None
    clock: float = 0.0
    average: WeightAverage | None = None
