"""Recipes: typed dataclasses, YAML loading, dotted overrides and validation.

A recipe is the single source of truth for a run. It is read from YAML (``--config``), patched by CLI flags and
``key.sub=value`` overrides, validated, and written back into the run folder as ``recipe.yaml`` so that a run can be
repeated or resumed from its folder alone. Every field is documented once, here; errors name the key path
(``train.lr``) and suggest the closest key when one is misspelled.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, did_you_mean

FORMAT_VERSION = 1


@dataclass
class CleanConfig:
    """Text cleaning, applied identically at training, evaluation and prediction time."""

    html: bool = True  # decode HTML entities, including AG News' bare forms such as "#39;" and "quot;"
    escapes: bool = True  # backslash escapes ("\\n", "\\") become spaces
    whitespace: bool = True  # tabs, CR and runs of spaces collapse to one space
    urls: bool = False  # drop URLs
    emails: bool = False  # drop e-mail addresses
    source_tags: bool = False  # drop agency tags such as "(Reuters)" or "AFP -"
    digits: bool = False  # drop digits
    lowercase: bool = False  # lower-case (uncased tokenizers do this anyway)


@dataclass
class DataConfig:
    """Where texts and labels come from and how they are prepared."""

    text_column: str = "text"  # used when present; otherwise title_column + join + description_column
    title_column: str = "title"
    description_column: str = "description"
    join: str = " "  # between title and description, as the Hugging Face AG News does
    label_column: str = "label"
    id_column: str = "id"  # used for prediction IDs when present, else the row index
    val_size: float = 0.1  # stratified validation split when no eval file: a fraction (<1) or a row count (>=1)
    max_length: int | None = None  # tokens; None chooses the length covering `length_quantile` of training texts
    length_quantile: float = 0.995
    truncation_side: str = "right"  # right | left
    max_train_samples: int | None = None  # stratified random sample of the training rows, drawn with the seed
    clean: CleanConfig = field(default_factory=CleanConfig)


@dataclass
class ModelConfig:
    """Backbone and head."""

    name: str = "minilm"  # offline alias (minilm, mpnet-base), Hugging Face hub id, or a local model folder
    head: str = "default"  # default (the model's own) | mlp (hidden→hidden, ReLU, dropout→classes) | linear
    pooling: str = "auto"  # for mlp/linear heads: cls | mean | last; auto = last for causal LMs, else mean
    head_dropout: float = 0.1
    dropout: float | None = None  # overrides the backbone's hidden/attention dropout (0 speeds CPU training)
    attention: str = "auto"  # auto | eager | sdpa
    revision: str | None = None  # hub revision for hub ids


@dataclass
class AdapterConfig:
    """Which parameters train: LoRA adapters, the head only, or everything."""

    method: str = "lora"  # lora | head (feature extraction) | full (full fine-tuning)
    targets: list[str] = field(default_factory=lambda: ["query", "value"])  # module names or aliases
    r: int = 8
    alpha: float | None = None  # None = 2 * r
    dropout: float = 0.1
    bias: str = "none"  # none | all | lora_only
    layer_ranks: list[int] | str | None = None  # per-layer ranks, or an expression in i such as "8*2**(i//4)"
    layer_alphas: list[float] | str | None = None  # per-layer alphas, list or expression in i and r
    layers: list[int] | None = None  # which layers to adapt (default: all)


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    warmup_steps: int | None = None  # overrides warmup_ratio when set
    scheduler: str = "linear"  # linear | cosine | polynomial | constant
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    label_smoothing: float = 0.0
    precision: str = "auto"  # auto (bf16 where the device supports it) | bf16 | fp16 | fp32
    seed: int = 42
    eval_every: int | None = None  # optimizer steps between evaluations; None = once per epoch
    metric: str = "accuracy"  # accuracy | macro_f1 | loss: selects the best checkpoint
    early_stopping: int | None = None  # evaluations without improvement before stopping
    save_every: int | None = None  # optimizer steps between resumable checkpoints; None = at each evaluation
    keep_checkpoints: int = 2
    group_by_length: bool = True  # length-grouped batches with dynamic padding
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: int | None = None  # torch intra-op threads on CPU
    compile: bool = False  # torch.compile the model (dynamic shapes)
    progress: bool = True


@dataclass
class Recipe:
    """A complete, resolved description of one run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    budget: int | None = None  # refuse to train more trainable parameters than this
    description: str = ""


