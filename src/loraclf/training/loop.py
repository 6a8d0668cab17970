"""Training: one explicit loop built from small named pieces.

``prepare`` (prepare.py) reads and checks everything (data, labels, model, budget, tokenisation) *before* a run
folder exists, so a mistake never leaves a half-written folder. ``train`` then runs AdamW with a warmup schedule over
length-grouped, dynamically padded batches, evaluates every N optimizer steps, keeps the best weights by the chosen
metric, stops early when asked, and writes resumable checkpoints. ``loss_step`` is the one place that turns a batch
into a loss: distillation or R-Drop swap it, they do not fork the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from loraclf.config.recipe import FORMAT_VERSION, Recipe, save_recipe
from loraclf.data.batching import collate, epoch_batches
from loraclf.inference.metrics import metrics, summary_line
from loraclf.inference.predict import forward_probs
from loraclf.modeling.adapters import count_parameters
from loraclf.modeling.backbones import build_model, load_config
from loraclf.modeling.methods import Method, apply_adapters, get_method
from loraclf.runfolder.checkpoint import (
    RunLock,
    atomic_write_text,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_weights,
    trainable_state,
)
from loraclf.runfolder.metrics_log import MetricsLogger
from loraclf.runfolder.schema import RunInfo, read_run_info, write_labels, write_run_info
from loraclf.training.losses import LossStep, balanced_weights
from loraclf.training.prepare import Prepared
from loraclf.utils.devices import autocast, environment, pick_device, pick_precision, set_threads
from loraclf.utils.errors import UserError, say
from loraclf.utils.progress import TrainProgress
from loraclf.utils.version import __version__


def make_optimizer(model, recipe: Recipe, device: torch.device):
    """AdamW; no weight decay on biases and normalisation weights (the usual transformer practice).

    With ``train.loraplus_lr_ratio`` it is peft's LoRA+ optimizer instead (Hayou et al. 2024, "LoRA+: Efficient Low
    Rank Adaptation of Large Models"): the B matrices learn at ``lr · ratio``, everything else at ``lr``.
    """
    fused = device.type == "cuda"  # the fused kernel is one launch per step on GPUs
    if recipe.train.loraplus_lr_ratio is not None:
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=recipe.train.lr,
            loraplus_lr_ratio=recipe.train.loraplus_lr_ratio,
            weight_decay=recipe.train.weight_decay,
            fused=fused,
        )
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": recipe.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=recipe.train.lr, fused=fused)


def make_scheduler(optimizer, recipe: Recipe, total_steps: int):
    from transformers import get_scheduler

    t = recipe.train
    warmup = t.warmup_steps if t.warmup_steps is not None else math.ceil(t.warmup_ratio * total_steps)
    name = "constant_with_warmup" if t.scheduler == "constant" else t.scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def evaluate_model(
    model, ids, labels, label_names, pad_id, device, precision, batch_size, progress=False
) -> dict:
    probs = forward_probs(
        model, ids, pad_id, device, precision, batch_size, progress=progress, desc="evaluate"
    )
    preds = probs.argmax(1)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
    return metrics(labels, preds, label_names, loss)


def _better(metric: str, value: float, best: float | None, loss: float, best_loss: float | None) -> bool:
    """Whether an evaluation beats the best so far. Accuracy on a few hundred rows ties often; a tie goes to the
    lower validation loss, so the later, better-calibrated weights are not thrown away for an equal count."""
    if best is None:
        return True
    if metric == "loss" or value != best:
        return value < best if metric == "loss" else value > best
    return best_loss is not None and loss < best_loss


def create_run_folder(out: Path, p: Prepared) -> None:
    """Write the static part of a run folder: recipe, label map, tokenizer, run.json (status: training)."""
    if out.exists() and any(out.iterdir()):
        raise UserError(
            f"--out: '{out}' already exists and is not empty; choose a new folder, or resume it with "
            "`loraclf train --resume`"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"--out: cannot create '{out}' ({exc.strerror}); choose a writable location"
        ) from None


def write_static(out: Path, p: Prepared, env: dict) -> None:
    save_recipe(p.recipe, out / "recipe.yaml")
    write_labels(out, p.label_map)
    p.tokenizer.save_pretrained(str(out / "tokenizer"))
    info = RunInfo(
        format_version=FORMAT_VERSION,
        loraclf_version=__version__,
        status="training",
        model=_model_record(p.recipe),
        num_labels=len(p.label_map),
        max_length=p.max_length,
        token_lengths=p.lengths,
        data={
            **p.notes,
            "n_train": len(p.train),
            "n_eval": len(p.eval),
            "train_label_counts": np.bincount(p.train.labels, minlength=len(p.label_map)).tolist(),
            "eval_label_counts": np.bincount(p.eval.labels, minlength=len(p.label_map)).tolist(),
        },
        plan=p.plan.to_json(),
        environment=env,
    )
    write_run_info(out, info)


def _model_record(recipe: Recipe) -> dict:
    """The backbone's name and kind; prediction picks its engine by the kind (causal LMs stay off int8)."""
    from loraclf.modeling.backbones import is_causal_lm

    config = load_config(recipe.model.name, model_cfg=recipe.model)
    return {"name": recipe.model.name, "type": config.model_type, "causal": is_causal_lm(config)}


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


