"""HRA (Yuan et al. 2024, "Bridging The Gap between Low-rank and Orthogonal Adaptation via Householder Reflection
Adaptation") through peft's HRAConfig.

A targeted weight ``W (d_out × d_in)`` becomes ``W · H_1 ⋯ H_r``, a chain of ``r`` Householder reflections
``H_i = I − 2 u_i u_iᵀ / ‖u_i‖²`` (an orthogonal transform of the input); the ``r`` vectors ``u_i`` of length
``d_in`` train, so one adapted matrix costs exactly ``r · d_in`` (:func:`count`). peft starts from the identity by
pairing equal reflections, which needs an even ``r``: odd ranks are refused. The chain folds into ``W``
(``merges``). peft adapts ``nn.Linear`` only, not GPT-2's Conv1D.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.modeling.methods import _peft, search
from loraclf.modeling.methods.base import Method, describe_ranked
from loraclf.utils.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from loraclf.modeling.adapters import Target


def count(targets: list[Target], r: int) -> int:
    """HRA's trainable parameters on ``targets`` at rank ``r``: ``sum of r · d_in`` (head and biases excluded)."""
    return sum(r * t.d_in for t in targets)


def _check(spec: AdapterConfig) -> None:
    if spec.r % 2:
        raise UserError(
            f"adapter.r (--rank): HRA needs an even rank (it starts from the identity by pairing reflections), "
            f"got {spec.r}; use {spec.r + 1}"
        )


def _config(model: nn.Module, spec: AdapterConfig, meta: bool):
    from peft import HRAConfig

    return HRAConfig(
        **_peft.common_kwargs(model),
        r=spec.r,
        target_modules=_peft.names(_peft.resolved_targets(model, spec)),
        bias="hra_only" if spec.bias == "lora_only" else spec.bias,
    )


HRA = Method(
    name="hra",
    summary="HRA: a chain of r trained Householder reflections multiplies each targeted matrix (orthogonal)",
    source="Yuan et al. 2024, Bridging The Gap between Low-rank and Orthogonal Adaptation via Householder "
    "Reflection Adaptation (peft HRAConfig)",
    family="hra",
    build=_config,
    kinds={"hra_u": "hra vectors"},
    accepts=frozenset({"targets", "r", "bias_lora_only"}),
    merges=True,
    conv1d=False,
    default_targets=_peft.peft_default_targets("HRA"),
    check=_check,
    describe=describe_ranked,
    candidates=lambda ctx, name: search.by_rank(ctx, name, [r for r in ctx.ranks if r % 2 == 0]),
    smallest={"r": 2},
)
