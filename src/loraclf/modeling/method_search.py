"""``plan --search --methods …``: the strongest configuration of each adaptation method under one budget.

Each method sizes itself (its ``candidates`` strategy, :mod:`loraclf.modeling.methods.search`): LoRA keeps its
closed-form search over targets, ranks, biases and layer schedules (:func:`loraclf.modeling.plan.search`); every
other method is counted by :func:`loraclf.modeling.plan.plan` itself, on the meta device, so each candidate's count
is exact by construction. This module gives the strategies that count and collects their rows.
"""

from __future__ import annotations

import dataclasses

from loraclf.config import Recipe
from loraclf.modeling.methods import get_method
from loraclf.modeling.methods.search import MethodCandidate, SearchContext
from loraclf.modeling.plan import RANKS, plan, search
from loraclf.utils.errors import UserError

__all__ = ["MethodCandidate", "search_methods", "why_none"]


def _counter(recipe: Recipe, num_labels: int):
    def count(with_biases: bool = False, **adapter) -> tuple[int, int] | None:
        r = dataclasses.replace(recipe, adapter=dataclasses.replace(recipe.adapter, **adapter), budget=None)
        try:
            p = plan(r, num_labels)
        except UserError:
            return None  # the method cannot adapt these modules of this architecture
        return p.trainable, p.adapters + (p.biases if with_biases else 0)

    return count


def why_none(recipe: Recipe, num_labels: int, budget: int, method: str) -> str:
    """Why ``method`` has no configuration within ``budget``: its one-line refusal, or its smallest count."""
    smallest = dict(get_method(method).smallest)
    r = dataclasses.replace(
        recipe,
        adapter=dataclasses.replace(
            recipe.adapter,
            method=method,
            targets=None,
            bias="none",
            layer_ranks=None,
            layers=None,
            **smallest,
        ),
        budget=None,
    )
    try:
        p = plan(r, num_labels)
    except UserError as e:
        return str(e)
    return f"its smallest configuration needs {p.trainable:,} trainable parameters (budget {budget:,})"


def search_methods(
    recipe: Recipe, num_labels: int, budget: int, methods: list[str], top: int = 12
) -> list[MethodCandidate]:
    """The best configurations of each of ``methods`` under ``budget``, most parameters spent on the method first.

    Each method gets at least one row (when anything of it fits), ``top`` rows in all at most per method.

    Raises:
        UserError: a name is not a registered method.
    """
    chosen = [get_method(m) for m in methods]  # unknown names fail here, with a suggestion
    per_method = max(1, top // max(1, len(methods)))
    ctx = SearchContext(
        budget=budget,
        top=per_method,
        ranks=RANKS,
        count=_counter(recipe, num_labels),
        closed_form=lambda n: search(recipe, num_labels, budget, top=n),
    )
    rows: list[MethodCandidate] = []
    for method in chosen:
        found = method.candidates(ctx, method.name)
        found.sort(key=lambda c: (-c.adapters, c.trainable, c.flags))
        rows += found[:per_method]
    rows.sort(key=lambda c: (-c.adapters, c.trainable, c.flags))
    return rows
