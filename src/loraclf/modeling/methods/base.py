"""The :class:`Method` record, the registry, and the checks every method shares.

A method declares what it is able to do (the adapter keys it uses, virtual tokens, merging, the training features it
supports) and the functions that build it; callers ask the record instead of testing a method's name. This module
and the family modules stay free of torch at import time: peft and torch are imported inside the builders, so the
command line can check a recipe before loading them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig, Recipe, validate
from loraclf.modeling.methods.search import MethodCandidate, SearchContext, by_rank
from loraclf.utils.errors import UserError, did_you_mean

if TYPE_CHECKING:  # torch is only needed once a model exists
    from torch import nn

# The adapter keys a method may declare in ``accepts`` (``layer_ranks`` stands for layer_ranks, layer_alphas and
# layers; ``bias_lora_only`` for adapter.bias=lora_only). Setting one of CHECKED_KEYS for a method that neither
# accepts nor ignores it is refused; the others have defaults that a method not reading them leaves unused.
KEYS = ("targets", "r", "alpha", "dropout", "layer_ranks", "rslora", "init", "target_rank", "virtual_tokens")
KEYS += ("bias_lora_only",)
CHECKED_KEYS = ("targets", "layer_ranks", "rslora", "init", "bias_lora_only")
# Training features that only some methods support (``supports``).
FEATURES = ("loraplus", "frozen_cache", "gradient_checkpointing")


@dataclass(frozen=True)
class Method:
    """One adaptation method: what it is, what it accepts and supports, and how it is built, counted and searched.

    Attributes:
        name: The value of ``adapter.method`` / ``--method``.
        summary: One line for listings and the methods table.
        source: Paper or library the method comes from.
        family: The module (family) that defines it: ``lora``, ``baseline``, ``prompt``, …
        apply: ``(model, spec) -> model`` making exactly the method's parameters trainable (may wrap the model).
            The same call builds the meta-device plan and the trained model, so the plan is exact by construction.
            Left out for a peft method: peft wraps the model with ``build``'s config.
        build: ``(model, spec, meta) -> peft config`` of a peft-built method (``meta``: planning, no weights).
        after_build: Optional ``(model) -> None`` run on the peft model, identically on the meta device and on real
            weights (AdaLoRA freezes a constant peft leaves trainable on the meta device).
        kinds: Parameter-name part → breakdown kind of the plan (``{"lora_A": "lora A"}``); parameters it does not
            claim are counted as head, biases or other.
        accepts: Which adapter keys of :data:`KEYS` the method reads; a recipe setting one of
            :data:`CHECKED_KEYS` it does not accept is refused in one line.
        ignores: Keys of :data:`CHECKED_KEYS` tolerated without effect (the baselines swap into any recipe).
        supports: Which of :data:`FEATURES` work with the method.
        why_not: Feature → the one-line reason and remedy shown when a recipe asks for an unsupported feature.
        virtual_tokens: Trains ``adapter.virtual_tokens`` input positions (they take position slots of the text).
        merges: Whether the trained update folds into the frozen weights for prediction and export.
        plain: False when the trained model stays a peft wrapper (the virtual-token methods), so the int8 ONNX
            graph and ``export`` cannot represent it.
        conv1d: Whether peft can adapt GPT-2's Conv1D layers with it.
        own_bias: Whether loraclf trains the biases itself under ``bias=all`` (peft's config has no bias option).
        default_targets: ``(model) -> module names`` adapted when ``adapter.targets`` is null.
        check: Optional ``(spec) -> None`` raising UserError for method-specific settings.
        describe: Optional ``(spec) -> str`` settings line of ``loraclf plan``.
        candidates: ``(ctx, name) -> candidates`` of ``plan --search --methods`` (see :mod:`.search`).
        preset: Recipe overrides (``key=value``) of the method's preset entry in ``loraclf compare``, on top of
            the model's default recipe (full fine-tuning: no budget and a small learning rate).
        smallest: Adapter settings of the method's smallest configuration (what ``plan --search`` reports when
            nothing fits).
        after_step: Optional ``(model, step) -> None`` run after every optimizer step.
        extra_loss: Optional ``(model) -> scalar tensor`` added to the training loss.
        prepare: Optional ``(model, total_steps) -> None`` run once before the first step.
        final_state: Optional ``(model) -> dict`` recorded in run.json as ``method_state`` after training.
        checkpoint_state: Optional ``(model) -> dict`` a checkpoint keeps beside the weights so ``--resume``
            continues exactly.
        restore_state: Optional ``(model, state) -> None`` putting ``checkpoint_state``'s dict back on resume.
    """

    name: str
    summary: str
    source: str
    family: str
    apply: Callable[[nn.Module, AdapterConfig], nn.Module] | None = None
    build: Callable[[nn.Module, AdapterConfig, bool], object] | None = None
    after_build: Callable[[nn.Module], None] | None = None
    kinds: Mapping[str, str] = field(default_factory=dict)
    accepts: frozenset[str] = frozenset()
    ignores: frozenset[str] = frozenset()
    supports: frozenset[str] = frozenset({"gradient_checkpointing"})
    why_not: Mapping[str, str] = field(default_factory=dict)
    virtual_tokens: bool = False
    merges: bool = False
    plain: bool = True
    conv1d: bool = True
    own_bias: bool = False
    default_targets: Callable[[nn.Module], list[str]] | None = None
    check: Callable[[AdapterConfig], None] | None = None
    describe: Callable[[AdapterConfig], str] | None = None
    candidates: Callable[[SearchContext, str], list[MethodCandidate]] = by_rank
    preset: tuple[str, ...] = ()
    smallest: Mapping[str, object] = field(default_factory=lambda: {"r": 1})
    after_step: Callable[[nn.Module, int], None] | None = None
    extra_loss: Callable[[nn.Module], object] | None = None
    prepare: Callable[[nn.Module, int], None] | None = None
    final_state: Callable[[nn.Module], dict] | None = None
    checkpoint_state: Callable[[nn.Module], dict] | None = None
    restore_state: Callable[[nn.Module, dict], None] | None = None

    def __post_init__(self) -> None:
        if (self.apply is None) == (self.build is None):
            raise ValueError(f"method {self.name}: give exactly one of apply (a baseline) or build (peft)")
        if self.apply is None:
            object.__setattr__(self, "apply", lambda model, spec: _peft_apply(self, model, spec))
        unknown = (
            self.accepts - set(KEYS) or self.ignores - set(CHECKED_KEYS) or self.supports - set(FEATURES)
        )
        if unknown:
            raise ValueError(f"method {self.name}: unknown keys or features {sorted(unknown)}")

    def param_kind(self, name: str) -> str | None:
        """The breakdown kind of a trainable parameter name, or None when the parameter is not the method's own."""
        for part in name.split("."):
            if part in self.kinds:
                return self.kinds[part]
        return None


