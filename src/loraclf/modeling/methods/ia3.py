"""IA³ (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning") through peft's IA3Config: one learned vector rescaling each targeted matrix's output (``d_out``) or, for
feed-forward matrices, its input (``d_in``). It has no rank: the search offers one candidate per target set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.modeling.methods import _peft, search
from loraclf.modeling.methods.base import Method, describe_ranked

if TYPE_CHECKING:
    from torch import nn


def _config(model: nn.Module, spec: AdapterConfig, meta: bool):
    from peft import IA3Config
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF

    resolved = _peft.resolved_targets(model, spec)
    targets = _peft.names(resolved)
    ff_keys = FF.get(_peft.model_type(model), [])
    # Feed-forward matrices are rescaled on their input (peft's rule); peft needs them to be a subset of targets.
    feedforward = [n for n in targets if any(n == k or n.endswith("." + k) for k in ff_keys)]
    return IA3Config(
        **_peft.common_kwargs(model),
        target_modules=targets,
        feedforward_modules=feedforward,
        fan_in_fan_out=_peft.conv1d(resolved),
    )


IA3 = Method(
    name="ia3",
    summary="IA³: one learned vector rescaling each targeted matrix's output (feed-forward: its input)",
    source="Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context "
    "Learning (peft IA3Config)",
    family="ia3",
    build=_config,
    kinds={"ia3_l": "ia3 vector"},
    accepts=frozenset({"targets"}),
    merges=True,
    own_bias=True,
    default_targets=_peft.peft_default_targets("IA3"),
    describe=describe_ranked,
    candidates=search.per_target_set,
)
