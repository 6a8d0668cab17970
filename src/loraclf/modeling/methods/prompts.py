"""Prompt and prefix tuning through peft: trained virtual tokens instead of weight updates.

* **Prompt tuning** (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"):
  ``virtual_tokens × hidden`` input embeddings prepended to every text.
* **Prefix tuning** (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"): key/value
  prefixes in every layer, ``virtual_tokens × layers × 2 × hidden``.

The virtual tokens are inputs of a peft wrapper, not weights: nothing merges, and the trained model is not a plain
transformers model (no int8 ONNX graph, no export). Their tokens take position slots before the text.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.modeling.methods import _peft, search
from loraclf.modeling.methods.base import Method, describe_tokens
from loraclf.utils.errors import UserError

if TYPE_CHECKING:
    from torch import nn


def _check_prefix_model(model: nn.Module) -> None:
    # peft hands the prefixes to the wrapped model as `past_key_values`; transformers 5 renamed that argument
    # `cache` and peft only finds it by signature, so the prefixes go through loraclf's own head (which takes
    # both names) into a backbone whose attention reads a cache. HF's own classification heads take neither.
    if _peft.head_name(model) != "head":
        raise UserError(
            f"adapter.method prefix: {type(model).__name__}'s own head cannot take peft's key/value prefixes "
            "in this transformers; set model.head=mlp or model.head=linear"
        )
    if "cache" not in inspect.signature(model.backbone.forward).parameters:
        raise UserError(
            f"adapter.method prefix: {type(model.backbone).__name__} has no key/value cache to hold the "
            "prefixes; use adapter.method prompt"
        )


def _builder(prefix: bool):
    def build(model: nn.Module, spec: AdapterConfig, meta: bool):
        from peft import PrefixTuningConfig, PromptTuningConfig

        if prefix:
            _check_prefix_model(model)
        cls = PrefixTuningConfig if prefix else PromptTuningConfig
        return cls(
            task_type="SEQ_CLS",
            num_virtual_tokens=spec.virtual_tokens,
            modules_to_save=[_peft.head_name(model)],
        )

    return build


def _method(name: str, summary: str, source: str, prefix: bool, **extra) -> Method:
    return Method(
        name=name,
        summary=summary,
        source=source,
        family="prompt",
        build=_builder(prefix),
        kinds={"prompt_encoder": "virtual tokens"},
        accepts=frozenset({"virtual_tokens"}),
        virtual_tokens=True,
        plain=False,
        own_bias=True,
        describe=describe_tokens,
        candidates=search.by_tokens,
        smallest={"virtual_tokens": 1},
        **extra,
    )


PROMPT = _method(
    "prompt",
    "prompt tuning: adapter.virtual_tokens trained input embeddings before the text",
    "Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning (peft)",
    prefix=False,
)
PREFIX = _method(
    "prefix",
    "prefix tuning: adapter.virtual_tokens trained key/value prefixes in every layer",
    "Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for Generation (peft)",
    prefix=True,
    supports=frozenset(),
    # transformers' checkpointed layers drop the cache that holds the prefixes: training would ignore them.
    why_not={
        "gradient_checkpointing": "checkpointed layers drop the key/value prefixes; set "
        "train.gradient_checkpointing=false or use adapter.method prompt"
    },
)