def _peft_apply(method: Method, model: nn.Module, spec: AdapterConfig) -> nn.Module:
    """``apply`` of a peft method: peft wraps the model with ``build``'s config, then what trains is settled.

    Methods whose peft config has no bias option (``own_bias``) train every bias themselves under bias=all.
    """
    from peft import get_peft_model

    meta = any(p.is_meta for p in model.parameters())
    model = get_peft_model(model, method.build(model, spec, meta))
    if method.after_build is not None:
        method.after_build(model)
    if spec.bias == "all" and method.own_bias:
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.requires_grad_(True)
    return model


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (a name may be registered once).

    Raises:
        ValueError: the name is taken.
    """
    if method.name in METHODS:
        raise ValueError(f"adaptation method '{method.name}' is registered twice")
    METHODS[method.name] = method
    return method


def all_methods() -> list[Method]:
    """Every registered method, in registration order."""
    return list(METHODS.values())


def get_method(name: str) -> Method:
    """The registered method called ``name``.

    Raises:
        UserError: no method has that name (the message lists them and suggests the closest).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(
            f"adapter.method (--method): '{name}' is not one of {', '.join(METHODS)}{did_you_mean(name, METHODS)}"
        ) from None


def names_with(test: Callable[[Method], bool]) -> str:
    """``lora, dora or vera``: the registered methods passing ``test``, for messages."""
    names = [m.name for m in METHODS.values() if test(m)]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _uses(method: Method, key: str) -> bool:
    return key in method.accepts or key in method.ignores


