"""Checkpoints and interruptions: when to write a resumable checkpoint, what it holds, and how Ctrl-C and SIGTERM
stop a run so that ``loraclf train --resume`` continues it exactly.

**Step boundaries.** An optimizer step's update (optimizer, schedule, the method's hook, the state's position and
statistics, the log line) runs with signals deferred (:meth:`Interrupts.deferred`), and at its end the loop
snapshots the random-number state. Outside that window a signal stops the run at once, and what is saved is the
last boundary: the weights and optimizer have not moved since (a half-done step only accumulated gradients, which
are dropped), and the random state saved is the snapshot, not the live one that the half-done step advanced. So a
run stopped by Ctrl-C, SIGTERM or ``kill -9`` and resumed writes the same ``model.safetensors`` bytes as one that
never stopped (a test compares them with dropout on).

**Evaluations.** A signal during an evaluation stops it; the checkpoint records that the step's evaluation did not
land (``TrainState.evaluated``), and the resumed run evaluates first (training/evaluation.py).

**Several ranks.** A signal reaches every rank at a different point, and a checkpoint is a collective; with more
than one rank an interruption writes nothing, and the run resumes from its newest checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from loraclf.runfolder.checkpoint import CKPT_DIR, list_checkpoints, load_checkpoint, save_checkpoint
from loraclf.training import distributed, steps
from loraclf.training.state import TrainState
from loraclf.utils.errors import UserError, say

if TYPE_CHECKING:
    from loraclf.training.context import LoopContext

# The clock of time-based checkpoints (train.save_every_minutes); monotonic, so a changed system time cannot
# trigger or postpone a save. Tests replace it with a fake clock.
clock = time.monotonic


def due(ctx: LoopContext) -> bool:
    """Every ``save_every`` steps, and whenever ``save_every_minutes`` passed since the last checkpoint, but never
    after the last step (the finished run needs none). Rank 0's clock decides for every rank (a checkpoint is a
    collective).

    Steps alone are not enough on a slow machine: the default (one checkpoint per evaluation, once an epoch) can
    be an hour apart on a CPU, and a run stopped before it keeps nothing. The clock bounds the work a stop loses.
    """
    t, s, step = ctx.p.recipe.train, ctx.s, ctx.state.step
    by_clock = t.save_every_minutes is not None and clock() - ctx.last_save >= 60 * t.save_every_minutes
    return bool(s.dist.first(step % s.save_every == 0 or by_clock)) and step < s.total_steps


def save(ctx: LoopContext) -> Path | None:
    """Write a resumable checkpoint of the last step boundary (rank 0 writes, every rank sends its random state);
    returns its folder on rank 0."""
    s, state = ctx.s, ctx.state
    steps.read_stats(s, state)
    ranks = (
        s.dist.gather_objects(ctx.rng) if s.dist.world > 1 else None
    )  # a collective: every rank takes part
    path = None
    if s.dist.main:
        path = save_checkpoint(
            ctx.out,
            state.step,
            s.model,
            s.optimizer,
            s.scheduler,
            s.scaler,
            state.as_dict(),
            ctx.p.recipe.train.keep_checkpoints,
            rng=ctx.rng,
            rank_rng=ranks,
            method_state=s.method.checkpoint_state(s.model)
            if s.method.checkpoint_state is not None
            else None,
            average=ctx.average.state() if ctx.average is not None else None,
        )
    ctx.last_save = clock()
    return path


def save_on_interrupt(ctx: LoopContext) -> None:
    """Ctrl-C or SIGTERM: keep the last step boundary as a checkpoint, and say how to continue."""
    out, state = ctx.out, ctx.state
    if ctx.s.dist.world > 1:
        say(
            f"interrupted at step {state.step}; `loraclf train --resume {out}` continues from the last checkpoint"
        )
        return
    if state.step == 0:
        say(
            "interrupted before the first optimizer step finished: no checkpoint; "
            f"`loraclf train --resume {out}` starts from step 0"
        )
        return
    state.train_seconds = time.perf_counter() - ctx.started
    with ctx.interrupts.deferred():  # a second Ctrl-C must not cut this checkpoint in half
        path = save(ctx)
    say(
        f"interrupted at step {state.step}: checkpoint written to {path}; continue with `loraclf train --resume {out}`"
    )


def restore(ctx: LoopContext) -> TrainState:
    """The state of the newest checkpoint, loaded into the session's live objects (a fresh state when none).

    Raises:
        UserError: the checkpoint was written by another number of ranks, or does not fit the model.
    """
    s, out = ctx.s, ctx.out
    ckpts = list_checkpoints(out)
    if not ckpts:
        if s.dist.main:
            say("no checkpoint yet: starting from step 0")
        return TrainState(world=s.dist.world)
    blob = load_checkpoint(
        ckpts[-1], s.model, s.optimizer, s.scheduler, s.scaler, s.dist.rank, s.method.restore_state,
        restore_average=ctx.average.load if ctx.average is not None else None,
    )  # fmt: skip
    state = TrainState.from_dict(blob)
    if state.world != s.dist.world:
        raise UserError(
            f"--resume: {ckpts[-1]} was written by {state.world} process(es), this job has {s.dist.world}; "
            f"resume with the same number (e.g. `torchrun --nproc-per-node {state.world} -m loraclf train "
            "--resume …`), since each rank's random-number stream is part of the checkpoint"
        )
    if s.dist.main:
        say(f"resuming from step {state.step} of {s.total_steps:,} ({out / CKPT_DIR / ckpts[-1].name})")
    return state


def rng_snapshot(dist_world: int) -> dict:
    """This process's random-number state now (CPU; every visible GPU with one process, this rank's with several)."""
    if dist_world > 1:
        return distributed.rng_state()
    import torch

    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng_all"] = torch.cuda.get_rng_state_all()
    return state
