"""VeRA (Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation") through peft's VeraConfig.

One pair of frozen random projections is shared by all layers (buffers, not trained); each adapted matrix trains two
scaling vectors: ``d_out + r`` parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.modeling.methods import _peft
from loraclf.modeling.methods.base import Method, describe_ranked

if TYPE_CHECKING:
    from torch import nn


def _config(model: nn.Module, spec: AdapterConfig, meta: bool):
    from peft import VeraConfig

    targets = _peft.resolved_targets(model, spec)
    return VeraConfig(
        **_peft.common_kwargs(model),
        r=spec.r,
        target_modules=_peft.names(targets),
        vera_dropout=spec.dropout,
        bias="vera_only" if spec.bias == "lora_only" else spec.bias,
        fan_in_fan_out=_peft.conv1d(targets),
        projection_prng_key=0,  # the shared projections are regenerated from this key when a run is loaded
    )


VERA = Method(
    name="vera",
    summary="VeRA: frozen random projections shared by all layers, two trained scaling vectors per matrix",
    source="Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation (peft VeraConfig)",
    family="vera",
    build=_config,
    kinds={
        "vera_lambda_b": "vera lambda_b",
        "vera_lambda_d": "vera lambda_d",
        "vera_A": "vera shared A",
        "vera_B": "vera shared B",
    },
    accepts=frozenset({"targets", "r", "dropout", "bias_lora_only"}),
    merges=True,
    default_targets=_peft.peft_default_targets("VERA"),
    describe=describe_ranked,
)
