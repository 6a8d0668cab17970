"""The baselines: the head alone (feature extraction), every parameter (full fine-tuning), and BitFit.

They switch ``requires_grad`` on the classifier and wrap nothing. BitFit: Ben Zaken et al. 2022, "BitFit: Simple
Parameter-efficient Fine-tuning for Transformer-based Masked Language-models" (every bias and the head train).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.modeling.methods import search
from loraclf.modeling.methods.base import Method

if TYPE_CHECKING:
    from torch import nn

# A baseline swaps into any recipe (``compare head lora.yaml``): the LoRA settings it has no use for are ignored.
_IGNORED = frozenset({"targets", "rslora", "init"})


def _freeze_except(model: nn.Module, spec: AdapterConfig, everything: bool) -> nn.Module:
    from loraclf.modeling.backbones import head_module_name

    head = head_module_name(model)
    for name, p in model.named_parameters():
        in_head = name.startswith(head + ".")
        is_bias = name.endswith("bias")
        p.requires_grad_(everything or in_head or (spec.bias == "all" and is_bias))
    return model


def _head(model: nn.Module, spec: AdapterConfig) -> nn.Module:
    return _freeze_except(model, spec, everything=False)


def _full(model: nn.Module, spec: AdapterConfig) -> nn.Module:
    return _freeze_except(model, spec, everything=True)


def _bitfit(model: nn.Module, spec: AdapterConfig) -> nn.Module:
    return _freeze_except(model, replace(spec, bias="all"), everything=False)


HEAD = Method(
    name="head",
    summary="feature extraction: the classification head trains, the backbone stays frozen",
    source="baseline",
    family="baseline",
    apply=_head,
    ignores=_IGNORED,
    candidates=lambda ctx, name: search.single(ctx, name, bias="none"),
)
FULL = Method(
    name="full",
    summary="full fine-tuning: every parameter trains",
    source="baseline",
    family="baseline",
    apply=_full,
    ignores=_IGNORED,
    preset=("budget=null", "train.lr=5e-5"),  # every weight moves: the pretrained features need a small step
    candidates=lambda ctx, name: search.single(ctx, name, bias="none"),
)
BITFIT = Method(
    name="bitfit",
    summary="BitFit: every bias of the backbone and the head train, nothing else",
    source="Ben Zaken et al. 2022, BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked "
    "Language-models",
    family="baseline",
    apply=_bitfit,  # its biases are counted as biases, per layer in the plan
    candidates=lambda ctx, name: search.single(ctx, name, with_biases=True),
)
