"""Training: one explicit loop built from small named pieces.

``prepare`` (training/prepare.py) reads and checks everything (data, labels, model, budget, tokenisation) *before* a run
folder exists, so a mistake never leaves a half-written folder. ``train`` then runs AdamW with a warmup schedule over
length-grouped, dynamically padded batches, evaluates every N optimizer steps, keeps the best weights by the chosen
metric, stops early when asked, and writes resumable checkpoints. ``loss_step`` is the one place that turns a batch
into a loss: distillation or R-Drop swap it, they do not fork the loop. One optimizer step's micro-batches are
``steps.accumulate`` (row-weighted, no host reads); under a launcher the same loop runs on every rank, with the few
distributed calls (DDP wrapping, shares, sums, gathers, rank-0 writing) in ``distributed``.
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
from loraclf.data.batching import epoch_batches
from loraclf.inference.calibration import calibrate
from loraclf.inference.metrics import metrics, summary_line
from loraclf.inference.predict import forward_probs
from loraclf.modeling.adapters import count_parameters
from loraclf.modeling.backbones import build_model, load_config
from loraclf.modeling.methods import Method, apply_adapters, get_method
from loraclf.runfolder.atomic import atomic_write_text
from loraclf.runfolder.checkpoint import (
    CKPT_DIR,
    RunLock,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_weights,
    trainable_state,
)
from loraclf.runfolder.metrics_log import MetricsLogger
from loraclf.runfolder.schema import RunInfo, read_run_info, write_labels, write_run_info
from loraclf.training import distributed, steps
from loraclf.training.distributed import Dist
from loraclf.training.losses import LossStep, balanced_weights
from loraclf.training.prepare import Prepared
from loraclf.utils.devices import environment, pick_device, pick_precision, set_threads
from loraclf.utils.errors import UserError, say
from loraclf.utils.progress import TrainProgress
from loraclf.utils.version import __version__

# The clock of time-based checkpoints (train.save_every_minutes); monotonic, so a changed system time cannot
# trigger or postpone a save. Tests replace it with a fake clock.
clock = time.monotonic


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
    model, ids, labels, label_names, pad_id, device, precision, batch_size, progress=False, dist=None
) -> dict:
    """Metrics of the model on tokenised rows; with several ranks each scores its share and all gather them."""
    dist = dist or Dist()
    mine = dist.my_rows(len(ids))
    probs = forward_probs(
        model,
        [ids[i] for i in mine],
        pad_id,
        device,
        precision,
        batch_size,
        progress=progress,
        desc="evaluate",
    )
    probs = dist.gather_rows(probs, len(ids), device)
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


def train(p: Prepared, out: Path, resume: bool = False, on_evaluate=None) -> dict:
    """Run the training loop into ``out``; returns the final metrics (an empty dict on ranks other than 0).

    Under a launcher (torchrun, accelerate) every rank calls this with the same arguments; rank 0 alone writes.

    Args:
        p: The prepared run (see :func:`loraclf.training.prepare.prepare`).
        out: The run folder to create (or, with ``resume``, to continue).
        resume: Continue from the newest checkpoint in ``out``.
        on_evaluate: Optional ``callback(step, metrics) -> bool`` called on rank 0 after every evaluation with
            the optimizer step and that evaluation's metrics (``accuracy``, ``macro_f1``, ``loss``, …); True
            stops training there, and the run finishes as after early stopping (sweeps prune with it).

    Raises:
        UserError: a diverged loss, out of memory, a locked or unwritable folder, a resume that cannot continue.
    """
    t = p.recipe.train
    with distributed.joined(pick_device(t.device)) as (dist, device):
        return _train_ranked(p, out, resume, dist, device, on_evaluate)


def _train_ranked(p: Prepared, out: Path, resume: bool, dist: Dist, device, on_evaluate=None) -> dict:
    t = p.recipe.train
    precision = pick_precision(t.precision, device)
    set_threads(t.threads)
    env = environment(device, precision)
    env["world_size"] = dist.world
    env["nondeterministic"] = nondeterministic_paths(device, t)
    for why in env["nondeterministic"] if dist.main else []:
        say(f"warning: {why}; the same seed may not give bit-identical results")
    # The built model's trainable count is checked against the plan here, before anything is written.
    model = _build_model(p, device, precision)
    dist.barrier()  # every rank has checked --out before rank 0 creates it
    if not resume and dist.main:
        create_run_folder(out, p)
    with RunLock(out) if dist.main else contextlib.nullcontext():
        try:
            if not resume and dist.main:
                write_static(out, p, env)
            return _train_locked(p, out, resume, model, dist, device, precision, on_evaluate)
        except UserError:  # diverged, out of memory: a new run without a checkpoint leaves no folder behind
            if dist.main and not resume and not list_checkpoints(out):
                shutil.rmtree(out, ignore_errors=True)
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

    ``epoch``/``batch`` are the data position (the next batch of that epoch's length-grouped order, the same at
    any world size); the running statistics since the last log line (``loss_sum``, ``correct``, ``seen``) live
    here so that a resumed run logs exactly the same numbers. ``world`` is the number of ranks that wrote it.
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
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    shown: tuple[float, float] | None = None  # (loss, accuracy) of the last log line, for the progress bar
    world: int = 1

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
    fwd: torch.nn.Module  # the model, wrapped in DDP on several ranks and in torch.compile when asked
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    cache: object | None  # the frozen-layer cache (training/frozen.py) or None
    cache_seconds: float
    loss_step: LossStep
    method: Method
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    save_every: int
    dist: Dist
    # Sums kept on the device so that no micro-batch waits for the GPU: (loss · rows, correct rows) of the
    # current optimizer step, and of the steps since the statistics were last read (at log lines and checkpoints).
    step_stats: torch.Tensor
    window_stats: torch.Tensor
    last_save: float = 0.0  # clock() at the last checkpoint (or the start): time-based saves count from here
    on_evaluate: object | None = (
        None  # train()'s evaluation callback (sweeps report to their pruner through it)
    )


LOG_EVERY_STEPS = 20  # train lines in metrics.jsonl; the device-side statistics are read only then


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
    if t.gradient_checkpointing:
        steps.checkpoint_activations(model, r.model.name)
    model.to(device)
    if precision == "bf16" and r.adapter.method != "full":
        # Frozen weights never receive updates, so bf16 copies lose nothing and save autocast's per-step casts
        # and half the memory traffic; trainable weights and optimizer state stay fp32.
        for prm in model.parameters():
            if not prm.requires_grad and prm.is_floating_point():
                prm.data = prm.data.to(torch.bfloat16)
    return model


def _session(p: Prepared, model, device, precision: str, dist: Dist) -> Session:
    r, t = p.recipe, p.recipe.train
    cache, cache_seconds = _frozen_cache(p, model, device, precision, dist)
    if cache is not None and dist.world > 1:
        dist = dataclasses.replace(dist, owned_rows=True)  # each rank cached its own rows (distributed.py)
    optimizer = make_optimizer(model, r, device)
    steps_per_epoch = math.ceil(math.ceil(len(p.train_ids) / t.batch_size) / t.grad_accum)
    total_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    weights = (
        balanced_weights(p.train.labels, len(p.label_map)).to(device)
        if t.class_weights == "balanced"
        else None
    )
    eval_every = t.eval_every or steps_per_epoch
    fwd = dist.wrap(model, device)
    method = get_method(r.adapter.method)
    if method.prepare is not None:  # e.g. AdaLoRA's pruning schedule, which needs the number of steps
        method.prepare(model, total_steps)
    return Session(
        model=model,
        fwd=torch.compile(fwd, dynamic=True) if t.compile else fwd,
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
        dist=dist,
        step_stats=torch.zeros(2, device=device),
        window_stats=torch.zeros(2, device=device),
    )


class _NoLog:
    """The metrics logger of ranks other than 0, which write nothing."""

    def log(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _train_locked(
    p: Prepared, out: Path, resume: bool, model, dist: Dist, device, precision: str, on_evaluate=None
) -> dict:
    t = p.recipe.train
    # Counted before the session: the frozen-layer cache swaps the lower blocks for weightless stand-ins.
    trainable, total = count_parameters(model)
    s = _session(p, model, device, precision, dist)
    s.on_evaluate = on_evaluate
    state = TrainState(world=dist.world)
    ckpts = list_checkpoints(out)
    if resume and ckpts:
        blob = load_checkpoint(
            ckpts[-1], model, s.optimizer, s.scheduler, s.scaler, dist.rank, s.method.restore_state
        )
        state = TrainState.from_dict(blob)
        if state.world != dist.world:
            raise UserError(
                f"--resume: {ckpts[-1]} was written by {state.world} process(es), this job has {dist.world}; "
                f"resume with the same number (e.g. `torchrun --nproc-per-node {state.world} -m loraclf train "
                "--resume …`), since each rank's random-number stream is part of the checkpoint"
            )
        if dist.main:
            say(f"resuming from step {state.step} of {s.total_steps:,} ({out / CKPT_DIR / ckpts[-1].name})")
    elif resume and dist.main:
        say("no checkpoint yet: starting from step 0")
    logger = (
        MetricsLogger(
            out / "metrics.jsonl", keep_until_step=state.step if resume else None, tensorboard=t.tensorboard
        )
        if dist.main
        else _NoLog()
    )
    if not resume and dist.main:
        ranks = f" × {dist.world} processes" if dist.world > 1 else ""
        say(
            f"training {trainable:,} of {total:,} parameters ({trainable / total:.3%}) on {device}{ranks} "
            f"({precision}); {len(p.train):,} train / {len(p.eval):,} eval rows, max length {p.max_length}, "
            f"{s.total_steps:,} steps"
        )
    bar = TrainProgress(s.total_steps, state.step, t.progress and dist.main)
    # The frozen-layer cache replaces forward compute, so building it counts as training time.
    started = time.perf_counter() - state.train_seconds - s.cache_seconds
    s.last_save = clock()
    try:
        _run_steps(p, out, s, state, logger, bar, device, precision, started)
    except KeyboardInterrupt:
        _save_on_interrupt(p, out, s, state, started)
        raise
    finally:
        bar.close()
        logger.close()
    seconds = time.perf_counter() - started
    method_state = s.method.final_state(s.model) if s.method.final_state is not None else {}
    del model, s  # free the training copy before the inference copy loads
    return _finish(p, out, state, seconds, dist, device, method_state)


def _run_steps(p, out, s: Session, state: TrainState, logger, bar, device, precision, started) -> None:
    """Optimizer steps until ``total_steps`` or early stopping; each takes ``grad_accum`` batches of the epoch."""
    t = p.recipe.train
    lengths = np.array([len(x) for x in p.train_ids])
    stop = False
    window = [time.perf_counter(), 0]  # start of the speed window, samples in it
    s.model.train()
    while state.step < s.total_steps and not stop:
        batches = epoch_batches(lengths, t.batch_size, t.seed, state.epoch, t.group_by_length)
        while not stop and state.step < s.total_steps:
            # The epoch's last step may hold fewer batches than grad_accum; rows, not batches, weigh it.
            group = batches[state.batch : state.batch + t.grad_accum]
            rows = sum(len(b) for b in group)
            steps.accumulate(p, s, group, rows, device, precision)
            _check_finite(out, s, state, rows)
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
            state.step += 1
            state.samples += rows
            state.seen += rows
            window[1] += rows
            state.batch += len(group)
            if state.batch == len(batches):
                state.epoch, state.batch = state.epoch + 1, 0
            stop = _after_step(p, out, s, state, logger, bar, device, precision, started, window)
            if state.batch == 0:
                break  # a new epoch: a new order


def _check_finite(out: Path, s: Session, state: TrainState, rows: int) -> None:
    """Sum the step's statistics over ranks and stop on a NaN or infinite loss: one host read per step.

    Raises:
        Diverged: the step's loss is not finite (on every rank alike, since the sum is shared).
    """
    step = s.dist.sum_(s.step_stats)
    if not bool(torch.isfinite(step[0])):
        raise Diverged(out, float(step[0]) / rows, state.step)
    s.window_stats += step
    step.zero_()


def _read_stats(s: Session, state: TrainState) -> None:
    """Move the device-side statistics into the state (a host read: only at log lines and checkpoints)."""
    loss_sum, correct = s.window_stats.tolist()
    state.loss_sum += loss_sum
    state.correct += correct
    s.window_stats.zero_()


def _after_step(
    p, out, s: Session, state: TrainState, logger, bar, device, precision, started, window
) -> bool:
    """Progress, logging, evaluation and checkpoints after an optimizer step; returns True to stop early."""
    t, step = p.recipe.train, state.step
    now = time.perf_counter()
    speed = window[1] / max(now - window[0], 1e-9)
    if step % LOG_EVERY_STEPS == 0 or step == s.total_steps:
        _read_stats(s, state)
        state.shown = (state.loss_sum / max(state.seen, 1), state.correct / max(state.seen, 1))
        logger.log(
            {
                "step": step,
                "epoch": round(step / s.steps_per_epoch, 4),
                "split": "train",
                "loss": state.shown[0],
                "accuracy": state.shown[1],
                "lr": s.scheduler.get_last_lr()[0],
                "samples_per_s": speed,
            }
        )
        state.loss_sum = state.correct = state.seen = 0
        window[:] = [now, 0]
    shown = {"loss": f"{state.shown[0]:.4f}", "acc": f"{state.shown[1]:.3f}"} if state.shown else {}
    bar.update(**shown, samples_s=f"{speed:.0f}")
    paused = time.perf_counter()
    stop = False
    if step % s.eval_every == 0 or step == s.total_steps:
        with s.cache.bypassed() if s.cache is not None else contextlib.nullcontext():
            stop = _evaluate_and_keep(
                p,
                s.model,
                out,
                state,
                logger,
                device,
                precision,
                step,
                s.steps_per_epoch,
                s.dist,
                s.on_evaluate,
            )
        s.model.train()
    now = time.perf_counter()
    state.pause_seconds += now - paused
    state.train_seconds = now - started
    # Rank 0's clock decides for every rank: a checkpoint is a collective, so the ranks must agree to take one.
    if s.dist.first(_checkpoint_due(t, s, step)) and step < s.total_steps and not stop:
        _save(out, s, state, t.keep_checkpoints)
        s.last_save = clock()
        state.pause_seconds += time.perf_counter() - now
    window[0] += time.perf_counter() - paused  # the progress bar's speed counts training time only
    return stop


def _checkpoint_due(t, s: Session, step: int) -> bool:
    """Every ``save_every`` steps, and whenever ``save_every_minutes`` passed since the last checkpoint.

    Steps alone are not enough on a slow machine: the default (one checkpoint per evaluation, once an epoch) can
    be an hour apart on a CPU, and a run stopped before it keeps nothing. The clock bounds the work a stop loses.
    """
    if step % s.save_every == 0:
        return True
    return t.save_every_minutes is not None and clock() - s.last_save >= 60 * t.save_every_minutes


def _save_on_interrupt(p, out: Path, s: Session, state: TrainState, started: float) -> None:
    """Ctrl-C: keep the last finished optimizer step as a checkpoint, and say how to continue."""
    if s.dist.world > 1:
        # The ranks are not in step after a signal; a checkpoint needs all of them (a collective).
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
    state.train_seconds = time.perf_counter() - started
    path = _save(out, s, state, p.recipe.train.keep_checkpoints)
    say(
        f"interrupted at step {state.step}: checkpoint written to {path}; continue with `loraclf train --resume {out}`"
    )


def _save(out: Path, s: Session, state: TrainState, keep: int) -> Path | None:
    """A resumable checkpoint: rank 0 writes the shared state and every rank's RNG state; returns its folder."""
    _read_stats(s, state)
    rngs = s.dist.gather_objects(distributed.rng_state())  # a collective: every rank takes part
    if not s.dist.main:
        return None
    return save_checkpoint(
        out,
        state.step,
        s.model,
        s.optimizer,
        s.scheduler,
        s.scaler,
        state.as_dict(),
        keep,
        rank_rng=rngs if s.dist.world > 1 else None,
        method_state=s.method.checkpoint_state(s.model) if s.method.checkpoint_state is not None else None,
    )