def train(p: Prepared, out: Path, resume: bool = False) -> dict:
    """Run the training loop into ``out``; returns the final metrics."""
    t = p.recipe.train
    device = pick_device(t.device)
    precision = pick_precision(t.precision, device)
    set_threads(t.threads)
    env = environment(device, precision)
    env["nondeterministic"] = nondeterministic_paths(device, t)
    for why in env["nondeterministic"]:
        say(f"warning: {why}; the same seed may not give bit-identical results")
    if not resume:
        create_run_folder(out, p)
    try:
        with RunLock(out):
            if not resume:
                write_static(out, p, env)
            return _train_locked(p, out, resume, device, precision)
    except Diverged as exc:
        if not exc.checkpoint and not resume:
            shutil.rmtree(out, ignore_errors=True)  # nothing worth keeping: leave no half-written run folder
        raise


class Diverged(UserError):
    """A NaN or infinite loss. The newest checkpoint (written before the fault) stays for inspection or resume."""

    def __init__(self, out: Path, loss: float, step: int):
        ckpts = list_checkpoints(out)
        self.checkpoint = ckpts[-1] if ckpts else None
        kept = (
            f"the last good checkpoint is kept in {self.checkpoint}"
            if self.checkpoint
            else "no checkpoint was written yet, so the run folder is removed"
        )
        super().__init__(
            f"training diverged: loss is {loss} at step {step + 1:,}; {kept}; "
            "lower train.lr, raise train.warmup_ratio or use train.precision=fp32"
        )


@dataclass
class TrainState:
    """Where training is and what it has seen: everything a checkpoint restores to continue bit-identically.

    ``epoch``/``batch`` are the data position (the next batch of that epoch's length-grouped order); the running
    statistics (``ema_loss``, ``correct``, ``seen``) live here so that a resumed run logs exactly the same numbers.
    """

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: float | None = None
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    pause_seconds: float = 0.0  # evaluation and checkpoint time inside the loop, kept out of samples/s
    ema_loss: float | None = None
    correct: int = 0
    seen: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Session:
    """The live objects of one training run and its step arithmetic (built once, before the first step)."""

    model: torch.nn.Module
    fwd: torch.nn.Module  # the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    cache: object | None  # the frozen-layer cache (frozen.py) or None
    cache_seconds: float
    loss_step: LossStep
    method: Method
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    save_every: int


