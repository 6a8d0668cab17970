"""Building what training runs on: the model with its method applied, the optimizer and schedule, the frozen-layer
cache, and the :class:`Session` that holds them for the loop.

Everything here happens once, before the first optimizer step (and again on ``--resume``, before the checkpoint is
loaded over it). The model is checked against the budget plan before any file is written: the plan is exact by
construction, so a mismatch is a loraclf bug, not a user's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from loraclf.modeling.adapters import count_parameters
from loraclf.modeling.backbones import build_model as build_backbone
from loraclf.modeling.methods import Method, apply_adapters, get_method
from loraclf.training import steps
from loraclf.training.distributed import Dist
from loraclf.training.losses import LossStep, balanced_weights
from loraclf.training.prepare import Prepared
from loraclf.utils.errors import say


def build_model(p: Prepared, device: torch.device, precision: str) -> torch.nn.Module:
    """The classifier with the recipe's method applied, on ``device``, its trainable count checked against the plan.

    Seeded with ``train.seed``, so every rank (and every resume) builds the same initial adapters.

    Raises:
        RuntimeError: the built model's trainable count differs from the plan (a loraclf bug).
        UserError: the backbone cannot be built or has no gradient checkpointing when it is asked for.
    """
    r, t = p.recipe, p.recipe.train
    torch.manual_seed(t.seed)
    model = build_backbone(r.model.name, len(p.label_map), r.model, pad_token_id=p.tokenizer.pad_token_id)
    model = apply_adapters(model, r.adapter)
    trainable, _ = count_parameters(model)
    if trainable != p.plan.trainable:
        raise RuntimeError(
            f"plan said {p.plan.trainable:,} trainable parameters, the model has {trainable:,}"
        )
    if t.gradient_checkpointing:
        steps.checkpoint_activations(model, r.model.name)
    model.to(device)
    if precision == "bf16":
        # Frozen weights never receive updates, so bf16 copies lose nothing and save autocast's per-step casts
        # and half the memory traffic; trainable weights and optimizer state stay fp32.
        for prm in model.parameters():
            if not prm.requires_grad and prm.is_floating_point():
                prm.data = prm.data.to(torch.bfloat16)
    return model


def seed_rank(seed: int, dist: Dist) -> None:
    """Give each rank its own random stream for training (dropout masks), derived from the seed and the rank.

    Every rank builds the model from ``seed`` (identical adapters); without a rank-specific stream afterwards, rank
    r's j-th row would draw the same dropout mask as rank 0's j-th row, and N ranks would add no mask diversity over
    one share. One process keeps the stream it has, so single-process runs are unchanged.
    """
    if dist.world > 1:
        torch.manual_seed(seed + 1000 * (dist.rank + 1))


def make_optimizer(model: torch.nn.Module, recipe, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation weights (the usual transformer practice).

    With ``train.loraplus_lr_ratio`` (LoRA+, Hayou, Ghosh and Yu, ICML 2024, "LoRA+: Efficient Low Rank Adaptation
    of Large Models") the LoRA B matrices (``lora_B``, ``lora_embedding_B``) learn at ``lr · ratio`` and every other
    parameter — A matrices, DoRA's magnitude vectors, biases, the head — at ``lr``, as the paper's method states.
    (peft's ``create_loraplus_optimizer`` also puts every 1-D parameter in the fast group, which trains DoRA's
    magnitudes and the head's biases 16x faster than documented; loraclf builds the groups itself.)
    """
    t = recipe.train
    ratio = t.loraplus_lr_ratio
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        fast = ratio is not None and ("lora_B" in name or "lora_embedding_B" in name)
        decay = p.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((fast, decay), []).append(p)
    param_groups = [
        {
            "params": params,
            "lr": t.lr * (ratio if fast else 1.0),
            "weight_decay": t.weight_decay if decay else 0.0,
        }
        for (fast, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))
    ]
    # The fused kernel is one launch per step on GPUs.
    return torch.optim.AdamW(param_groups, lr=t.lr, fused=device.type == "cuda")


def make_scheduler(optimizer: torch.optim.Optimizer, recipe, total_steps: int):
    """transformers' learning-rate schedule named by ``train.scheduler``, with its warmup, over ``total_steps``;
    then the cuts of ``train.replans`` (a time budget's re-plans, :func:`relay_schedule`)."""
    from transformers import get_scheduler

    t = recipe.train
    warmup = t.warmup_steps if t.warmup_steps is not None else math.ceil(t.warmup_ratio * total_steps)
    name = "constant_with_warmup" if t.scheduler == "constant" else t.scheduler
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    for step, total in zip((t.replans or [])[::2], (t.replans or [])[1::2]):
        relay_schedule(scheduler, step, total)
    return scheduler