def check_spec(spec: AdapterConfig) -> Method:
    """The method of ``spec``, after refusing the settings it does not use (one line naming the key).

    Raises:
        UserError: unknown method, or a key of :data:`CHECKED_KEYS` set for a method that does not accept it.
    """
    m = get_method(spec.method)
    if (spec.layer_ranks or spec.layers) and not _uses(m, "layer_ranks"):
        raise UserError(
            f"adapter.layer_ranks/layers apply to {names_with(lambda x: 'layer_ranks' in x.accepts)}, "
            f"but adapter.method is '{m.name}'"
        )
    if (spec.rslora or spec.init is not True) and not (_uses(m, "rslora") and _uses(m, "init")):
        raise UserError(
            f"adapter.rslora/adapter.init apply to {names_with(lambda x: 'rslora' in x.accepts)}, "
            f"but adapter.method is '{m.name}'"
        )
    if spec.bias == "lora_only" and not _uses(m, "bias_lora_only"):
        raise UserError(
            f"adapter.bias lora_only needs one of {names_with(lambda x: 'bias_lora_only' in x.accepts)} "
            f"(got '{m.name}'); use none or all"
        )
    if spec.targets is not None and not _uses(m, "targets"):
        raise UserError(
            f"adapter.targets (--targets): adapter.method {m.name} adapts no modules; drop --targets"
        )
    if spec.targets is not None and not spec.targets and "targets" in m.accepts:
        raise UserError("adapter.targets (--targets) is empty; name at least one module or leave it null")
    if m.check is not None:
        m.check(spec)
    return m


def apply_adapters(model: nn.Module, spec: AdapterConfig) -> nn.Module:
    """Make exactly the recipe's parameters trainable (see :class:`Method`); returns the model to train."""
    return check_spec(spec).apply(model, spec)


def validate_recipe(recipe: Recipe) -> Recipe:
    """:func:`loraclf.config.validate` plus the adaptation method's own checks and its supported features.

    Raises:
        UserError: naming the recipe key (and flag) at fault.
    """
    validate(recipe)
    m = check_spec(recipe.adapter)
    if recipe.train.loraplus_lr_ratio is not None and "loraplus" not in m.supports:
        raise UserError(
            f"train.loraplus_lr_ratio (LoRA+) needs adapter.method "
            f"{names_with(lambda x: 'loraplus' in x.supports)}, got '{m.name}'"
        )
    if recipe.train.gradient_checkpointing and "gradient_checkpointing" not in m.supports:
        why = m.why_not.get("gradient_checkpointing", "set train.gradient_checkpointing=false")
        raise UserError(f"train.gradient_checkpointing cannot be used with adapter.method {m.name} ({why})")
    return recipe


def table_markdown() -> str:
    """The registry as a markdown table: name, description, virtual tokens, merges, accepted keys, source."""
    rows = [
        "| method | description | virtual tokens | merges | keys it accepts | source |",
        "|---|---|---|---|---|---|",
    ]

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    for m in METHODS.values():
        keys = ", ".join(f"`{k}`" for k in sorted(m.accepts)) or "–"
        rows.append(
            f"| `{m.name}` | {cell(m.summary)} | {'yes' if m.virtual_tokens else 'no'} | "
            f"{'yes' if m.merges else 'no'} | {keys} | {cell(m.source)} |"
        )
    return "\n".join(rows) + "\n"


# --- the plan's settings line --------------------------------------------------------------------------------------


def _targets(spec: AdapterConfig) -> str:
    return ",".join(spec.targets) if spec.targets is not None else "default"


def describe_ranked(spec: AdapterConfig) -> str:
    """``vera     targets default   r 8   bias none``."""
    return f"{spec.method:<9}targets {_targets(spec)}   r {spec.r}   bias {spec.bias}"


def describe_tokens(spec: AdapterConfig) -> str:
    """``prompt   virtual tokens 20``."""
    return f"{spec.method:<9}virtual tokens {spec.virtual_tokens}"


def describe_lora(spec: AdapterConfig) -> str:
    """LoRA's line: targets, ranks (or their schedule), alpha, bias, rsLoRA and the initialisation."""
    ranks = spec.layer_ranks if spec.layer_ranks is not None else spec.r
    return (
        f"{spec.method:<9}targets {_targets(spec)}   r {ranks}   alpha {spec.alpha if spec.alpha else '2r'}   "
        f"bias {spec.bias}{'   rslora' if spec.rslora else ''}{'' if spec.init is True else f'   init {spec.init}'}"
    )