def _frozen_cache(p: Prepared, model, device, precision: str, dist: Dist):
    """The frozen-layer cache when adapters start above layer 0 (see training/frozen.py), installed; and its build time.

    With several ranks each caches the rows it owns; all ranks use the cache or none does.
    """
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


def _evaluate_and_keep(
    p, model, out, state, logger, device, precision, step, steps_per_epoch, dist: Dist, on_evaluate=None
) -> bool:
    """Evaluate (sharded over ranks), log, save the weights when they are the best so far; True to stop early
    (no improvement for ``train.early_stopping`` evaluations, or ``on_evaluate`` asked to stop)."""
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
        dist=dist,
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
    if dist.main:
        tqdm.write(f"step {step:,}: eval {summary_line(m)}{'  *best' if improved else ''}", file=sys.stderr)
    if improved:
        state.best, state.best_loss, state.best_step, state.bad_evals = value, m["loss"], step, 0
        if dist.main:
            save_weights(trainable_state(model), out / "model.safetensors")
    else:
        state.bad_evals += 1
    # Rank 0 asks the callback; every rank follows its answer so that they stop at the same step.
    asked = on_evaluate is not None and bool(dist.first(bool(on_evaluate(step, m)) if dist.main else False))
    return asked or (t.early_stopping is not None and state.bad_evals >= t.early_stopping)