def _build_model(p: Prepared, device, precision: str) -> torch.nn.Module:
    """The classifier with the recipe's method applied, on ``device``; its trainable count checked against the plan."""
    r, t = p.recipe, p.recipe.train
    torch.manual_seed(t.seed)
    model = build_model(r.model.name, len(p.label_map), r.model, pad_token_id=p.tokenizer.pad_token_id)
    model = apply_adapters(model, r.adapter)
    trainable, _ = count_parameters(model)
    if trainable != p.plan.trainable:  # the plan is exact by construction; a mismatch is a loraclf bug
        raise RuntimeError(
            f"plan said {p.plan.trainable:,} trainable parameters, the model has {trainable:,}"
        )
    model.to(device)
    if precision == "bf16" and r.adapter.method != "full":
        # Frozen weights never receive updates, so bf16 copies lose nothing and save autocast's per-step casts
        # and half the memory traffic; trainable weights and optimizer state stay fp32.
        for prm in model.parameters():
            if not prm.requires_grad and prm.is_floating_point():
                prm.data = prm.data.to(torch.bfloat16)
    return model


def _session(p: Prepared, model, device, precision: str) -> Session:
    r, t = p.recipe, p.recipe.train
    cache, cache_seconds = _frozen_cache(p, model, device, precision)
    optimizer = make_optimizer(model, r, device)
    steps_per_epoch = math.ceil(math.ceil(len(p.train_ids) / t.batch_size) / t.grad_accum)
    total_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    weights = (
        balanced_weights(p.train.labels, len(p.label_map)).to(device)
        if t.class_weights == "balanced"
        else None
    )
    eval_every = t.eval_every or steps_per_epoch
    method = get_method(r.adapter.method)
    if method.prepare is not None:  # e.g. AdaLoRA's pruning schedule, which needs the number of steps
        method.prepare(model, total_steps)
    return Session(
        model=model,
        fwd=torch.compile(model, dynamic=True) if t.compile else model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, r, total_steps),
        scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None,
        cache=cache,
        cache_seconds=cache_seconds,
        loss_step=LossStep(r, weights, p.teacher_log_probs),
        method=method,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        eval_every=eval_every,
        save_every=t.save_every or eval_every,
    )


def _train_locked(p: Prepared, out: Path, resume: bool, device, precision: str) -> dict:
    t = p.recipe.train
    model = _build_model(p, device, precision)
    s = _session(p, model, device, precision)
    state = TrainState()
    ckpts = list_checkpoints(out)
    if resume and ckpts:
        state = TrainState.from_dict(load_checkpoint(ckpts[-1], model, s.optimizer, s.scheduler, s.scaler))
        say(f"resuming from {ckpts[-1].name}: step {state.step:,} of {s.total_steps:,}")
    logger = MetricsLogger(
        out / "metrics.jsonl", keep_until_step=state.step if resume else None, tensorboard=t.tensorboard
    )
    if not resume:
        trainable, total = count_parameters(model)
        say(
            f"training {trainable:,} of {total:,} parameters ({trainable / total:.3%}) on {device} ({precision}); "
            f"{len(p.train):,} train / {len(p.eval):,} eval rows, max length {p.max_length}, {s.total_steps:,} steps"
        )
    bar = TrainProgress(s.total_steps, state.step, t.progress)
    # The frozen-layer cache replaces forward compute, so building it counts as training time.
    started = time.perf_counter() - state.train_seconds - s.cache_seconds
    try:
        _run_steps(p, out, s, state, logger, bar, device, precision, started)
    finally:
        bar.close()
        logger.close()
    seconds = time.perf_counter() - started
    method_state = s.method.final_state(s.model) if s.method.final_state is not None else {}
    del model, s  # free the training copy before the inference copy loads
    return _finish(p, out, state, seconds, method_state)


