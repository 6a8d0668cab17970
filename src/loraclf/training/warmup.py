"""The timed warm-up of a budgeted run: a few optimizer steps and a few validation batches, measured and undone.

Speed depends on the batch's width (rows × padded tokens), and length-grouped batches vary a lot in width, so the
warm-up times steps spread over the first epoch's real batches and prices the whole epoch by its padded tokens
(seconds per token × the epoch's tokens per step); the validation rows likewise. A batch shape's first step pays
for one-off allocations and kernel selection (oneDNN builds its kernels per shape), so each timed group of batches
runs twice: the second run gives the steady rate, the difference the one-off cost, which the plan adds once for every
batch shape of the epoch that the warm-up did not run (0.5 s in all for the quick start on an idle 2-core AVX-512 BF16
CPU; a single cold step would have priced every step at its cost).

The warm-up must not change the run it plans: it trains with its own optimizer, inside ``torch.random.fork_rng``
(the dropout masks the run draws are untouched), and writes the trainable weights back as they were, so a planned
run trains exactly as ``train.max_steps=N`` would from the same seed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from types import SimpleNamespace

import numpy as np
import torch

from loraclf.data.batching import PAD_MULTIPLE, epoch_batches
from loraclf.data.splits import overlap_count
from loraclf.data.tables import stratified_indices
from loraclf.inference.predict import forward_probs
from loraclf.modeling.methods import get_method
from loraclf.training import steps
from loraclf.training.budget import EXPORT_SECONDS, EXPORT_SECONDS_PER_MPARAM, BudgetPlan, Rates, lay_out
from loraclf.training.distributed import Dist
from loraclf.training.losses import LossStep, balanced_weights
from loraclf.training.prepare import Prepared, prepare, rows_digest
from loraclf.training.session import make_optimizer
from loraclf.utils.durations import parse_duration
from loraclf.utils.errors import UserError

MAX_TIMED_STEPS = 12
MIN_TIMED_STEPS = 2
MOST_SHARE = 0.04  # of the budget: the timed steps stop there even before MIN_TIMED_STEPS (slow machines)
EVAL_SAMPLE_BATCHES = 2


def measure(
    p: Prepared, model: torch.nn.Module, device: torch.device, precision: str, budget: float
) -> Rates:
    """Time training steps and validation batches of ``model`` at the recipe's batch shapes; the model is unchanged.

    Args:
        p: The prepared run (tokenised rows).
        model: The built classifier (session.build_model), before the session wraps it.
        budget: The time budget, seconds: the warm-up spends about 1% of it (1.5 to 10 s, at least two steps,
            at most 4% of the budget) on timed steps.

    Returns:
        The measured :class:`~loraclf.training.budget.Rates`.
    """
    started = time.perf_counter()
    saved = {n: q.detach().clone() for n, q in model.named_parameters() if q.requires_grad}
    modes = {m: m.training for m in model.modules()}  # dropout on or off, as the session will find it
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            target = min(10.0, max(1.5, 0.01 * budget))
            step_seconds, shapes_seconds = _time_steps(
                p, model, device, precision, target, MOST_SHARE * budget
            )
            eval_seconds = _time_eval(p, model, device, precision)
    finally:
        with torch.no_grad():
            for n, q in model.named_parameters():
                if n in saved:
                    q.copy_(saved[n])
        for m, training in modes.items():
            m.train(training)
    return Rates(
        step_seconds=step_seconds,
        eval_seconds=eval_seconds,
        new_shapes_seconds=shapes_seconds,
        cache_row_seconds=_cache_row_seconds(p, model, eval_seconds),
        export_seconds=_export_seconds(p, model, device),
        warmup_seconds=time.perf_counter() - started,
    )


def _padded_tokens(lengths: np.ndarray, rows: np.ndarray) -> int:
    width = -(-int(lengths[rows].max()) // PAD_MULTIPLE) * PAD_MULTIPLE
    return len(rows) * width


def _time_steps(
    p: Prepared, model, device, precision: str, target: float, limit: float
) -> tuple[float, float]:
    """Seconds of one optimizer step at the steady rate, averaged over the first epoch's mix of batch widths, and
    the one-off seconds the run will pay for the epoch's batch shapes the warm-up did not run.

    Each timed group of batches runs twice (see the module docstring); groups are timed until ``target`` seconds of
    steady steps and :data:`MIN_TIMED_STEPS` groups, or until ``limit`` seconds in all (at least one group).
    """
    r, t = p.recipe, p.recipe.train
    lengths = np.array([len(x) for x in p.train_ids])
    batches = epoch_batches(lengths, t.batch_size, t.seed, 0, t.group_by_length)
    groups = [batches[i : i + t.grad_accum] for i in range(0, len(batches), t.grad_accum)]
    tokens = np.array([sum(_padded_tokens(lengths, b) for b in g) for g in groups], dtype=np.float64)
    shapes = [tuple((len(b), _padded_tokens(lengths, b)) for b in g) for g in groups]
    s = _step_state(p, model, device, precision)
    optimizer = make_optimizer(model, r, device)
    model.train()

    def one_step(i: int) -> float:
        begin = time.perf_counter()
        steps.accumulate(p, s, groups[i], device, precision)
        if s.scaler:
            s.scaler.step(optimizer)
            s.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(s.step_stats[0])  # wait for the device
        return time.perf_counter() - begin

    # Steps spread over the epoch (length-grouped batches come in random order, so any spread is representative).
    order = np.linspace(0, len(groups) - 1, num=min(len(groups), MAX_TIMED_STEPS)).round().astype(int)
    steady, spent, timed_tokens, first_costs, seen = 0.0, 0.0, 0.0, [], set()
    for i in order:
        cold, warm = one_step(i), one_step(i)
        if shapes[i] not in seen:
            first_costs.append(max(cold - warm, 0.0))
            seen.add(shapes[i])
        steady, spent, timed_tokens = steady + warm, spent + cold + warm, timed_tokens + tokens[i]
        if (len(seen) >= MIN_TIMED_STEPS and steady >= target) or spent >= limit:
            break
    unseen = len(set(shapes) - seen)
    return steady / max(timed_tokens, 1.0) * float(tokens.mean()), unseen * float(np.mean(first_costs))


def _step_state(p: Prepared, model, device, precision: str) -> SimpleNamespace:
    """What :func:`loraclf.training.steps.accumulate` reads of a session, for the warm-up's own steps."""
    r, t = p.recipe, p.recipe.train
    weights = balanced_weights(p.train.labels, len(p.label_map)) if t.class_weights == "balanced" else None
    return SimpleNamespace(
        model=model,
        fwd=model,
        loss_step=LossStep(r, weights, p.teacher_log_probs),
        dist=Dist(),
        cache=None,
        method=get_method(r.adapter.method),
        scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None,
        step_stats=torch.zeros(2, device=device),
    )