CHOICES = {
    "model.head": ("default", "mlp", "linear"),
    "model.pooling": ("auto", "cls", "mean", "last"),
    "model.attention": ("auto", "eager", "sdpa"),
    "adapter.method": ("lora", "head", "full"),
    "adapter.bias": ("none", "all", "lora_only"),
    "data.truncation_side": ("right", "left"),
    "train.scheduler": ("linear", "cosine", "polynomial", "constant"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
    "train.metric": ("accuracy", "macro_f1", "loss"),
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
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and inner is str:
            value = [s.strip() for s in str(value).split(",") if s.strip()]
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
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def from_dict(cls: type, data: dict, path: str = "", source: str = "recipe") -> Any:
    """Build a dataclass from a nested dict, naming the key path of any unknown key or wrong type."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: {path or 'top level'} must be a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise UserError(f"{source}: unknown key '{where}'{did_you_mean(key, names)}; see `loraclf train --help`")
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
                choices = node.keys() if isinstance(node, dict) else []
                raise UserError(f"override: unknown key '{where}'{did_you_mean(part, choices)}")
            if i == len(parts) - 1:
                try:
                    value = yaml.safe_load(raw) if raw.strip() else ""
                except yaml.YAMLError:
                    value = raw
                # YAML reads 1e-4 as a string; accept scientific notation for numeric fields.
                if isinstance(value, str):
                    try:
                        value = float(value) if any(c in value for c in ".eE") else int(value)
                    except ValueError:
                        pass
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
        "adapter.method": recipe.adapter.method,
        "adapter.bias": recipe.adapter.bias,
        "data.truncation_side": recipe.data.truncation_side,
        "train.scheduler": recipe.train.scheduler,
        "train.precision": recipe.train.precision,
        "train.metric": recipe.train.metric,
    }
    for key, value in flat.items():
        if value not in CHOICES[key]:
            raise UserError(f"{key}: '{value}' is not one of {', '.join(CHOICES[key])}{did_you_mean(value, CHOICES[key])}")
    a, t, d = recipe.adapter, recipe.train, recipe.data
    checks = [
        (a.r >= 1, "adapter.r (--rank)", f"must be a positive integer, got {a.r}"),
        (a.alpha is None or a.alpha > 0, "adapter.alpha (--alpha)", f"must be positive, got {a.alpha}"),
        (0 <= a.dropout < 1, "adapter.dropout", f"must be in [0, 1), got {a.dropout}"),
        (a.method != "lora" or bool(a.targets), "adapter.targets (--targets)", "is empty; name at least one module"),
        (t.epochs > 0 or (t.max_steps or 0) > 0, "train.epochs (--epochs)", f"must be positive, got {t.epochs}"),
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
        (t.save_every is None or t.save_every >= 1, "train.save_every (--save-every)", "must be at least 1 or null"),
        (t.early_stopping is None or t.early_stopping >= 1, "train.early_stopping", "must be at least 1 or null"),
        (t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be at least 1 (the newest is always kept)"),
        (t.threads is None or t.threads >= 1, "train.threads", "must be at least 1 or null"),
        (d.val_size > 0, "data.val_size", f"must be positive (a fraction below 1 or a row count), got {d.val_size}"),
        (d.max_length is None or d.max_length >= 8, "data.max_length", f"must be at least 8 tokens, got {d.max_length}"),
        (0 < d.length_quantile <= 1, "data.length_quantile", f"must be in (0, 1], got {d.length_quantile}"),
        (d.max_train_samples is None or d.max_train_samples >= 2, "data.max_train_samples (--max-train-samples)",
         "must be at least 2"),
        (recipe.budget is None or recipe.budget > 0, "budget (--budget)", f"must be positive, got {recipe.budget}"),
        (0 <= recipe.model.head_dropout < 1, "model.head_dropout", "must be in [0, 1)"),
        (recipe.model.dropout is None or 0 <= recipe.model.dropout < 1, "model.dropout", "must be in [0, 1) or null"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise UserError(f"{key} {msg}")
    if isinstance(a.layer_ranks, list) and any(r < 1 for r in a.layer_ranks):
        raise UserError(f"adapter.layer_ranks (--layer-ranks) must all be positive integers, got {a.layer_ranks}")
    if a.method != "lora" and (a.layer_ranks or a.layers):
        raise UserError(f"adapter.layer_ranks/layers apply to LoRA only, but adapter.method is '{a.method}'")
    if t.precision == "fp16" and t.device == "cpu":
        raise UserError("train.precision fp16 needs a GPU; use bf16 or fp32 with train.device cpu")
    return recipe


def save_recipe(recipe: Recipe, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False), encoding="utf-8")