def _finish(
    p: Prepared,
    out: Path,
    state: TrainState,
    seconds: float,
    dist: Dist,
    device: torch.device,
    method_state: dict | None = None,
) -> dict:
    """Evaluate the best weights as `loraclf evaluate` with as many processes will (sharded over ranks; int8
    ONNX Runtime scales each batch's activations, so other shards move the probabilities slightly), then rank 0
    writes the final metrics and marks the run complete; other ranks return an empty dict."""
    from loraclf.inference.run import load

    t = p.recipe.train
    ids = p.eval_ids
    dist.barrier()  # rank 0 has written the best weights
    # The inference precision follows the training one when it was chosen; "auto" is int8 on a CPU, as in predict.
    with dist.main_first():  # rank 0 exports the int8 graph once; the others open it
        # This rank's device: a cuda:N chosen by the launcher, not train.device's first GPU on every rank.
        run = load(out, device=str(device), precision=t.precision, finished=False)  # marked complete below
    probs = dist.map_rows(
        len(ids),
        len(run.labels),
        lambda rows: run.probs_of_ids(
            [ids[i] for i in rows], progress=t.progress and dist.main, desc="evaluate"
        ),
        device,
    )
    if not dist.main:
        return {}
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
    # Temperature scaling on the validation rows, kept in run.json; evaluate and predict apply it.
    info.calibration = calibrate(probs, labels)
    write_run_info(out, info)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    from loraclf.reporting.report import write_report

    try:
        write_report(out)
    except (UserError, OSError, ValueError) as exc:
        # The trained run is complete and usable; a figure that fails to draw must not take it down.
        say(f"report: not written ({exc}); run `loraclf report {out}` to retry")
    return m
