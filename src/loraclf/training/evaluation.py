"""Evaluation during training: score the validation rows, log the result, keep the best weights, decide to stop.

An evaluation reads no random numbers that training would read: it runs in eval mode (dropout off) inside
``torch.random.fork_rng``, so whether a run evaluates every 5 steps or every 50, and whether it was interrupted
and resumed around an evaluation, the steps after it draw the same dropout masks.

Its result lands in one step (the history line, the state, the best weights) with signals deferred, so an
interruption leaves either the whole evaluation or none of it; a run stopped during one evaluates again when
resumed (:func:`pending`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import torch

from loraclf.inference.metrics import metrics, nll, summary_line
from loraclf.inference.predict import forward_probs
from loraclf.runfolder.checkpoint import save_weights, trainable_state
from loraclf.training.distributed import Dist

if TYPE_CHECKING:
    from loraclf.training.context import LoopContext


def evaluate_model(
    model: torch.nn.Module,
    ids: list[np.ndarray],
    labels: np.ndarray,
    label_names: list,
    pad_id: int,
    device: torch.device,
    precision: str,
    batch_size: int,
    dist: Dist | None = None,
) -> dict:
    """Metrics (``accuracy``, ``macro_f1``, ``loss``, per class) of ``model`` on tokenised rows; with several ranks
    each scores its share (``Dist.my_rows``) and all gather the probabilities."""
    dist = dist or Dist()
    mine = dist.my_rows(len(ids))
    probs = forward_probs(
        model, [ids[i] for i in mine], pad_id, device, precision, batch_size, desc="evaluate"
    )
    probs = dist.gather_rows(probs, len(ids), device)
    return metrics(labels, probs.argmax(1), label_names, nll(probs, labels))


def better(metric: str, value: float, best: float | None, loss: float, best_loss: float | None) -> bool:
    """Whether an evaluation beats the best so far. Accuracy on a few hundred rows ties often; a tie goes to the
    lower validation loss, so the later, better-calibrated weights are not thrown away for an equal count."""
    if best is None:
        return True
    if metric == "loss" or value != best:
        return value < best if metric == "loss" else value > best
    return best_loss is not None and loss < best_loss


def due(ctx: LoopContext) -> bool:
    """Whether the step just finished is an evaluation step (every ``eval_every`` steps, and the last)."""
    step, s = ctx.state.step, ctx.s
    return step % s.eval_every == 0 or step == s.total_steps


def pending(ctx: LoopContext) -> bool:
    """An evaluation step whose evaluation an interruption cut short (a resumed run evaluates it first)."""
    return ctx.state.step > 0 and ctx.state.evaluated < ctx.state.step and due(ctx)


def evaluate_and_keep(ctx: LoopContext) -> bool:
    """Evaluate at the current step, log it, save the weights when they are the best so far.

    Returns:
        True to stop training: no improvement for ``train.early_stopping`` evaluations, or the ``on_evaluate``
        callback (sweeps' pruner) asked to stop.
    """
    if ctx.average is None:
        return _evaluate_and_keep(ctx)
    state = ctx.state
    if ctx.average.count and state.best_step is not None and state.best_step < ctx.average.start:
        # Weights from before the average began do not compete with it: the first averaged evaluation is kept.
        state.best = state.best_loss = None
    with ctx.average.swapped_in(ctx.interrupts.deferred):  # the average is scored and, when best, kept
        return _evaluate_and_keep(ctx)


def _evaluate_and_keep(ctx: LoopContext) -> bool:
    p, s, state, t = ctx.p, ctx.s, ctx.state, ctx.p.recipe.train
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=_rng_devices(ctx.device)))
        if s.cache is not None:
            stack.enter_context(s.cache.bypassed())  # evaluation rows are not the cached ones
        m = evaluate_model(
            s.model, p.eval_ids, p.eval.labels, p.label_map, p.tokenizer.pad_token_id, ctx.device,
            ctx.precision, t.eval_batch_size, dist=s.dist,
        )  # fmt: skip
    s.model.train()
    step = state.step
    improved = better(t.metric, m[t.metric], state.best, m["loss"], state.best_loss)
    with ctx.interrupts.deferred():  # the history line, the state and the weights land together
        ctx.logger.log(
            {
                "step": step,
                "epoch": round(step / s.steps_per_epoch, 4),
                "split": "eval",
                "loss": m["loss"],
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "best": improved,
            }
        )
        if improved:
            state.best, state.best_loss, state.best_step, state.bad_evals = m[t.metric], m["loss"], step, 0
            if s.dist.main:
                save_weights(trainable_state(s.model), ctx.out / "model.safetensors")
        else:
            state.bad_evals += 1
        state.evaluated = step
    if s.dist.main:
        ctx.bar.write(f"step {step:,}: eval {summary_line(m)}{'  *best' if improved else ''}")
    # Rank 0 asks the callback; every rank follows its answer so that they stop at the same step.
    asked = ctx.on_evaluate is not None and bool(
        s.dist.first(bool(ctx.on_evaluate(step, m)) if s.dist.main else False)
    )
    return asked or (t.early_stopping is not None and state.bad_evals >= t.early_stopping)


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []
