"""Validation: values and combinations a recipe may not hold, each refused in one line naming its key.

Types are checked while the recipe is built (:mod:`loraclf.config.coerce`); here are the ranges (a rank of at least
1, a dropout in [0, 1)), the choices of string settings (:data:`~loraclf.config.schema.CHOICES`) and settings that
contradict each other. One function per recipe section keeps each list short; :func:`validate` runs them all.
"""

from __future__ import annotations

from loraclf.config.schema import CHOICES, DataConfig, Recipe
from loraclf.utils.durations import parse_duration
from loraclf.utils.errors import UserError, did_you_mean


def validate(recipe: Recipe) -> Recipe:
    """Check every value and combination of ``recipe`` (normalising ``data``'s file settings in place).

    Returns:
        The same recipe, for chaining.

    Raises:
        UserError: the first value out of range or combination refused, naming its key (and flag).
    """
    _check_choices(recipe)
    for ok, key, msg in (
        *_adapter_checks(recipe),
        *_train_checks(recipe),
        *_data_checks(recipe),
        *_model_checks(recipe),
    ):
        if not ok:
            raise UserError(f"{key} {msg}")
    _check_combinations(recipe)
    validate_files(recipe.data)
    _check_distill(recipe)
    return recipe


def _check_choices(recipe: Recipe) -> None:
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(recipe, section), name)
        if value not in allowed:
            raise UserError(
                f"{key}: '{value}' is not one of {', '.join(allowed)}{did_you_mean(value, allowed)}"
            )


Check = tuple[bool, str, str]  # (holds, "key (--flag)", what it must be)


def _adapter_checks(recipe: Recipe) -> list[Check]:
    a = recipe.adapter
    return [
        (a.r >= 1, "adapter.r (--rank)", f"must be a positive integer, got {a.r}"),
        (a.alpha is None or a.alpha > 0, "adapter.alpha (--alpha)", f"must be positive, got {a.alpha}"),
        (0 <= a.dropout < 1, "adapter.dropout", f"must be in [0, 1), got {a.dropout}"),
        (a.virtual_tokens >= 1, "adapter.virtual_tokens (--virtual-tokens)", "must be at least 1"),
        (a.target_rank is None or a.target_rank >= 1, "adapter.target_rank", "must be at least 1 or null"),
        (
            not isinstance(a.layer_ranks, list) or all(r >= 1 for r in a.layer_ranks),
            "adapter.layer_ranks (--layer-ranks)",
            f"must all be positive integers, got {a.layer_ranks}",
        ),
    ]


