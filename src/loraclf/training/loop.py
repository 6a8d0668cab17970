"""Training: one explicit loop, read top to bottom in :func:`train` and :func:`run_steps`.

``prepare`` (training/prepare.py) reads and checks everything (data, labels, model, budget, tokenisation) before a
run folder exists, so a mistake never leaves a half-written folder. ``train`` then builds the model
(training/session.py), creates the run folder (training/finish.py), and runs AdamW with a warmup schedule over
length-grouped, dynamically padded batches: each optimizer step accumulates its micro-batches
(training/steps.py), applies the update as a whole with signals deferred, evaluates every N steps and keeps the
best weights (training/evaluation.py; with ``train.swa_start``, those of the running weight average,
training/averaging.py), writes resumable checkpoints on steps and on a clock
(training/checkpointing.py), and stops early when asked. When the steps end, finishing evaluates the best weights
as ``loraclf evaluate`` would and marks the run complete (training/finish.py).

The loss is one object (``LossStep``): distillation and R-Drop change it, they do not fork the loop. Under a
launcher the same loop runs on every rank, with the few distributed calls (DDP wrapping, shares, sums, gathers,
rank-0 writing) in training/distributed.py. A :class:`LoopContext` carries what the phases share, so each piece
takes one argument instead of ten.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from loraclf.data.batching import epoch_batches
from loraclf.modeling.adapters import count_parameters
from loraclf.runfolder.metrics_log import MetricsLogger
from loraclf.runfolder.schema import read_run_info
from loraclf.training import checkpointing, distributed, evaluation, steps
from loraclf.training.averaging import WeightAverage
from loraclf.training.budget_run import keep_to_plan, record_phases, record_plan, seen_evaluation
from loraclf.training.context import LoopContext
from loraclf.training.finish import RunFolder, final_metrics_of, finish, finish_tail
from loraclf.training.interrupts import Interrupts
from loraclf.training.prepare import Prepared
from loraclf.training.session import Session, build_model, nondeterministic_paths, open_session, planned_steps
from loraclf.training.state import LOG_EVERY_STEPS, Diverged, TrainState
from loraclf.training.warmup import plan_run
from loraclf.utils.devices import environment, pick_device, pick_precision, set_threads
from loraclf.utils.errors import say
from loraclf.utils.progress import TrainProgress

__all__ = ["Diverged", "LoopContext", "train"]


def train(
    p: Prepared, out: Path, resume: bool = False, on_evaluate=None, started: float | None = None
) -> dict:
    """Train into the run folder ``out``; returns the final metrics (an empty dict on ranks other than 0).

    Under a launcher (torchrun, accelerate) every rank calls this with the same arguments; rank 0 alone writes.

    Args:
        p: The prepared run (see :func:`loraclf.training.prepare.prepare`).
        out: The run folder to create (or, with ``resume``, to continue).
        resume: Continue ``out`` from its newest checkpoint, or finish it when its steps all ran.
        on_evaluate: Optional ``callback(step, metrics) -> bool`` called on rank 0 after every evaluation with
            the optimizer step and that evaluation's metrics (``accuracy``, ``macro_f1``, ``loss``, …); True
            stops training there, and the run finishes as after early stopping (sweeps prune with it).
        started: ``time.monotonic()`` when the command started, from which ``train.time_budget`` counts
            (default: now). A resumed run keeps its recorded plan and has no deadline.

    Raises:
        UserError: a diverged loss, out of memory, a locked or unwritable folder, a resume that cannot continue.
        KeyboardInterrupt: Ctrl-C or SIGTERM (``interrupts.Interrupted``), after the run folder was left in a
            state that ``--resume`` continues.
    """
    t = p.recipe.train
    clock = time.monotonic() if started is None else started
    with distributed.joined(pick_device(t.device)) as (dist, device):
        precision = pick_precision(t.precision, device)
        set_threads(t.threads)
        interrupts = Interrupts()  # SIGINT and SIGTERM stop the run at a step boundary, in every phase
        with interrupts.installed(), RunFolder(out, dist, resume) as folder:
            record = folder.record() if resume else None
            if record is not None and read_run_info(folder.out).complete:
                if dist.main:  # the run is complete; only its report and clean-up were cut short
                    say("resuming: the run is complete; writing its report and removing its checkpoints")
                    finish_tail(folder.out)
                return final_metrics_of(folder.out) if dist.main else {}
            timed = record is None and t.time_budget is not None
            if record is None:
                record = _optimise(p, folder, device, precision, interrupts, on_evaluate, clock)
            elif dist.main:
                say(f"resuming: training ended at step {record['state']['step']:,}; finishing the run")
            try:
                m = finish(p, folder, record, device)
                if timed and dist.main:
                    record_phases(folder.out, clock)  # the finishing and total times, beside the plan
                return m
            except KeyboardInterrupt:
                say(f"interrupted while finishing; `loraclf train --resume {folder.out}` finishes the run")
                raise


def _optimise(
    p: Prepared, folder: RunFolder, device, precision: str, interrupts: Interrupts, on_evaluate, clock: float
) -> dict:
    """Build the model, run the optimizer steps, and return the finishing record.

    The model lives only in this call's session: once it returns, nothing refers to the training copy, and
    finishing builds the inference copy in its place.
    """
    dist, t = folder.dist, p.recipe.train
    env = environment(device, precision) | {"world_size": dist.world}
    env["nondeterministic"] = nondeterministic_paths(device, t)
    for why in env["nondeterministic"] if dist.main else []:
        say(f"warning: {why}; the same seed may not give bit-identical results")
    model = build_model(p, device, precision)  # checked against the plan before any file is written
    trainable, total = count_parameters(model)  # before the frozen-layer cache swaps blocks for stand-ins
    plan = None
    if t.time_budget is not None and not folder.resume:  # the plan becomes the recipe's keys (budget.py)
        p, plan = plan_run(p, model, device, precision, clock, dist.world)
        if dist.main:
            say(plan.line())
    folder.start(p, env)
    if plan is not None and dist.main:
        record_plan(folder.out, plan)
    ctx = LoopContext(
        p, folder.out, open_session(p, model, device, precision, dist), TrainState(), device, precision
    )
    del model  # the session owns it now
    ctx.interrupts, ctx.on_evaluate, ctx.budget, ctx.clock = interrupts, on_evaluate, plan, clock
    if t.swa_start is not None:
        laid, _ = planned_steps(t, ctx.s.steps_per_epoch)
        ctx.average = WeightAverage(ctx.s.model, t.swa_start, laid)
    if folder.resume:
        ctx.state = checkpointing.restore(ctx)
    else:
        ctx.state.world = dist.world
        if dist.main:
            _say_plan(ctx, trainable, total)
    if dist.main:
        keep = ctx.state.step if folder.resume else None
        ctx.logger = MetricsLogger(ctx.out / "metrics.jsonl", keep_until_step=keep, tensorboard=t.tensorboard)
    deadline = None if plan is None else clock + plan.budget_seconds
    ctx.bar = TrainProgress(ctx.s.total_steps, ctx.state.step, t.progress and dist.main, deadline)
    ctx.rng = checkpointing.rng_snapshot(dist.world)
    # The frozen-layer cache replaces forward compute, so building it counts as training time.
    ctx.started = time.perf_counter() - ctx.state.train_seconds - ctx.s.cache_seconds
    ctx.last_save = checkpointing.clock()
    with contextlib.closing(ctx.logger), contextlib.closing(ctx.bar):
        try:
            run_steps(ctx)
            if ctx.average is not None and ctx.average.count == 0 and dist.main:
                say(
                    f"train.swa_start: the run ended at step {ctx.state.step:,}, before averaging began "
                    f"(step {ctx.average.start:,}); it keeps its own weights"
                )
            with ctx.interrupts.deferred():
                s = ctx.s
                method_state = s.method.final_state(s.model) if s.method.final_state is not None else {}
                seconds = time.perf_counter() - ctx.started
                if ctx.budget is not None and dist.main:
                    setup = time.monotonic() - ctx.clock - seconds
                    record_phases(ctx.out, ctx.clock, setup=setup, training=seconds)
                return folder.write_record(ctx.state, seconds, method_state)
        except KeyboardInterrupt:
            checkpointing.save_on_interrupt(ctx)
            raise


def run_steps(ctx: LoopContext) -> None:
    """Optimizer steps until the planned count or an early stop; each takes ``train.grad_accum`` batches."""
    p, s, state, t = ctx.p, ctx.s, ctx.state, ctx.p.recipe.train
    lengths = np.array([len(x) for x in p.train_ids])
    batches, epoch = [], None
    stop = evaluation.pending(ctx) and evaluation.evaluate_and_keep(ctx)  # one an interruption cut short
    s.model.train()
    ctx.window[:] = [time.perf_counter(), 0]
    while state.step < s.total_steps and not stop:
        if epoch != state.epoch:  # a new epoch: a new length-grouped order (a function of seed and epoch)
            batches, epoch = (
                epoch_batches(lengths, t.batch_size, t.seed, state.epoch, t.group_by_length),
                state.epoch,
            )
        # The epoch's last step may hold fewer batches than grad_accum; rows, not batches, weigh it.
        group = batches[state.batch : state.batch + t.grad_accum]
        rows = sum(len(b) for b in group)
        steps.accumulate(p, s, group, ctx.device, ctx.precision)
        with ctx.interrupts.deferred():  # the update lands whole, or (interrupted before this) not at all
            loss = steps.check_finite(s, rows)
            if loss is not None:
                raise Diverged(ctx.out, loss, state.step)
            steps.optimizer_step(s, t.max_grad_norm, _method_hook(s, state.step + 1))
            _advance(state, len(group), rows, len(batches))
            if ctx.average is not None:
                ctx.average.update(state.step)
            ctx.rng = checkpointing.rng_snapshot(s.dist.world)
            _log_train(ctx, rows)
        paused = time.perf_counter()
        if ctx.budget is not None:
            keep_to_plan(
                ctx
            )  # may cut the remaining steps, or make this step the last (so an evaluation step)
        if evaluation.due(ctx):
            stop = evaluation.evaluate_and_keep(ctx)
            if ctx.budget is not None:
                seen_evaluation(ctx, time.perf_counter() - paused)
        state.train_seconds = time.perf_counter() - ctx.started
        if not stop and checkpointing.due(ctx):
            checkpointing.save(ctx)
        state.pause_seconds += time.perf_counter() - paused
        ctx.window[0] += time.perf_counter() - paused  # the bar's speed counts optimisation time only


def _method_hook(s: Session, step: int):
    """The method's after-step hook (AdaLoRA's rank allocation) bound to this step, or None."""
    hook = s.method.after_step
    return None if hook is None else (lambda: hook(s.model, step))


def _advance(state: TrainState, batches: int, rows: int, epoch_batches_: int) -> None:
    """Move the state past one optimizer step of ``batches`` batches holding ``rows`` rows."""
    state.step += 1
    state.samples += rows
    state.seen += rows
    state.batch += batches
    if state.batch == epoch_batches_:
        state.epoch, state.batch = state.epoch + 1, 0


def _log_train(ctx: LoopContext, rows: int) -> None:
    """The progress bar after every step; a history line (a host read of the statistics) every few steps."""
    s, state = ctx.s, ctx.state
    now = time.perf_counter()
    ctx.window[1] += rows
    speed = ctx.window[1] / max(now - ctx.window[0], 1e-9)
    if state.step % LOG_EVERY_STEPS == 0 or state.step == s.total_steps:
        steps.read_stats(s, state)
        state.shown = (state.loss_sum / max(state.seen, 1), state.correct / max(state.seen, 1))
        ctx.logger.log(
            {
                "step": state.step,
                "epoch": round(state.step / s.steps_per_epoch, 4),
                "split": "train",
                "loss": state.shown[0],
                "accuracy": state.shown[1],
                "lr": s.scheduler.get_last_lr()[0],
                "samples_per_s": speed,
            }
        )
        state.loss_sum = state.correct = state.seen = 0
        ctx.window[:] = [now, 0]
    shown = {"loss": f"{state.shown[0]:.4f}", "acc": f"{state.shown[1]:.3f}"} if state.shown else {}
    ctx.bar.update(**shown, samples_s=f"{speed:.0f}")


def _say_plan(ctx: LoopContext, trainable: int, total: int) -> None:
    p, s = ctx.p, ctx.s
    ranks = f" × {s.dist.world} processes" if s.dist.world > 1 else ""
    say(
        f"training {trainable:,} of {total:,} parameters ({trainable / total:.3%}) on {ctx.device}{ranks} "
        f"({ctx.precision}); {len(p.train):,} train / {len(p.eval):,} eval rows, max length {p.max_length}, "
        f"{s.total_steps:,} steps"
    )
