"""The registry of adaptation methods: what trains, how it is counted, whether it merges, and its training hooks.

Every method is one :class:`Method` entry. ``apply`` turns a freshly built classifier into the trainable model
(through peft for adapter methods, by switching ``requires_grad`` for the baselines), and it is the *same* function
for the exact plan on the meta device and for training, so the plan cannot drift from the trained model.
``param_kind`` names a trainable parameter's kind for the plan breakdown (``lora`` for LoRA's A and B matrices, for
instance); parameters it does not claim are counted as head, biases or other. ``merges`` says whether prediction
and export fold the method into the frozen weights (``merge_and_unload``). Methods that need more than a loss and an
optimizer step supply hooks: ``after_step(model, step)`` runs after each optimizer step (AdaLoRA's rank allocation
is one), and ``extra_loss(model)`` returns a term added to the training loss (AdaLoRA's orthogonality regulariser);
``prepare(model, total_steps)`` runs once before training (AdaLoRA's schedule), ``final_state(model)`` returns what
run.json records about the trained method (AdaLoRA's final ranks).

Adding a method is adding an entry here with :func:`register`; the recipe key ``adapter.method``, ``--method``, the
plan, training, prediction and export all read this table.

Sources: LoRA, Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (through Hugging Face peft);
BitFit, Ben Zaken et al. 2022, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models"; feature extraction (head only) and full fine-tuning are the usual baselines. The other peft
methods (DoRA, VeRA, AdaLoRA, IA³, LoHa, LoKr, prompt and prefix tuning) and their papers are described in
peft_methods.py, which builds their peft configurations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig, Recipe, validate
from loraclf.utils.errors import UserError, did_you_mean

if TYPE_CHECKING:  # torch is only needed once a model exists; the CLI checks recipes before importing it
    from torch import nn


@dataclass(frozen=True)
class Method:
    """One adaptation method.

    Attributes:
        name: The value of ``adapter.method`` / ``--method``.
        summary: One line for ``--help`` and listings.
        source: Paper or library the method comes from.
        apply: ``(model, spec) -> model`` making exactly the method's parameters trainable (may wrap the model).
        param_kind: Parameter name → breakdown kind (e.g. ``"lora"``), or None when not the method's own.
        merges: Whether the trained update folds into the frozen weights for prediction and export.
        per_layer: Whether ``adapter.layer_ranks``/``adapter.layers`` apply.
        check: ``(spec) -> None`` raising UserError for settings the method cannot use.
        after_step: Optional ``(model, step) -> None`` run after every optimizer step.
        extra_loss: Optional ``(model) -> scalar tensor`` added to the training loss.
        prepare: Optional ``(model, total_steps) -> None`` run once before the first step.
        final_state: Optional ``(model) -> dict`` recorded in run.json as ``method_state`` after training.
        checkpoint_state: Optional ``(model) -> dict`` of tensors and plain values a checkpoint keeps beside the
            weights, so that ``--resume`` continues exactly (AdaLoRA's importance averages and rank pattern).
        restore_state: Optional ``(model, state) -> None`` putting ``checkpoint_state``'s dict back on resume.
        plain: False when the trained model stays a peft wrapper (prompt/prefix tuning: the virtual tokens are
            inputs, nothing to merge), so the int8 ONNX graph and ``export`` cannot represent it.
    """

    name: str
    summary: str
    source: str
    apply: Callable[[nn.Module, AdapterConfig], nn.Module]
    param_kind: Callable[[str], str | None]
    merges: bool = False
    per_layer: bool = False
    check: Callable[[AdapterConfig], None] | None = None
    after_step: Callable[[nn.Module, int], None] | None = None
    extra_loss: Callable[[nn.Module], object] | None = None
    prepare: Callable[[nn.Module, int], None] | None = None
    plain: bool = (
        True  # the trained model is a plain transformers model (after merging): int8 ONNX and export
    )
    final_state: Callable[[nn.Module], dict] | None = None
    checkpoint_state: Callable[[nn.Module], dict] | None = None
    restore_state: Callable[[nn.Module, dict], None] | None = None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (a name may be registered once)."""
    if method.name in METHODS:
        raise ValueError(f"adaptation method '{method.name}' is registered twice")
    METHODS[method.name] = method
    return method


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


def check_spec(spec: AdapterConfig) -> Method:
    """The method of ``spec``, after checking the settings that only some methods accept."""
    method = get_method(spec.method)
    if not method.per_layer and (spec.layer_ranks or spec.layers):
        raise UserError(
            f"adapter.layer_ranks/layers apply to layer-wise adapter methods, but adapter.method is '{spec.method}'"
        )
    if method.check is not None:
        method.check(spec)
    return method


def apply_adapters(model: nn.Module, spec: AdapterConfig) -> nn.Module:
    """Make exactly the recipe's parameters trainable (see :class:`Method`); returns the model to train."""
    return check_spec(spec).apply(model, spec)


# --- the baselines: requires_grad switches, no wrapper ------------------------------------------------------------


def _freeze_except(model: nn.Module, spec: AdapterConfig, everything: bool) -> nn.Module:
    from loraclf.modeling.backbones import head_module_name

    head = head_module_name(model)
    for name, p in model.named_parameters():
        in_head = name.startswith(head + ".")
        is_bias = name.endswith("bias")
        p.requires_grad_(everything or in_head or (spec.bias == "all" and is_bias))
    return model


def _no_lora_only(spec: AdapterConfig) -> None:
    if spec.bias == "lora_only":
        raise UserError(
            f"adapter.bias lora_only needs a LoRA-family adapter.method (got '{spec.method}'); use none or all"
        )


register(
    Method(
        name="head",
        summary="feature extraction: the classification head trains, the backbone stays frozen",
        source="baseline",
        apply=lambda model, spec: _freeze_except(model, spec, everything=False),
        param_kind=lambda name: None,
        check=_no_lora_only,
    )
)
register(
    Method(
        name="full",
        summary="full fine-tuning: every parameter trains",
        source="baseline",
        apply=lambda model, spec: _freeze_except(model, spec, everything=True),
        param_kind=lambda name: None,
        check=_no_lora_only,
    )
)


# --- LoRA ---------------------------------------------------------------------------------------------------------


def _is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _peft(build: Callable) -> Callable[[nn.Module, AdapterConfig], nn.Module]:
    """apply() of a peft method: ``build(model, spec, meta)`` gives its peft config, peft wraps the model."""

    def apply(model: nn.Module, spec: AdapterConfig) -> nn.Module:
        from peft import get_peft_model

        from loraclf.modeling.peft_methods import after_build

        return after_build(get_peft_model(model, build(model, spec, _is_meta(model))), spec)

    return apply


def _lora_family(dora: bool) -> Callable:
    def build(model, spec, meta):
        from loraclf.modeling.peft_methods import lora_family

        return lora_family(model, spec, dora, meta)

    return build


def _kind(name: str) -> str | None:
    from loraclf.modeling.peft_methods import param_kind

    return param_kind(name)


def _lora_kind(name: str) -> str | None:
    parts = name.split(".")
    return "lora" if "lora_A" in parts or "lora_B" in parts else None


def _lora_checks(spec: AdapterConfig) -> None:
    from loraclf.modeling.peft_methods import check_init

    if spec.targets is not None and not spec.targets:
        raise UserError("adapter.targets (--targets) is empty; name at least one module or leave it null")
    check_init(spec)


register(
    Method(
        name="lora",
        summary="LoRA: low-rank updates B·A of the targeted matrices, scaled by alpha/r",
        source="Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models (peft LoraConfig)",
        apply=_peft(_lora_family(dora=False)),
        param_kind=_lora_kind,
        merges=True,
        per_layer=True,
        check=_lora_checks,
    )
)


# --- the other peft methods (configs in peft_methods.py) -------------------------------------------------------------

_LORA_ONLY_BIAS = ("lora", "dora", "vera", "adalora")


def _checks(spec: AdapterConfig) -> None:
    """Refuse LoRA-only settings on the other methods, and module targets where nothing is targeted."""
    if spec.method not in ("lora", "dora") and (spec.rslora or spec.init is not True):
        raise UserError(
            f"adapter.rslora/adapter.init apply to lora and dora, but adapter.method is '{spec.method}'"
        )
    if spec.bias == "lora_only" and spec.method not in _LORA_ONLY_BIAS:
        raise UserError(
            f"adapter.bias lora_only needs one of {', '.join(_LORA_ONLY_BIAS)} (got '{spec.method}'); use none or all"
        )
    if spec.targets is not None and spec.method in ("prompt", "prefix", "bitfit"):
        raise UserError(
            f"adapter.targets (--targets): adapter.method {spec.method} adapts no modules; drop --targets"
        )
    if spec.targets is not None and not spec.targets:
        raise UserError("adapter.targets (--targets) is empty; name at least one module or leave it null")
    if spec.method == "dora":
        _lora_checks(spec)


def _config(fn_name: str, *args) -> Callable:
    def build(model, spec, meta):
        from loraclf.modeling import peft_methods

        return getattr(peft_methods, fn_name)(model, spec, *args)

    return build


def _adalora_hook(fn_name: str) -> Callable:
    def hook(*args):
        from loraclf.modeling import peft_methods

        return getattr(peft_methods, fn_name)(*args)

    return hook


def _bitfit(model: nn.Module, spec: AdapterConfig) -> nn.Module:
    from dataclasses import replace

    return _freeze_except(model, replace(spec, bias="all"), everything=False)


register(
    Method(
        name="dora",
        summary="DoRA: LoRA for the direction of each weight plus a trained magnitude per output",
        source="Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation (peft LoraConfig use_dora)",
        apply=_peft(_lora_family(dora=True)),
        param_kind=_kind,
        merges=True,
        per_layer=True,
        check=_checks,
    )
)
register(
    Method(
        name="vera",
        summary="VeRA: frozen random projections shared by all layers, two trained scaling vectors per matrix",
        source="Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation (peft VeraConfig)",
        apply=_peft(_config("vera_config")),
        param_kind=_kind,
        merges=True,
        check=_checks,
    )
)
register(
    Method(
        name="adalora",
        summary="AdaLoRA: SVD-shaped updates whose ranks are pruned to adapter.target_rank during training",
        source="Zhang et al. 2023, Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning (peft AdaLoraConfig)",
        apply=_peft(_config("adalora_config")),
        param_kind=_kind,
        merges=True,
        check=_checks,
        after_step=_adalora_hook("adalora_after_step"),
        extra_loss=_adalora_hook("adalora_orth_loss"),
        prepare=_adalora_hook("adalora_prepare"),
        final_state=_adalora_hook("adalora_final_state"),
        checkpoint_state=_adalora_hook("adalora_checkpoint_state"),
        restore_state=_adalora_hook("adalora_restore_state"),
    )
)
register(
    Method(
        name="ia3",
        summary="IA³: one learned vector rescaling each targeted matrix's output (feed-forward: its input)",
        source="Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context "
        "Learning (peft IA3Config)",
        apply=_peft(_config("ia3_config")),
        param_kind=_kind,
        merges=True,
        check=_checks,
    )
)
for _name, _summary, _source in (
    (
        "loha",
        "LoHa: Hadamard product of two low-rank products",
        "Hyeon-Woo et al. 2022, FedPara (peft LoHaConfig)",
    ),
    (
        "lokr",
        "LoKr: Kronecker product of a small full factor and a low-rank factor",
        "Yeh et al. 2024, LyCORIS (peft LoKrConfig)",
    ),
):
    register(
        Method(
            name=_name,
            summary=_summary,
            source=_source,
            apply=_peft(_config("lycoris_config", _name)),
            param_kind=_kind,
            merges=True,
            check=_checks,
        )
    )
register(
    Method(
        name="bitfit",
        summary="BitFit: every bias of the backbone and the head train, nothing else",
        source="Ben Zaken et al. 2022, BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked "
        "Language-models",
        apply=_bitfit,
        param_kind=lambda name: None,  # biases are counted as biases, per layer in the plan
        check=_checks,
    )
)
for _name, _prefix, _source in (
    ("prompt", False, "Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning"),
    ("prefix", True, "Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for Generation"),
):
    register(
        Method(
            name=_name,
            summary=f"{_name} tuning: adapter.virtual_tokens trained "
            + ("key/value prefixes in every layer" if _prefix else "input embeddings before the text"),
            source=_source + " (peft)",
            apply=_peft(_config("prompt_config", _prefix)),
            param_kind=_kind,
            plain=False,
            check=_checks,
        )
    )


def validate_recipe(recipe: Recipe) -> Recipe:
    """:func:`loraclf.config.validate` plus the adaptation method's own checks (unknown method, LoRA-only keys).

    Raises:
        UserError: naming the recipe key (and flag) at fault.
    """
    validate(recipe)
    check_spec(recipe.adapter)
    if recipe.train.loraplus_lr_ratio is not None and recipe.adapter.method not in ("lora", "dora"):
        raise UserError(
            f"train.loraplus_lr_ratio (LoRA+) needs adapter.method lora or dora, got '{recipe.adapter.method}'"
        )
    if recipe.adapter.method == "prefix" and recipe.train.gradient_checkpointing:
        # transformers' checkpointed layers drop the cache that holds the prefixes: training would ignore them.
        raise UserError(
            "train.gradient_checkpointing cannot be used with adapter.method prefix (checkpointed layers drop "
            "the key/value prefixes); set train.gradient_checkpointing=false or use adapter.method prompt"
        )
    return recipe
