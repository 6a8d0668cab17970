"""Recipes: typed dataclasses, YAML loading, dotted overrides and validation.

A recipe is the single source of truth for a run. It is read from YAML (``--config``), patched by CLI flags and
``key.sub=value`` overrides, validated, and written back into the run folder as ``recipe.yaml`` so that a run can be
repeated or resumed from its folder alone. Every field is documented once, here; errors name the key path
(``train.lr``) and suggest the closest key when one is misspelled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loraclf.utils.errors import UserError, did_you_mean

FORMAT_VERSION = 1


def opt(
    default: Any, help: str, flag: str | None = None, commands: tuple[str, ...] = ("plan", "train")
) -> Any:
    """A recipe field with its one-line documentation (shown by `loraclf train --help`).

    ``flag`` makes the field a command-line shortcut (``--rank`` for ``adapter.r``) on ``commands``; the CLI
    derives the flag's type and help from here (see ``loraclf.cli.args``), so a setting is documented once.
    """
    return field(default=default, metadata={"help": help, "flag": flag, "commands": commands})


def opt_factory(factory: Any, help: str) -> Any:
    return field(default_factory=factory, metadata={"help": help})


@dataclass
class CleanConfig:
    """Text cleaning, applied identically at training, evaluation and prediction time."""

    html: bool = opt(True, 'decode HTML entities, including AG News\' bare forms such as "#39;" and "quot;"')
    escapes: bool = opt(True, 'backslash escapes ("\\n", "\\") become spaces')
    whitespace: bool = opt(True, "tabs, CR and runs of spaces collapse to one space")
    punctuation: bool = opt(
        False,
        'undo tokenised spacing: "word , word ( Reuters )" becomes "word, word (Reuters)" (matters for BPE '
        "tokenizers such as RoBERTa's and GPT-2's; WordPiece splits punctuation anyway)",
    )
    urls: bool = opt(False, "drop URLs")
    emails: bool = opt(False, "drop e-mail addresses")
    source_tags: bool = opt(False, 'drop agency tags such as "(Reuters)" or "AFP -"')
    digits: bool = opt(False, "drop digits")
    lowercase: bool = opt(False, "lower-case (uncased tokenizers do this anyway)")


@dataclass
class FilterConfig:
    """Length / vocabulary-richness filter on the training rows (off when every bound is null)."""

    min_words: int | None = opt(None, "drop training rows with fewer words")
    max_words: int | None = opt(None, "drop training rows with more words")
    min_unique_ratio: float | None = opt(
        None, "drop training rows whose distinct/total word ratio is lower (one report used 0.70)"
    )


@dataclass
class DataConfig:
    """Where texts and labels come from and how they are prepared."""

    text_column: str = opt("text", "used when present; otherwise title_column + join + description_column")
    title_column: str = opt("title", "title column, joined with the description when there is no text column")
    description_column: str = opt("description", "description column")
    join: str = opt(" ", "between title and description, as the Hugging Face AG News does")
    label_column: str = opt("label", "label column (ints or strings)")
    id_column: str = opt("id", "used for prediction IDs when present, else the row index")
    header: bool = opt(
        True,
        "CSV/TSV: the first row names the columns; false reads every row as data (names from data.columns)",
    )
    columns: list[str] | None = opt(
        None, "CSV/TSV without a header row: column names in file order, e.g. label,title,description"
    )
    delimiter: str | None = opt(
        None, "CSV/TSV field separator: , ; tab | (or any one character); null detects it from the first line"
    )
    encoding: str | None = opt(
        None,
        "text encoding of files that are not UTF-8, any Python codec (e.g. cp1252, latin-1); null reads UTF-8, "
        "or UTF-16/32 when the file starts with its byte-order mark",
    )
    val_size: float = opt(
        0.1, "stratified validation split when no eval file: a fraction (<1) or a row count (>=1)"
    )
    max_length: int | None = opt(
        None, "tokens; None chooses the length covering `length_quantile` of training texts"
    )
    length_quantile: float = opt(
        0.995, "share of training texts max_length must cover when chosen automatically"
    )
    truncation_side: str = opt("right", "right | left")
    max_train_samples: int | None = opt(
        None,
        "stratified random sample of the training rows, drawn with the seed",
        "--max-train-samples",
        ("train",),
    )
    label_names: list[str] | None = opt(
        None,
        "display names of numeric labels in label order (e.g. [World, Sports, Business, Sci/Tech] for 0-3); "
        "reports show them instead of the numbers",
    )
    clean: CleanConfig = opt_factory(CleanConfig, "text cleaning")
    filter: FilterConfig = opt_factory(FilterConfig, "length / vocabulary-richness filter on training rows")


@dataclass
class ModelConfig:
    """Backbone and head."""

    name: str = opt(
        "minilm",
        "offline alias (minilm, mpnet-base), Hugging Face hub id, or a local model folder",
        "--model",
    )
    head: str = opt(
        "default", "default (the model's own) | mlp (hidden→hidden, ReLU, dropout→classes) | linear", "--head"
    )
    pooling: str = opt(
        "auto", "for mlp/linear heads: cls | mean | last; auto = last for causal LMs, else mean"
    )
    head_dropout: float = opt(0.1, "dropout inside mlp/linear heads")
    dropout: float | None = opt(
        None, "overrides the backbone's hidden/attention dropout (0 speeds CPU training)"
    )
    attention: str = opt("auto", "auto | eager | sdpa")
    revision: str | None = opt(None, "hub revision for hub ids")


# Methods that train virtual tokens (adapter.virtual_tokens) rather than weights; their tokens take position slots.
VIRTUAL_TOKEN_METHODS = ("prompt", "prefix")


@dataclass
class AdapterConfig:
    """Which parameters train: LoRA adapters, the head only, or everything."""

    method: str = opt(
        "lora",
        "adaptation method: lora | dora | vera | adalora | ia3 | loha | lokr | bitfit | prompt | prefix | head "
        "(feature extraction) | full (full fine-tuning); see modeling/methods.py and the README's table",
        "--method",
    )
    targets: list[str] | None = opt(
        None,
        "module names, comma separated (query,value; q,v; c_attn) or attention/mlp/all-linear; null = the "
        "method's default for the architecture (LoRA: query/value)",
        "--targets",
    )
    r: int = opt(
        8, "rank of rank-based methods (LoRA, DoRA, VeRA, LoHa, LoKr; AdaLoRA's initial rank)", "--rank"
    )
    alpha: float | None = opt(None, "LoRA alpha; None = 2 * r", "--alpha")
    dropout: float = opt(0.1, "LoRA dropout on the adapter input")
    bias: str = opt("none", "none | all | lora_only", "--bias")
    layer_ranks: list[int] | str | None = opt(
        None, "per-layer ranks: 8,8,16,… or an expression in i such as '8*2**(i//4)'", "--layer-ranks"
    )
    layer_alphas: list[float] | str | None = opt(None, "per-layer alphas, list or expression in i and r")
    layers: list[int] | None = opt(None, "which layers to adapt (default: all)")
    rslora: bool = opt(False, "LoRA/DoRA: scale updates by alpha/sqrt(r) instead of alpha/r (rsLoRA)")
    init: bool | str = opt(
        True, "LoRA/DoRA init_lora_weights: true | gaussian | pissa | pissa_niter_N | olora | orthogonal"
    )
    target_rank: int | None = opt(None, "AdaLoRA's final average rank; null = half of adapter.r (at least 1)")
    virtual_tokens: int = opt(20, "prompt/prefix tuning: number of virtual tokens", "--virtual-tokens")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: float = opt(3.0, "passes over the training rows (fractions allowed)", "--epochs", ("train",))
    max_steps: int | None = opt(None, "overrides epochs when set")
    batch_size: int = opt(32, "training rows per batch")
    eval_batch_size: int = opt(
        128, "rows per batch at evaluation and prediction (PyTorch on a CPU: at most 32, measured faster)"
    )
    lr: float = opt(5e-4, "peak AdamW learning rate")
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases and norms)")
    warmup_ratio: float = opt(0.06, "share of steps with linear warmup")
    warmup_steps: int | None = opt(None, "overrides warmup_ratio when set")
    scheduler: str = opt("linear", "linear | cosine | polynomial | constant")
    grad_accum: int = opt(1, "batches accumulated per optimizer step")
    max_grad_norm: float | None = opt(1.0, "gradient clipping norm; null disables")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy")
    class_weights: str = opt("none", "none | balanced (weight classes by inverse frequency in the loss)")
    loraplus_lr_ratio: float | None = opt(
        None,
        "LoRA+: the B matrices learn at lr times this ratio (LoRA/DoRA only; 16 in the paper); null = off",
    )
    rdrop: float = opt(0.0, "R-Drop weight: KL between two dropout passes (0 = off; doubles forward cost)")
    precision: str = opt("auto", "auto (bf16 where the device supports it) | bf16 | fp16 | fp32")
    seed: int = opt(42, "seed of initialisation, data order, splits and sampling", "--seed", ("train",))
    eval_every: int | None = opt(None, "optimizer steps between evaluations; None = once per epoch")
    metric: str = opt(
        "accuracy", "accuracy | macro_f1 | loss: selects the best checkpoint (ties: lower loss)"
    )
    early_stopping: int | None = opt(None, "evaluations without improvement before stopping")
    save_every: int | None = opt(
        None,
        "optimizer steps between resumable checkpoints; None = at each evaluation",
        "--save-every",
        ("train",),
    )
    save_every_minutes: float | None = opt(
        10.0,
        "also write a resumable checkpoint when this many minutes passed since the last one (a stopped run "
        "loses at most about this much work); null = by steps only",
    )
    keep_checkpoints: int = opt(2, "resumable checkpoints kept (the newest is never pruned)")
    group_by_length: bool = opt(True, "length-grouped batches with dynamic padding")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps")
    threads: int | None = opt(None, "torch intra-op threads on CPU")
    compile: bool = opt(False, "torch.compile the model (dynamic shapes)")
    gradient_checkpointing: bool = opt(
        False, "recompute block activations in backward: less memory for about a third more compute"
    )
    cache_frozen: bool = opt(
        True,
        "adapters from layer k up: run layers below k once and reuse their output each epoch (dropout off there)",
    )
    progress: bool = opt(True, "progress bars (--quiet turns them off)")
    tensorboard: bool = opt(
        False, "also write TensorBoard event files to <run>/tensorboard (needs tensorboard)"
    )


@dataclass
class DistillConfig:
    """Knowledge distillation from finished runs (teachers) into this run (the student)."""

    teachers: list[str] = opt_factory(list, "run folders of teacher models; empty = no distillation")
    temperature: float = opt(2.0, "softmax temperature T of teacher and student")
    alpha: float = opt(0.5, "weight of the distillation term; 1 - alpha weighs the cross-entropy")


@dataclass
class Recipe:
    """A complete, resolved description of one run."""

    model: ModelConfig = opt_factory(ModelConfig, "backbone and head")
    adapter: AdapterConfig = opt_factory(AdapterConfig, "what trains")
    data: DataConfig = opt_factory(DataConfig, "data preparation")
    train: TrainConfig = opt_factory(TrainConfig, "optimisation")
    distill: DistillConfig = opt_factory(DistillConfig, "distillation from teacher runs")
    budget: int | None = opt(None, "refuse recipes with more trainable parameters than this", "--budget")
    description: str = opt("", "free text shown in run listings")


CHOICES = {
    "model.head": ("default", "mlp", "linear"),
    "model.pooling": ("auto", "cls", "mean", "last"),
    "model.attention": ("auto", "eager", "sdpa"),
    "adapter.bias": ("none", "all", "lora_only"),
    "data.truncation_side": ("right", "left"),
    "train.scheduler": ("linear", "cosine", "polynomial", "constant"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
    "train.metric": ("accuracy", "macro_f1", "loss"),
    "train.class_weights": ("none", "balanced"),
}


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check (and gently coerce) a value against a field annotation; returns (ok, value)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is list:
        (inner,) = typing.get_args(tp)
        # Flags and overrides spell lists as "a,b" or "8,8,16"; a lone value is a one-item list.
        if isinstance(value, str):
            value = [s.strip() for s in value.strip("[]").split(",") if s.strip()]
            if inner in (int, float):
                try:
                    value = [float(v) if inner is float else int(v) for v in value]
                except ValueError:
                    return False, value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for item in value:
            ok, v = _type_ok(item, inner)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        # YAML 1.1 reads "1e-4" (no dot) as a string; a number written that way is still a number.
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def from_dict(cls: type, data: dict, path: str = "", source: str = "recipe") -> Any:
    """Build a dataclass from a nested dict, naming the key path of any unknown key or wrong type."""
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: {path or 'top level'} must be a mapping of keys, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise UserError(
                f"{source}: unknown key '{where}'{suggest_key(where)}; see `loraclf train --help`"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, where, source)
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise UserError(
                f"{source}: key '{where}' must be {_type_name(tp)}, got {value!r}; fix the value in the recipe or flag"
            )
        kwargs[key] = coerced
    return cls(**kwargs)


def to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def load_recipe(path: str | Path | None) -> Recipe:
    """Read a YAML recipe; an absent path gives the defaults."""
    if path is None:
        return Recipe()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config: recipe file '{p}' not found; pass a YAML file (see recipes/)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{p}: not valid YAML{where}; check indentation and quoting") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text; save the recipe as UTF-8") from None
    return from_dict(Recipe, data, source=str(p))


def suggest_key(key: str) -> str:
    """' (did you mean "train.epochs"?)': the closest full dotted key, so the suggestion can be pasted as is.

    The whole path is compared first (``train.epoch`` → ``train.epochs``, ``trian.lr`` → ``train.lr``); failing
    that, the last part alone (``epochs`` → ``train.epochs``, ``lrr`` → ``train.lr``).
    """
    leaves = [k for k, _, _ in describe()]
    found = difflib.get_close_matches(key, leaves + [f.name for f in dataclasses.fields(Recipe)], n=1)
    if not found:
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in leaves}
        found = [by_leaf[m] for m in difflib.get_close_matches(key.rsplit(".", 1)[-1], by_leaf, n=1)]
    return f' (did you mean "{found[0]}"?)' if found else ""


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML scalars (``8``, ``1e-4``, ``[q,v]``, ``null``)."""
    data = to_dict(recipe)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not key=value; write e.g. train.lr=1e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts):
            where = ".".join(parts[: i + 1])
            if not isinstance(node, dict) or part not in node:
                raise UserError(
                    f"override: unknown key '{where}'{suggest_key(key.strip())}; "
                    "`loraclf train --help` lists every key"
                )
            if i == len(parts) - 1:
                try:
                    value = yaml.safe_load(raw) if raw.strip() else ""
                except yaml.YAMLError:
                    value = raw  # e.g. "," as in data.delimiter=,
                if value in ("", None) and raw.strip() in ("|", ">"):
                    value = raw.strip()  # YAML block-scalar marks, meant literally (data.delimiter=|)
                # YAML reads 1e-4 as a string; accept scientific notation for numeric fields.
                if isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        value = float(value) if any(c in value for c in ".eE") else int(value)
                node[part] = value
            else:
                node = node[part]
    return from_dict(Recipe, data, source="override")


