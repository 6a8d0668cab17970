"""Plumbing every peft-built method shares: task type, targets, building, settling what trains, merging.

Imports of torch, peft and the adapter helpers happen inside the functions, so the registry stays torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.utils.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from loraclf.modeling.adapters import Target


def task_type(model: nn.Module) -> str | None:
    """peft's task type: none for loraclf's own pooled head (called ``head``; SEQ_CLS would look for
    ``classifier``/``score``), SEQ_CLS for a transformers classification head."""
    return None if head_name(model) == "head" else "SEQ_CLS"


def head_name(model: nn.Module) -> str:
    from loraclf.modeling.backbones import head_module_name

    return head_module_name(model)


def common_kwargs(model: nn.Module) -> dict:
    """The keyword arguments of every peft config loraclf builds: the task type and the trained head."""
    return {"task_type": task_type(model), "modules_to_save": [head_name(model)]}


def model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def peft_default_targets(table: str) -> Callable[[nn.Module], list[str]]:
    """``default_targets`` reading peft's ``TRANSFORMERS_MODELS_TO_<table>_TARGET_MODULES_MAPPING``."""

    def default_targets(model: nn.Module) -> list[str]:
        from peft.utils import constants

        mapping = getattr(constants, f"TRANSFORMERS_MODELS_TO_{table}_TARGET_MODULES_MAPPING")
        kind = model_type(model)
        if kind not in mapping:
            raise UserError(
                f"--targets: peft has no default {table.lower()} modules for model type '{kind}'; "
                "name them with --targets"
            )
        return list(mapping[kind])

    return default_targets


def resolved_targets(model: nn.Module, spec: AdapterConfig) -> list[Target]:
    """The targeted modules: the recipe's names, or the method's default for this architecture.

    Raises:
        UserError: a name matches nothing, or the method cannot adapt GPT-2's Conv1D layers.
    """
    from loraclf.modeling.adapters import select_targets
    from loraclf.modeling.methods.base import get_method, names_with

    method = get_method(spec.method)
    if spec.targets is None:
        spec = dataclasses.replace(spec, targets=method.default_targets(model))
    targets = select_targets(model, spec)
    if not method.conv1d and any(t.conv1d for t in targets):
        ok = names_with(lambda m: m.conv1d and "targets" in m.accepts)
        raise UserError(
            f"adapter.method {method.name}: peft's {method.name} cannot adapt GPT-2's Conv1D layers "
            f"({targets[0].name.rsplit('.', 1)[-1]}); use {ok}"
        )
    return targets


def names(targets: list[Target]) -> list[str]:
    return [t.name for t in targets]


def conv1d(targets: list[Target]) -> bool:
    return any(t.conv1d for t in targets)


def merge(model: nn.Module) -> nn.Module:
    """Fold the trained method into the frozen weights and drop peft's wrappers (``merge_and_unload``).

    The trained head copies (peft's ``modules_to_save``) are put in place first: peft's VeRA, IA³, LoHa and LoKr
    unloading reads a ``weight`` from each wrapper it replaces, which loraclf's MLP head (a Sequential) has not.
    """
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, module.modules_to_save[module.active_adapter])
    return model.merge_and_unload()
