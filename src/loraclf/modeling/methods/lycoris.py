"""LoHa and LoKr, the LyCORIS family, through peft's LoHaConfig and LoKrConfig.

* **LoHa** (Hyeon-Woo et al. 2022, "FedPara"): the Hadamard product of two rank-r products,
  ``2 · r · (d_in + d_out)`` per adapted matrix.
* **LoKr** (Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model
  Evaluation"): a Kronecker product of a small full factor and a rank-r factor.

peft cannot adapt GPT-2's Conv1D layers with either (``conv1d=False``: refused in one line at plan time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.modeling.methods import _peft
from loraclf.modeling.methods.base import Method, describe_ranked

if TYPE_CHECKING:
    from torch import nn


def _builder(loha: bool):
    def build(model: nn.Module, spec: AdapterConfig, meta: bool):
        from peft import LoHaConfig, LoKrConfig

        cls = LoHaConfig if loha else LoKrConfig
        return cls(
            **_peft.common_kwargs(model),
            r=spec.r,
            alpha=float(spec.alpha if spec.alpha is not None else 2 * spec.r),
            module_dropout=spec.dropout,
            target_modules=_peft.names(_peft.resolved_targets(model, spec)),
        )

    return build


_LOHA_KINDS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
_LOKR_KINDS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")

LOHA = Method(
    name="loha",
    summary="LoHa: Hadamard product of two low-rank products",
    source="Hyeon-Woo et al. 2022, FedPara (peft LoHaConfig)",
    family="lycoris",
    build=_builder(loha=True),
    kinds=dict.fromkeys(_LOHA_KINDS, "loha factor"),
    accepts=frozenset({"targets", "r", "alpha", "dropout"}),
    merges=True,
    conv1d=False,
    own_bias=True,
    default_targets=_peft.peft_default_targets("LOHA"),
    describe=describe_ranked,
)
LOKR = Method(
    name="lokr",
    summary="LoKr: Kronecker product of a small full factor and a low-rank factor",
    source="Yeh et al. 2024, LyCORIS (peft LoKrConfig)",
    family="lycoris",
    build=_builder(loha=False),
    kinds=dict.fromkeys(_LOKR_KINDS, "lokr factor"),
    accepts=frozenset({"targets", "r", "alpha", "dropout"}),
    merges=True,
    conv1d=False,
    own_bias=True,
    default_targets=_peft.peft_default_targets("LOKR"),
    describe=describe_ranked,
)