def validate(recipe: Recipe) -> Recipe:
    """Check values and combinations; raise UserError naming the key."""
    flat = {
        "model.head": recipe.model.head,
        "model.pooling": recipe.model.pooling,
        "model.attention": recipe.model.attention,
        "adapter.bias": recipe.adapter.bias,
        "data.truncation_side": recipe.data.truncation_side,
        "train.scheduler": recipe.train.scheduler,
        "train.precision": recipe.train.precision,
        "train.metric": recipe.train.metric,
        "train.class_weights": recipe.train.class_weights,
    }
    for key, value in flat.items():
        if value not in CHOICES[key]:
            raise UserError(
                f"{key}: '{value}' is not one of {', '.join(CHOICES[key])}{did_you_mean(value, CHOICES[key])}"
            )
    a, t, d = recipe.adapter, recipe.train, recipe.data
    checks = [
        (a.r >= 1, "adapter.r (--rank)", f"must be a positive integer, got {a.r}"),
        (a.alpha is None or a.alpha > 0, "adapter.alpha (--alpha)", f"must be positive, got {a.alpha}"),
        (0 <= a.dropout < 1, "adapter.dropout", f"must be in [0, 1), got {a.dropout}"),
        (a.virtual_tokens >= 1, "adapter.virtual_tokens (--virtual-tokens)", "must be at least 1"),
        (a.target_rank is None or a.target_rank >= 1, "adapter.target_rank", "must be at least 1 or null"),
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
        (
            d.val_size > 0 and (d.val_size < 1 or float(d.val_size).is_integer()),
            "data.val_size",
            f"must be a fraction below 1 or a whole row count, got {d.val_size}",
        ),
        (0 <= t.seed < 2**32, "train.seed (--seed)", f"must be in [0, 2^32), got {t.seed}"),
        (
            d.max_length is None or d.max_length >= 8,
            "data.max_length",
            f"must be at least 8 tokens, got {d.max_length}",
        ),
        (d.filter.min_words is None or d.filter.min_words >= 0, "data.filter.min_words", "must be 0 or more"),
        (
            d.filter.max_words is None or d.filter.max_words >= max(1, d.filter.min_words or 0),
            "data.filter.max_words",
            f"must be at least 1 and at least data.filter.min_words, got {d.filter.max_words}",
        ),
        (
            d.filter.min_unique_ratio is None or 0 < d.filter.min_unique_ratio <= 1,
            "data.filter.min_unique_ratio",
            f"must be in (0, 1], got {d.filter.min_unique_ratio}",
        ),
        (0 < d.length_quantile <= 1, "data.length_quantile", f"must be in (0, 1], got {d.length_quantile}"),
        (
            d.max_train_samples is None or d.max_train_samples >= 2,
            "data.max_train_samples (--max-train-samples)",
            "must be at least 2",
        ),
        (
            recipe.budget is None or recipe.budget > 0,
            "budget (--budget)",
            f"must be positive, got {recipe.budget}",
        ),
        (0 <= recipe.model.head_dropout < 1, "model.head_dropout", "must be in [0, 1)"),
        (
            recipe.model.dropout is None or 0 <= recipe.model.dropout < 1,
            "model.dropout",
            "must be in [0, 1) or null",
        ),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise UserError(f"{key} {msg}")
    if isinstance(a.layer_ranks, list) and any(r < 1 for r in a.layer_ranks):
        raise UserError(
            f"adapter.layer_ranks (--layer-ranks) must all be positive integers, got {a.layer_ranks}"
        )
    if t.warmup_steps is not None and t.max_steps is not None and t.warmup_steps >= t.max_steps:
        raise UserError(
            f"train.warmup_steps ({t.warmup_steps}) must be below train.max_steps ({t.max_steps})"
        )
    if t.save_every is not None and t.max_steps is not None and t.save_every > t.max_steps:
        raise UserError(
            f"train.save_every ({t.save_every}) exceeds train.max_steps ({t.max_steps}): no checkpoint "
            "would ever be written; lower --save-every"
        )
    validate_files(d)
    if not 0 <= recipe.distill.alpha <= 1:
        raise UserError(f"distill.alpha must be in [0, 1], got {recipe.distill.alpha}")
    if recipe.distill.temperature <= 0:
        raise UserError(f"distill.temperature must be positive, got {recipe.distill.temperature}")
    if t.rdrop < 0:
        raise UserError(f"train.rdrop must be 0 or positive, got {t.rdrop}")
    if t.precision == "fp16" and t.device == "cpu":
        raise UserError("train.precision fp16 needs a GPU; use bf16 or fp32 with train.device cpu")
    return recipe


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


def describe(cls: type | None = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every recipe key, for `--help` and the README."""
    cls = cls or Recipe
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], key + ".")
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows


def save_recipe(recipe: Recipe, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False), encoding="utf-8")


def _flag_fields(
    cls: type | None = None, prefix: str = ""
) -> list[tuple[str, dataclasses.Field, typing.Any]]:
    """(dotted key, field, annotation) of every recipe field that declares a command-line flag."""
    cls = cls or Recipe
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += _flag_fields(tp, f"{prefix}{f.name}.")
        elif f.metadata.get("flag"):
            rows.append((f"{prefix}{f.name}", f, tp))
    return rows


FLAG_FIELDS = _flag_fields()
# flag dest → recipe key path (``layer_ranks`` → ``adapter.layer_ranks``)
FLAG_KEYS = {f.metadata["flag"].lstrip("-").replace("-", "_"): key for key, f, _ in FLAG_FIELDS}