def relay_schedule(scheduler, step: int, total: int) -> None:
    """Cut a schedule at ``step`` to end at ``total``: the multipliers before ``step`` stay, then they fall linearly
    from the one at ``step`` to 0 at ``total`` (a time budget's re-plan, ``train.replans``)."""

    def relaid(before, at: float):
        return lambda i: before(i) if i < step else at * max(0.0, (total - i) / max(total - step, 1))

    scheduler.lr_lambdas = [relaid(f, f(step)) for f in scheduler.lr_lambdas]


def planned_steps(t, steps_per_epoch: int) -> tuple[int, int]:
    """(steps the schedule was laid over, steps the run takes): they differ after a time budget's re-plans."""
    laid = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    return laid, (t.replans[-1] if t.replans else laid)


@dataclass
class Session:
    """The live objects of one training run and its step arithmetic (built once, before the first step).

    Attributes:
        model: The classifier (peft-wrapped when an adapter method applies).
        fwd: The model as the steps call it: wrapped in DDP on several ranks, in ``torch.compile`` when asked.
        scheduler: transformers' ``LambdaLR`` schedule.
        scaler: fp16 loss scaling (GPUs without bf16), else None.
        cache: The frozen-layer cache (training/frozen.py) installed in the model, or None.
        cache_seconds: Its build time, counted as training time (it replaces forward compute).
        step_stats, window_stats: ``(loss · rows, correct rows)`` on the device, of the current optimizer step
            and of the steps since the statistics were last read (log lines and checkpoints), so that no
            micro-batch waits for the GPU.
    """

    model: torch.nn.Module
    fwd: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    cache: object | None
    cache_seconds: float
    loss_step: LossStep
    method: Method
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    save_every: int
    dist: Dist
    step_stats: torch.Tensor
    window_stats: torch.Tensor


def open_session(p: Prepared, model: torch.nn.Module, device, precision: str, dist: Dist) -> Session:
    """Cache, optimizer, schedule, loss and step arithmetic around a built model; the rank's stream seeded."""
    r, t = p.recipe, p.recipe.train
    cache, cache_seconds = frozen_cache(p, model, device, precision, dist)
    if cache is not None and dist.world > 1:
        dist = dataclasses.replace(dist, owned_rows=True)  # each rank cached its own rows (distributed.py)
    optimizer = make_optimizer(model, r, device)
    steps_per_epoch = math.ceil(math.ceil(len(p.train_ids) / t.batch_size) / t.grad_accum)
    laid, total_steps = planned_steps(t, steps_per_epoch)
    weights = balanced_weights(p.train.labels, len(p.label_map)) if t.class_weights == "balanced" else None
    eval_every = t.eval_every or steps_per_epoch
    fwd = dist.wrap(model, device)
    method = get_method(r.adapter.method)
    if method.prepare is not None:  # e.g. AdaLoRA's pruning schedule, which needs the number of steps
        method.prepare(model, laid)
    seed_rank(t.seed, dist)
    return Session(
        model=model,
        fwd=torch.compile(fwd, dynamic=True) if t.compile else fwd,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, r, laid),
        scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None,
        cache=cache,
        cache_seconds=cache_seconds,
        loss_step=LossStep(r, weights, p.teacher_log_probs),
        method=method,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        eval_every=eval_every,
        save_every=t.save_every or eval_every,
        dist=dist,
        step_stats=torch.zeros(2, device=device),
        window_stats=torch.zeros(2, device=device),
    )


def frozen_cache(p: Prepared, model, device, precision: str, dist: Dist):
    """The frozen-layer cache when adapters start above layer 0 (see training/frozen.py), installed; and its build
    time. With several ranks each caches the rows it owns; all ranks use the cache or none does."""
    from loraclf.modeling.backbones import head_module_name
    from loraclf.training import frozen

    t = p.recipe.train
    if not t.cache_frozen or "frozen_cache" not in get_method(p.recipe.adapter.method).supports or t.compile:
        return None, 0.0
    start = time.perf_counter()
    head = head_module_name(model.base_model.model if hasattr(model, "peft_config") else model)
    cache = frozen.build(
        model,
        head,
        p.train_ids,
        p.tokenizer.pad_token_id,
        device,
        precision,
        t.eval_batch_size,
        t.progress and dist.main,
        say if dist.main else _quiet,
        rows=dist.my_rows(len(p.train_ids)) if dist.world > 1 else None,
    )
    if not all(dist.gather_objects(cache is not None)):
        return None, 0.0  # a rank without the cache would take strided rows: all ranks must agree
    if cache is not None:
        cache.install()
    return cache, time.perf_counter() - start


def _quiet(_message: str) -> None:
    pass


def nondeterministic_paths(device: torch.device, t) -> list[str]:
    """Settings under which a fixed seed does not guarantee identical numbers (recorded in run.json)."""
    reasons = []
    if device.type in ("cuda", "mps"):
        reasons.append(
            f"{device.type} kernels (atomic adds in attention and embedding backward) are nondeterministic"
        )
    if t.compile:
        reasons.append("torch.compile may choose different kernels between runs")
    return reasons
