"""One optimizer step's work on this rank: the micro-batches, their weights, and what they may not do.

``accumulate`` runs forward and backward over this rank's share of each batch of a step (distributed.py says how
shares are cut). Each share's mean loss is weighted by ``n_share · world / rows``, where ``rows`` counts the whole
step's rows on all ranks: summed over batches and averaged over ranks by DDP, the gradient is that of the step's
mean loss over its rows. One process and N processes therefore take the same steps, and an epoch's last step,
with fewer batches than ``train.grad_accum``, weighs like any other (it used to be divided by ``grad_accum``
regardless, so it counted for less).

Nothing here reads a value back from the device: on a GPU each read waits for every queued kernel, and one per
micro-batch kept the GPU idle while Python prepared the next batch. Loss and accuracy sums stay on the device and
the loop reads them at its log lines; the one read per optimizer step is the check that the loss is finite.

Running out of device memory is a user error with a remedy (``memory_hint``), and
``train.gradient_checkpointing`` (``checkpoint_activations``) is one of the remedies.
"""

from __future__ import annotations

import contextlib

import torch

from loraclf.data.batching import collate
from loraclf.utils.devices import autocast
from loraclf.utils.errors import PointError, UserError


def accumulate(p, s, group: list, rows: int, device, precision) -> None:
    """Forward and backward of this rank's share of each batch of one optimizer step (``s``: the loop's Session).

    Adds (loss · rows, correct rows) of this rank to ``s.step_stats`` on the device.
    """
    labels_all = torch.from_numpy(p.train.labels)
    for i, batch in enumerate(group):
        mine, n = s.dist.share(batch)
        input_ids, mask = collate(p.train_ids, mine, p.tokenizer.pad_token_id, device, pin=True)
        if s.cache is not None:
            s.cache.select(mine, input_ids.shape[1])
        labels = labels_all[mine].to(device, non_blocking=True)
        with s.dist.no_sync(s.fwd, last=i == len(group) - 1), memory_hint(p, input_ids.shape, device):
            with autocast(device, precision):
                loss, logits = s.loss_step(s.fwd, input_ids, mask, labels, mine)
                if s.method.extra_loss is not None:
                    loss = loss + s.method.extra_loss(s.model)
            weighted = loss * (n * s.dist.world / rows)
            (s.scaler.scale(weighted) if s.scaler else weighted).backward()
        if n:
            hits = (logits.detach().argmax(-1) == labels).sum()
            s.step_stats += torch.stack((loss.detach().float() * n, hits.float()))


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
