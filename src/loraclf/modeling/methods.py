"""The registry of adaptation methods: what trains, how it is counted, whether it merges, and its training hooks.

Every method is one :class:`Method` entry. ``apply`` turns a freshly built classifier into the trainable model
(through peft for adapter methods, by switching ``requires_grad`` for the baselines), and it is the *same* function
for the exact plan on the meta device and for training, so the plan cannot drift from the trained model.
``param_kind`` names a trainable parameter's kind for the plan breakdown (``lora`` for LoRA's A and B matrices, for
instance); parameters it does not claim are counted as head, biases or other. ``merges`` says whether prediction
and export fold the method into the frozen weights (``merge_and_unload``). Methods that need more than a loss and an
optimizer step supply hooks: ``after_step(model, step)`` runs after each optimizer step (AdaLoRA's rank allocation
is one), and ``extra_loss(model)`` returns a term added to the training loss (AdaLoRA's orthogonality regulariser).

Adding a method is adding an entry here with :func:`register`; the recipe key ``adapter.method``, ``--method``, the
plan, training, prediction and export all read this table.

Sources: LoRA, Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (through Hugging Face peft);
feature extraction (head only) and full fine-tuning are the usual baselines.
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


def _apply_lora(model: nn.Module, spec: AdapterConfig) -> nn.Module:
    from peft import get_peft_model

    from loraclf.modeling.adapters import head_name, lora_config

    # loraclf's own pooled head is called "head"; peft's SEQ_CLS task type would look for "classifier"/"score".
    task_type = None if head_name(model) == "head" else "SEQ_CLS"
    config, _, _ = lora_config(model, spec, task_type)
    return get_peft_model(model, config)


def _lora_kind(name: str) -> str | None:
    parts = name.split(".")
    return "lora" if "lora_A" in parts or "lora_B" in parts else None


def _lora_targets(spec: AdapterConfig) -> None:
    if not spec.targets:
        raise UserError("adapter.targets (--targets) is empty; name at least one module")


register(
    Method(
        name="lora",
        summary="LoRA: low-rank updates B·A of the targeted matrices, scaled by alpha/r",
        source="Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models (peft LoraConfig)",
        apply=_apply_lora,
        param_kind=_lora_kind,
        merges=True,
        per_layer=True,
        check=_lora_targets,
    )
)


def validate_recipe(recipe: Recipe) -> Recipe:
    """:func:`loraclf.config.validate` plus the adaptation method's own checks (unknown method, LoRA-only keys).

    Raises:
        UserError: naming the recipe key (and flag) at fault.
    """
    validate(recipe)
    check_spec(recipe.adapter)
    return recipe