def _time_eval(p: Prepared, model, device, precision: str) -> float:
    """Seconds of one evaluation of all validation rows, from a random sample of them priced by tokens."""
    t = p.recipe.train
    ids = p.eval_ids
    if not ids:
        return 0.0
    rng = np.random.default_rng(t.seed)
    take = min(len(ids), EVAL_SAMPLE_BATCHES * min(t.eval_batch_size, 32))
    sample = [ids[i] for i in rng.choice(len(ids), size=take, replace=False)]
    pad = p.tokenizer.pad_token_id
    with torch.no_grad():
        forward_probs(
            model, sample[:4], pad, device, precision, t.eval_batch_size
        )  # untimed: first-call costs
        begin = time.perf_counter()
        forward_probs(model, sample, pad, device, precision, t.eval_batch_size)
        spent = time.perf_counter() - begin
    measured = sum(len(x) for x in sample)
    total = sum(len(x) for x in ids)
    return spent / max(measured, 1) * total


def _cache_row_seconds(p: Prepared, model, eval_seconds: float) -> float:
    """Per training row, an upper bound of building the frozen-layer cache (a forward pass), when it applies."""
    from loraclf.modeling.backbones import head_module_name
    from loraclf.training.frozen import first_trainable_layer

    t = p.recipe.train
    if not t.cache_frozen or p.recipe.adapter.method != "lora" or t.compile or not p.eval_ids:
        return 0.0
    with contextlib.suppress(Exception):  # a model the cache cannot read trains without it
        inner = model.base_model.model if hasattr(model, "peft_config") else model
        if not (first_trainable_layer(model, head_module_name(inner)) or 0) > 0:
            return 0.0
    return eval_seconds / len(p.eval_ids)


