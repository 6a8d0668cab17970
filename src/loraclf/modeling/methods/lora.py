"""LoRA and DoRA through peft's LoraConfig, with rsLoRA scaling, peft's initialisations and per-layer ranks.

* **LoRA** (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen ``W (d_out × d_in)``
  plus ``(alpha / r) · B·A``; ``r · (d_in + d_out)`` trained per adapted matrix.
* **DoRA** (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"): LoRA's ``B·A`` for the direction plus a
  magnitude vector of ``d_out``; ``r · (d_in + d_out) + d_out``.
* **rsLoRA** (Kalajievo 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA"): LoRA scaled by
  ``alpha / sqrt(r)``; same count as LoRA. **PiSSA** / **OLoRA** initialise A and B from the weight's principal
  singular vectors / a QR decomposition (and subtract them from ``W``): same shapes, so the plan builds them with
  the default initialisation on the meta device, where there is no weight to decompose.

LoRA's default targets are loraclf's query/value projections (:data:`QV_TARGETS`), so existing recipes keep their
counts; the exact rank pattern comes from :func:`loraclf.modeling.adapters.lora_config`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.modeling.methods import _peft, search
from loraclf.modeling.methods.base import Method, describe_lora
from loraclf.utils.errors import UserError

if TYPE_CHECKING:
    from torch import nn

QV_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "camembert": ["query", "value"],
    "mpnet": ["q", "v"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
    "distilbert": ["q_lin", "v_lin"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
}
PLANNED_AS_DEFAULT_INIT = (
    "pissa",
    "olora",
    "orthogonal",
)  # same shapes as the default init; need real weights
DATA_INITS = ("eva", "corda", "loftq", "mica")  # need calibration data or extra configs loraclf does not take
_ACCEPTS = frozenset({"targets", "r", "alpha", "dropout", "layer_ranks", "rslora", "init", "bias_lora_only"})


def qv_targets(model: nn.Module) -> list[str]:
    """loraclf's query/value defaults for this model type (``attention`` for types it does not know)."""
    return list(QV_TARGETS.get(_peft.model_type(model), ["attention"]))


def check_init(spec: AdapterConfig) -> None:
    """Refuse initialisations the plan cannot build or loraclf cannot feed."""
    init = spec.init
    if isinstance(init, bool):
        return
    ok = (
        init == "gaussian"
        or init in PLANNED_AS_DEFAULT_INIT
        or (init.startswith("pissa_niter_") and init.removeprefix("pissa_niter_").isdigit())
    )
    if init in DATA_INITS:
        raise UserError(
            f"adapter.init: '{init}' needs calibration data or its own config; loraclf cannot plan it"
        )
    if not ok:
        raise UserError(
            f"adapter.init: '{init}' is not one of true, false, gaussian, pissa, pissa_niter_N, olora, orthogonal"
        )


def _builder(dora: bool):
    def build(model: nn.Module, spec: AdapterConfig, meta: bool):
        """LoraConfig for LoRA/DoRA with rsLoRA scaling and peft's initialisations (default init when planning)."""
        from loraclf.modeling.adapters import lora_config

        init = spec.init
        if meta and isinstance(init, str) and init.startswith(PLANNED_AS_DEFAULT_INIT):
            init = True  # identical parameter shapes; the decomposition itself needs real weights
        if spec.targets is None:
            spec = dataclasses.replace(spec, targets=qv_targets(model))
        extra = {"use_dora": dora, "use_rslora": spec.rslora, "init_lora_weights": init}
        config, _, _ = lora_config(model, spec, _peft.task_type(model), **extra)
        return config

    return build


LORA = Method(
    name="lora",
    summary="LoRA: low-rank updates B·A of the targeted matrices, scaled by alpha/r",
    source="Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models (peft LoraConfig)",
    family="lora",
    build=_builder(dora=False),
    kinds={"lora_A": "lora", "lora_B": "lora"},
    accepts=_ACCEPTS,
    supports=frozenset({"loraplus", "frozen_cache", "gradient_checkpointing"}),
    merges=True,
    default_targets=qv_targets,
    check=check_init,
    describe=describe_lora,
    candidates=search.closed_form,
)
DORA = Method(
    name="dora",
    summary="DoRA: LoRA for the direction of each weight plus a trained magnitude per output",
    source="Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation (peft LoraConfig use_dora)",
    family="lora",
    build=_builder(dora=True),
    kinds={"lora_magnitude_vector": "dora magnitude", "lora_A": "lora A", "lora_B": "lora B"},
    accepts=_ACCEPTS,
    supports=frozenset({"loraplus", "gradient_checkpointing"}),
    merges=True,
    default_targets=qv_targets,
    check=check_init,
    describe=describe_lora,
)