def _run_steps(p, out, s: Session, state: TrainState, logger, bar, device, precision, started) -> None:
    """Micro-batches and optimizer steps until ``total_steps`` or early stopping."""
    t = p.recipe.train
    lengths = np.array([len(x) for x in p.train_ids])
    labels_all = torch.from_numpy(p.train.labels)
    pad_id = p.tokenizer.pad_token_id
    micro, stop = 0, False
    window = [time.perf_counter(), 0]  # start of the speed window, samples in it
    s.model.train()
    while state.step < s.total_steps and not stop:
        batches = epoch_batches(lengths, t.batch_size, t.seed, state.epoch, t.group_by_length)
        for bi in range(state.batch, len(batches)):
            rows = batches[bi]
            input_ids, mask = collate(p.train_ids, rows, pad_id, device, pin=True)
            if s.cache is not None:
                s.cache.select(rows, input_ids.shape[1])
            labels = labels_all[rows].to(device, non_blocking=True)
            with autocast(device, precision):
                loss, logits = s.loss_step(s.fwd, input_ids, mask, labels, rows)
                if s.method.extra_loss is not None:
                    loss = loss + s.method.extra_loss(s.model)
            if not torch.isfinite(loss):
                raise Diverged(out, loss.item(), state.step)
            (s.scaler.scale(loss / t.grad_accum) if s.scaler else loss / t.grad_accum).backward()
            micro += 1
            _count_batch(state, loss, logits, labels, len(rows))
            window[1] += len(rows)
            last_in_epoch = bi == len(batches) - 1
            if micro % t.grad_accum and not last_in_epoch:
                continue
            hook = s.method.after_step
            _optimizer_step(
                s.model,
                s.optimizer,
                s.scheduler,
                s.scaler,
                t.max_grad_norm,
                # The method's hook may read the gradients (AdaLoRA's importance scores): before zero_grad.
                None if hook is None else partial(hook, s.model, state.step + 1),
            )
            micro = 0
            state.step += 1
            state.epoch, state.batch = (state.epoch + 1, 0) if last_in_epoch else (state.epoch, bi + 1)
            stop = _after_step(p, out, s, state, logger, bar, device, precision, started, window)
            if state.step >= s.total_steps or stop:
                break


def _count_batch(state: TrainState, loss, logits, labels, n: int) -> None:
    """Running training statistics for the progress bar and the train log lines."""
    state.correct += int((logits.argmax(-1) == labels).sum())
    state.seen += n
    state.samples += n
    value = loss.item()
    state.ema_loss = value if state.ema_loss is None else 0.98 * state.ema_loss + 0.02 * value


def _after_step(
    p, out, s: Session, state: TrainState, logger, bar, device, precision, started, window
) -> bool:
    """Progress, logging, evaluation and checkpoints after an optimizer step; returns True to stop early."""
    t, step = p.recipe.train, state.step
    now = time.perf_counter()
    speed = window[1] / max(now - window[0], 1e-9)
    bar.update(
        loss=f"{state.ema_loss:.4f}",
        acc=f"{state.correct / max(state.seen, 1):.3f}",
        samples_s=f"{speed:.0f}",
    )
    if step % 20 == 0 or step == s.total_steps:
        logger.log(
            {
                "step": step,
                "epoch": round(step / s.steps_per_epoch, 4),
                "split": "train",
                "loss": state.ema_loss,
                "accuracy": state.correct / max(state.seen, 1),
                "lr": s.scheduler.get_last_lr()[0],
                "samples_per_s": speed,
            }
        )
        state.correct = state.seen = 0
        window[:] = [now, 0]
    paused = time.perf_counter()
    stop = False
    if step % s.eval_every == 0 or step == s.total_steps:
        with s.cache.bypassed() if s.cache is not None else contextlib.nullcontext():
            stop = _evaluate_and_keep(
                p, s.model, out, state, logger, device, precision, step, s.steps_per_epoch
            )
        s.model.train()
    now = time.perf_counter()
    state.pause_seconds += now - paused
    state.train_seconds = now - started
    if step % s.save_every == 0 and step < s.total_steps and not stop:
        save_checkpoint(
            out, step, s.model, s.optimizer, s.scheduler, s.scaler, state.as_dict(), t.keep_checkpoints
        )
        state.pause_seconds += time.perf_counter() - now
    window[0] += time.perf_counter() - paused  # the progress bar's speed counts training time only
    return stop


def _frozen_cache(p: Prepared, model, device, precision: str):
    """The frozen-layer cache when adapters start above layer 0 (see frozen.py), installed; and its build time."""
    from loraclf.modeling.backbones import head_module_name
    from loraclf.training import frozen

    t = p.recipe.train
    if not t.cache_frozen or p.recipe.adapter.method != "lora" or t.compile:
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
        t.progress,
        say,
    )
    if cache is not None:
        cache.install()
    return cache, time.perf_counter() - start


