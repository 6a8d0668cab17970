"""The adaptation methods: one module per family, one :class:`Method` record per method, and the registry.

Every method is a :class:`Method` (see :mod:`.base` for its fields). ``apply`` turns a freshly built classifier
into the trainable model (through peft for adapter methods, by switching ``requires_grad`` for the baselines), and
it is the *same* function for the exact plan on the meta device and for training, so the plan cannot drift from
the trained model. The record also says what the method accepts and supports (keys, virtual tokens, merging, LoRA+,
the frozen-layer cache, gradient checkpointing), its default targets, how ``plan`` describes it and how
``plan --search --methods`` sizes it; the rest of loraclf asks the record and never tests a method's name.

Families: :mod:`.baselines` (head, full, BitFit), :mod:`.lora` (LoRA, DoRA), :mod:`.vera`, :mod:`.adalora`,
:mod:`.ia3`, :mod:`.lycoris` (LoHa, LoKr), :mod:`.hra`, :mod:`.prompts` (prompt and prefix tuning); shared peft
plumbing in :mod:`._peft`, search strategies in :mod:`.search`.

Adding a method:

1. Write ``methods/<family>.py``: a builder ``(model, spec, meta) -> peft config`` (use ``_peft.common_kwargs`` and
   ``_peft.resolved_targets``; import peft inside it, so this package stays torch-free), and a ``Method`` record
   with its ``kinds`` (parameter-name part → plan kind), ``accepts``, ``merges``, ``conv1d``, ``default_targets``,
   ``describe`` and ``candidates``.
2. Register it below: one ``register(<family>.<METHOD>)`` line.

The recipe key ``adapter.method``, ``--method``, the plan and its search, training, prediction, export and the
methods table (:func:`table_markdown`) read the registry; tests/test_methods.py runs every registered method through
plan == model, training, merging and save/load without an edit.
"""

from __future__ import annotations

from loraclf.modeling.methods import adalora, baselines, hra, ia3, lora, lycoris, prompts, vera
from loraclf.modeling.methods._peft import merge
from loraclf.modeling.methods.base import (
    CHECKED_KEYS,
    FEATURES,
    KEYS,
    METHODS,
    Method,
    all_methods,
    apply_adapters,
    check_spec,
    get_method,
    register,
    table_markdown,
    validate_recipe,
)

register(baselines.HEAD)
register(baselines.FULL)
register(lora.LORA)
register(lora.DORA)
register(vera.VERA)
register(adalora.ADALORA)
register(ia3.IA3)
register(lycoris.LOHA)
register(lycoris.LOKR)
register(baselines.BITFIT)
register(prompts.PROMPT)
register(prompts.PREFIX)
register(hra.HRA)

__all__ = [
    "CHECKED_KEYS",
    "FEATURES",
    "KEYS",
    "METHODS",
    "Method",
    "all_methods",
    "apply_adapters",
    "check_spec",
    "get_method",
    "merge",
    "register",
    "table_markdown",
    "validate_recipe",
]