def _train_checks(recipe: Recipe) -> list[Check]:
    t = recipe.train
    parse_duration(t.time_budget)  # raises its own one-line error naming train.time_budget (--time-budget)
    return [
        (
            t.loraplus_lr_ratio is None or t.loraplus_lr_ratio > 0,
            "train.loraplus_lr_ratio",
            f"must be positive or null, got {t.loraplus_lr_ratio}",
        ),
        (
            t.epochs > 0 or (t.max_steps or 0) > 0,
            "train.epochs (--epochs)",
            f"must be positive, got {t.epochs}",
        ),
        (t.max_steps is None or t.max_steps > 0, "train.max_steps", f"must be positive, got {t.max_steps}"),
        (
            t.replans is None or _cuts_ok(t.replans),
            "train.replans",
            f"must be [step, new total, ...] with steps rising and each total at least its step, got {t.replans}",
        ),
        (t.batch_size >= 1, "train.batch_size", f"must be at least 1, got {t.batch_size}"),
        (t.eval_batch_size >= 1, "train.eval_batch_size", f"must be at least 1, got {t.eval_batch_size}"),
        (t.lr > 0, "train.lr", f"must be positive, got {t.lr}"),
        (t.weight_decay >= 0, "train.weight_decay", f"must be non-negative, got {t.weight_decay}"),
        (0 <= t.warmup_ratio < 1, "train.warmup_ratio", f"must be in [0, 1), got {t.warmup_ratio}"),
        (t.warmup_steps is None or t.warmup_steps >= 0, "train.warmup_steps", "must be non-negative"),
        (t.grad_accum >= 1, "train.grad_accum", f"must be at least 1, got {t.grad_accum}"),
        (t.max_grad_norm is None or t.max_grad_norm > 0, "train.max_grad_norm", "must be positive or null"),
        (0 <= t.label_smoothing < 1, "train.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}"),
        (t.eval_every is None or t.eval_every >= 1, "train.eval_every", "must be at least 1 or null"),
        (
            t.save_every is None or t.save_every >= 1,
            "train.save_every (--save-every)",
            "must be at least 1 or null",
        ),
        (
            t.early_stopping is None or t.early_stopping >= 1,
            "train.early_stopping",
            "must be at least 1 or null",
        ),
        (
            t.save_every_minutes is None or t.save_every_minutes > 0,
            "train.save_every_minutes",
            f"must be positive or null, got {t.save_every_minutes}",
        ),
        (t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be at least 1 (the newest is always kept)"),
        (t.threads is None or t.threads >= 1, "train.threads", "must be at least 1 or null"),
        (0 <= t.seed < 2**32, "train.seed (--seed)", f"must be in [0, 2^32), got {t.seed}"),
        (t.rdrop >= 0, "train.rdrop", f"must be 0 or positive, got {t.rdrop}"),
        (
            t.swa_start is None or 0 <= t.swa_start < 1,
            "train.swa_start",
            f"must be in [0, 1) or null, got {t.swa_start}",
        ),
    ]


def _cuts_ok(cuts: list[int]) -> bool:
    pairs = list(zip(cuts[::2], cuts[1::2]))
    steps = [step for step, _ in pairs]
    return (
        len(cuts) % 2 == 0
        and all(1 <= step <= total for step, total in pairs)
        and steps == sorted(set(steps))
    )


def _data_checks(recipe: Recipe) -> list[Check]:
    d, f = recipe.data, recipe.data.filter
    return [
        (
            d.val_size > 0 and (d.val_size < 1 or float(d.val_size).is_integer()),
            "data.val_size",
            f"must be a fraction below 1 or a whole row count, got {d.val_size}",
        ),
        (
            d.max_length is None or d.max_length >= 8,
            "data.max_length",
            f"must be at least 8 tokens, got {d.max_length}",
        ),
        (f.min_words is None or f.min_words >= 0, "data.filter.min_words", "must be 0 or more"),
        (
            f.max_words is None or f.max_words >= max(1, f.min_words or 0),
            "data.filter.max_words",
            f"must be at least 1 and at least data.filter.min_words, got {f.max_words}",
        ),
        (
            f.min_unique_ratio is None or 0 < f.min_unique_ratio <= 1,
            "data.filter.min_unique_ratio",
            f"must be in (0, 1], got {f.min_unique_ratio}",
        ),
        (0 < d.length_quantile <= 1, "data.length_quantile", f"must be in (0, 1], got {d.length_quantile}"),
        (
            d.max_train_samples is None or d.max_train_samples >= 2,
            "data.max_train_samples (--max-train-samples)",
            "must be at least 2",
        ),
    ]


def _model_checks(recipe: Recipe) -> list[Check]:
    m = recipe.model
    return [
        (
            recipe.budget is None or recipe.budget > 0,
            "budget (--budget)",
            f"must be positive, got {recipe.budget}",
        ),
        (0 <= m.head_dropout < 1, "model.head_dropout", "must be in [0, 1)"),
        (m.dropout is None or 0 <= m.dropout < 1, "model.dropout", "must be in [0, 1) or null"),
    ]


def _check_combinations(recipe: Recipe) -> None:
    t = recipe.train
    if t.warmup_steps is not None and t.max_steps is not None and t.warmup_steps >= t.max_steps:
        raise UserError(
            f"train.warmup_steps ({t.warmup_steps}) must be below train.max_steps ({t.max_steps})"
        )
    if t.save_every is not None and t.max_steps is not None and t.save_every > t.max_steps:
        raise UserError(
            f"train.save_every ({t.save_every}) exceeds train.max_steps ({t.max_steps}): no checkpoint "
            "would ever be written; lower --save-every"
        )
    if t.swa_start is not None and recipe.adapter.method == "adalora":
        raise UserError(
            "train.swa_start: AdaLoRA prunes ranks during training, and an average would bring pruned values "
            "back; set train.swa_start=null or use another method"
        )
    if t.precision == "fp16" and t.device == "cpu":
        raise UserError("train.precision fp16 needs a GPU; use bf16 or fp32 with train.device cpu")


def _check_distill(recipe: Recipe) -> None:
    if not 0 <= recipe.distill.alpha <= 1:
        raise UserError(f"distill.alpha must be in [0, 1], got {recipe.distill.alpha}")
    if recipe.distill.temperature <= 0:
        raise UserError(f"distill.temperature must be positive, got {recipe.distill.temperature}")


DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def validate_files(d: DataConfig) -> DataConfig:
    """Check (and normalise) how data files are read: ``data.header``, ``data.columns``, ``data.delimiter``.

    Raises:
        UserError: a headerless read without column names, repeated or empty names, or a delimiter that is not
            one character (``tab`` and ``\\t`` spell a tab).
    """
    if d.delimiter is not None:
        d.delimiter = DELIMITER_ALIASES.get(d.delimiter.lower(), d.delimiter)
        if len(d.delimiter) != 1 or d.delimiter in '"\r\n' or d.delimiter.isalnum() or d.delimiter == " ":
            raise UserError(
                f"data.delimiter must be one separator character such as , ; | or tab (got {d.delimiter!r}); "
                "or null to detect it"
            )
    if d.columns is not None:
        names = [c.strip() for c in d.columns]
        repeated = sorted({c for c in names if names.count(c) > 1})
        if not names or not all(names) or repeated:
            problem = f"repeats {', '.join(repeated)}" if repeated else "has an empty name"
            raise UserError(f"data.columns {problem}; give one distinct name per field, in file order")
        d.columns = names
    if not d.header and not d.columns:
        raise UserError(
            "data.header=false needs data.columns, the column names in file order "
            "(e.g. data.columns=label,title,description)"
        )
    if d.header and d.columns:
        raise UserError(
            "data.columns names the fields of a file without a header row; add data.header=false (a file with a "
            "header names its own columns: choose them with data.text_column / data.label_column)"
        )
    return d