def _optimizer_step(model, optimizer, scheduler, scaler, max_norm, before_zero_grad=None):
    params = [q for q in model.parameters() if q.requires_grad]
    if scaler:
        scaler.unscale_(optimizer)
    if max_norm:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    stepped = True
    if scaler:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        # fp16 loss scaling skips a step whose gradients overflowed and lowers the scale; the schedule then waits,
        # so the learning rate follows the steps that were taken (as HF Trainer does). Reading the scale waits for
        # the GPU, but adds no stall: scaler.step waits at the same point to check the gradients for inf.
        stepped = scaler.get_scale() >= scale
    else:
        optimizer.step()
    if stepped:
        scheduler.step()
    if before_zero_grad is not None:
        before_zero_grad()
    optimizer.zero_grad(set_to_none=True)


def _evaluate_and_keep(p, model, out, state, logger, device, precision, step, steps_per_epoch) -> bool:
    """Evaluate, log, save the weights when they are the best so far; return True to stop early."""
    t = p.recipe.train
    m = evaluate_model(
        model,
        p.eval_ids,
        p.eval.labels,
        p.label_map,
        p.tokenizer.pad_token_id,
        device,
        precision,
        t.eval_batch_size,
    )
    value = m[t.metric]
    improved = _better(t.metric, value, state.best, m["loss"], state.best_loss)
    logger.log(
        {
            "step": step,
            "epoch": round(step / steps_per_epoch, 4),
            "split": "eval",
            "loss": m["loss"],
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "best": improved,
        }
    )
    tqdm.write(f"step {step:,}: eval {summary_line(m)}{'  *best' if improved else ''}", file=sys.stderr)
    if improved:
        state.best, state.best_loss, state.best_step, state.bad_evals = value, m["loss"], step, 0
        save_weights(trainable_state(model), out / "model.safetensors")
        return False
    state.bad_evals += 1
    return t.early_stopping is not None and state.bad_evals >= t.early_stopping


def _finish(
    p: Prepared, out: Path, state: TrainState, seconds: float, method_state: dict | None = None
) -> dict:
    """Evaluate the best weights exactly as `loraclf evaluate` will, write final metrics, mark the run complete."""
    from loraclf.inference.run import load

    t = p.recipe.train
    # The inference precision follows the training one when it was chosen; "auto" is int8 on a CPU, as in predict.
    run = load(out, device=t.device, precision=t.precision, finished=False)  # marked complete below
    probs = run.probs_of_ids(p.eval_ids, progress=t.progress, desc="evaluate")
    labels = p.eval.labels
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
    m = metrics(labels, probs.argmax(1), p.label_map, loss)
    m.update(
        best_step=state.best_step,
        train_seconds=round(seconds, 2),
        # Training throughput counts the optimisation steps only; evaluation and checkpoints are in eval_seconds.
        train_samples_per_s=round(state.samples / max(seconds - state.pause_seconds, 1e-9), 2),
        eval_seconds=round(state.pause_seconds, 2),
        steps=state.step,
    )
    atomic_write_text(out / "metrics.json", json.dumps(m, indent=1))
    header = "true\\predicted," + ",".join(m["labels"])
    rows = [
        f"{name}," + ",".join(str(v) for v in row) for name, row in zip(m["labels"], m["confusion_matrix"])
    ]
    atomic_write_text(out / "confusion_matrix.csv", "\n".join([header, *rows]) + "\n")
    info = read_run_info(out)
    info.status = "complete"
    info.train_seconds = round(seconds, 2)
    info.train_samples_per_s = m["train_samples_per_s"]
    info.best_step = state.best_step
    info.method_state = method_state or {}
    write_run_info(out, info)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    from loraclf.reporting.report import write_report

    try:
        write_report(out)
    except (UserError, OSError, ValueError) as exc:
        # The trained run is complete and usable; a figure that fails to draw must not take it down.
        say(f"report: not written ({exc}); run `loraclf report {out}` to retry")
    return m
