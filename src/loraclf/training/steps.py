"""One optimizer step: this rank's micro-batches, the update, and the checks between them.

``accumulate`` runs forward and backward over this rank's share of each batch of a step (distributed.py says how
shares are cut). Each share contributes its rows' summed loss terms divided by the whole step's totals, counted on
the host before the step (:class:`~loraclf.training.losses.StepNorm`: rows, and summed class weights), times the
world size because DDP averages gradients over ranks. Summed over micro-batches and averaged over ranks, the
gradient is that of the single-process loss over the step's rows, for every loss term (class weights, label
smoothing, R-Drop, distillation): one process and N processes take the same steps, any ``train.grad_accum`` takes the
same step as one batch of its rows, and an epoch's last step, with fewer batches, weighs like any other.

Nothing in ``accumulate`` reads a value back from the device: on a GPU each read waits for every queued kernel,
and one per micro-batch kept the GPU idle while Python prepared the next batch. Loss and accuracy sums stay on the
device and the loop reads them at its log lines; the one read per optimizer step is :func:`check_finite`.

Running out of device memory is a user error with a remedy (``memory_hint``), and
``train.gradient_checkpointing`` (``checkpoint_activations``) is one of the remedies.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from loraclf.data.batching import collate
from loraclf.utils.devices import autocast
from loraclf.utils.errors import PointError, UserError


def accumulate(p, s, group: list[np.ndarray], device, precision) -> None:
    """Forward and backward of this rank's share of each batch of one optimizer step (``s``: the loop's Session).

    Args:
        p: The prepared run (token ids, labels).
        s: The loop's Session (model, loss step, DDP wrapper, scaler, device-side statistics).
        group: The step's batches: arrays of training-row numbers, ``train.grad_accum`` of them (fewer at an
            epoch's end).

    Adds ``(loss · rows, correct rows)`` of this rank to ``s.step_stats`` on the device.

    Raises:
        UserError: out of device memory (see :func:`memory_hint`).
    """
    norm = s.loss_step.norm(p.train.labels[np.concatenate(group)])
    labels_all = torch.from_numpy(p.train.labels)
    for i, batch in enumerate(group):
        mine, n = s.dist.share(batch)
        input_ids, mask = collate(p.train_ids, mine, p.tokenizer.pad_token_id, device, pin=True)
        if s.cache is not None:
            s.cache.select(mine, input_ids.shape[1])
        labels = labels_all[mine].to(device, non_blocking=True)
        with s.dist.no_sync(s.fwd, last=i == len(group) - 1), memory_hint(p, input_ids.shape, device):
            with autocast(device, precision):
                part, logits = s.loss_step(s.fwd, input_ids, mask, labels, mine, norm)
                if (
                    s.method.extra_loss is not None
                ):  # a per-step term (AdaLoRA's): shares carry it by row count
                    part = part + s.method.extra_loss(s.model) * (n / norm.rows)
            # A stand-in row (an empty share, see Dist.share) runs so that DDP's all-reduce lines up; it adds nothing.
            part = part if n else part * 0.0
            weighted = part * s.dist.world  # DDP averages over ranks; the parts are already shares of the sum
            (s.scaler.scale(weighted) if s.scaler else weighted).backward()
        if n:
            hits = (logits.detach().argmax(-1) == labels).sum()
            s.step_stats += torch.stack((part.detach().float() * norm.rows, hits.float()))


def optimizer_step(s, max_norm: float | None, after_step=None) -> bool:
    """Unscale, clip, step the optimizer and the schedule, run the method's hook, zero the gradients.

    Args:
        s: The loop's Session.
        max_norm: Gradient clipping norm, or None.
        after_step: The method's hook (AdaLoRA's rank allocation), run before ``zero_grad`` because it reads the
            gradients, and only when the optimizer really stepped.

    Returns:
        Whether the optimizer stepped: fp16 loss scaling skips a step whose gradients overflowed.
    """
    params = [q for q in s.model.parameters() if q.requires_grad]
    if s.scaler:
        s.scaler.unscale_(s.optimizer)
    if max_norm:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    stepped = True
    if s.scaler:
        scale = s.scaler.get_scale()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        # A skipped step lowers the scale; the schedule then waits, so the learning rate follows the steps taken
        # (as HF Trainer does). Reading the scale waits for the GPU but adds no stall: scaler.step waits there too.
        stepped = s.scaler.get_scale() >= scale
    else:
        s.optimizer.step()
    if stepped:
        s.scheduler.step()
        # Gradients of a skipped step hold inf (0 · inf = NaN in AdaLoRA's importance scores, which then never
        # prune): the hook sees only steps that were taken.
        if after_step is not None:
            after_step()
    s.optimizer.zero_grad(set_to_none=True)
    return stepped


def check_finite(s, rows: int) -> float | None:
    """Sum the step's statistics over ranks into the log window: one host read per step.

    Returns:
        None when the step's loss is finite (on every rank alike, since the sum is shared), else the mean loss of
        its rows (NaN or inf), for the caller's error.
    """
    step = s.dist.sum_(s.step_stats)
    if not bool(torch.isfinite(step[0])):
        return float(step[0]) / rows
    s.window_stats += step
    step.zero_()
    return None


def read_stats(s, state) -> None:
    """Move the device-side statistics into the state (a host read: only at log lines and checkpoints)."""
    loss_sum, correct = s.window_stats.tolist()
    state.loss_sum += loss_sum
    state.correct += correct
    s.window_stats.zero_()


@contextlib.contextmanager
def memory_hint(p, shape, device):
    """Out of device memory: one line naming what to change instead of a traceback.

    Raises:
        PointError: the batch did not fit (a sweep fails only this configuration's trial).
    """
    try:
        yield
    except torch.OutOfMemoryError:
        t = p.recipe.train
        raise PointError(
            f"out of {device.type} memory on a batch of {shape[0]} rows × {shape[1]} tokens "
            f"(train.batch_size={t.batch_size}, max length {p.max_length}, "
            f"train.gradient_checkpointing={str(t.gradient_checkpointing).lower()}); lower train.batch_size and "
            "raise train.grad_accum (the same global batch), lower data.max_length, or set "
            "train.gradient_checkpointing=true"
        ) from None


def checkpoint_activations(model: torch.nn.Module, name: str) -> None:
    """Recompute each block's activations in backward instead of keeping them (train.gradient_checkpointing).

    Raises:
        UserError: the backbone has no gradient checkpointing.
    """
    from transformers import PreTrainedModel

    base = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if base is None or not base.supports_gradient_checkpointing:
        raise UserError(
            f"train.gradient_checkpointing: {name} does not support it; set train.gradient_checkpointing=false"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x's name for it
        base.activation_checkpointing_enable(kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # With LoRA the embeddings are frozen, so no block input would need a gradient and a checkpointed block
    # could drop its adapters' gradients (always so with reentrant checkpointing); input grads keep them flowing.
    base.enable_input_require_grads()