def _export_seconds(p: Prepared, model, device: torch.device) -> float:
    """The int8 ONNX export that finishing runs on a CPU for methods that merge into a plain model."""
    if (
        device.type != "cpu"
        or p.recipe.train.precision != "auto"
        or not get_method(p.recipe.adapter.method).plain
    ):
        return 0.0  # finishing loads the run with train.precision: only "auto" means int8 on a CPU
    total = sum(q.numel() for q in model.parameters())
    return EXPORT_SECONDS + EXPORT_SECONDS_PER_MPARAM * total / 1e6


def plan_run(
    p: Prepared, model, device, precision: str, started: float, world: int
) -> tuple[Prepared, BudgetPlan]:
    """Measure, lay out the plan (training/budget.py), and return the run as the plan trains it.

    The returned run's recipe holds the plan's keys (``train.max_steps``, ``train.eval_every``, ``data.max_length``,
    ``data.max_train_samples`` when it samples) with ``train.time_budget`` cleared, so its ``recipe.yaml``
    reproduces the plan; a sampled plan's rows are the stratified sample ``data.max_train_samples`` draws.

    Args:
        started: ``time.monotonic()`` when the command started (the budget counts from there).
        world: Processes in the job.

    Raises:
        UserError: several processes (the plan is one process's measurement), or a budget too short.
    """
    budget = parse_duration(p.recipe.train.time_budget)
    if world > 1:
        raise UserError(
            "--time-budget plans one process; drop --nproc (or train.time_budget) and train again"
        )
    rates = measure(p, model, device, precision, budget)
    t = p.recipe.train
    counts = np.bincount(p.train.labels, minlength=len(p.label_map))
    plan = lay_out(
        budget, time.monotonic() - started, rates, len(p.train), int(counts[counts > 0].min()),
        t.batch_size, t.grad_accum, t.epochs, t.max_steps,
    )  # fmt: skip
    recipe = copy.deepcopy(p.recipe)
    recipe.train.time_budget = None
    recipe.train.max_steps, recipe.train.eval_every = plan.steps, plan.eval_every
    recipe.data.max_length = plan.max_length = p.max_length
    if plan.sampled:
        recipe.data.max_train_samples = plan.rows
    p = _sampled(p, recipe) if plan.sampled else dataclasses.replace(p, recipe=recipe)
    return p, plan


def _sampled(p: Prepared, recipe) -> Prepared:
    """The run on ``recipe.data.max_train_samples`` rows: the rows reading the files with that recipe gives."""
    if p.recipe.data.max_train_samples is not None:
        # The rows were sampled already; a smaller sample is drawn from the files' rows, as a resume draws it.
        data = p.notes
        return prepare(recipe, data["train_file"], data.get("eval_file"))
    _, rows = stratified_indices(p.train.labels, recipe.data.max_train_samples, recipe.train.seed)
    train = p.train.subset(rows)
    notes = dict(p.notes)
    notes["eval_texts_seen_in_train"] = overlap_count(train.texts, p.eval.texts)
    notes["rows_digest"] = rows_digest(train, p.eval, p.label_map)
    teachers = None if p.teacher_log_probs is None else p.teacher_log_probs[rows]
    return dataclasses.replace(
        p, recipe=recipe, train=train, train_ids=[p.train_ids[i] for i in rows], notes=notes,
        teacher_log_probs=teachers,
    )  # fmt: skip
