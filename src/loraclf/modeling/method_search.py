"""``plan --search --methods …``: the strongest configuration of each adaptation method under one budget.

LoRA keeps its closed-form search over targets, ranks, biases and layer schedules (plan.search). Every other method
is counted by :func:`loraclf.modeling.plan.plan` itself, on the meta device, so each candidate's count is exact by
construction; to keep the number of builds small the search uses that a method's count grows with its rank (and
with prompt length): per target set (the method's default, the attention projections, every linear layer) it
bisects the rank ladder for the largest rank that fits. Rank-less methods (IA³, BitFit) have one candidate per
target set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from loraclf.config import VIRTUAL_TOKEN_METHODS, Recipe
from loraclf.modeling.methods import get_method
from loraclf.modeling.plan import RANKS, plan, search
from loraclf.utils.errors import UserError

RANKED = ("dora", "vera", "adalora", "loha", "lokr")
TARGET_SETS = (None, ["attention"], ["all-linear"])
TOKENS = (1, 2, 5, 10, 20, 30, 50, 100, 200)


@dataclass
class MethodCandidate:
    method: str
    flags: str
    trainable: int
    adapters: int  # parameters of the method itself (head and biases excluded)


def _count(recipe: Recipe, num_labels: int, **adapter) -> tuple[int, int] | None:
    r = dataclasses.replace(recipe, adapter=dataclasses.replace(recipe.adapter, **adapter), budget=None)
    try:
        p = plan(r, num_labels)
    except UserError:
        return None  # the method cannot adapt these modules of this architecture
    return p.trainable, p.adapters + (p.biases if adapter.get("method") == "bitfit" else 0)


def _largest_fitting(ladder, count, budget):
    """Bisect an increasing ladder for the largest value whose count fits; returns (value, counts) or None."""
    lo, hi, best = 0, len(ladder) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        got = count(ladder[mid])
        if got is not None and got[0] <= budget:
            best, lo = (ladder[mid], got), mid + 1
        else:
            hi = mid - 1
    return best


def _targets_flag(targets) -> str:
    return f" --targets {','.join(targets)}" if targets else ""


def _method_candidates(recipe: Recipe, num_labels: int, budget: int, method: str) -> list[MethodCandidate]:
    out = []
    if method == "bitfit":
        got = _count(recipe, num_labels, method="bitfit", targets=None)
        if got and got[0] <= budget:
            out.append(MethodCandidate("bitfit", "--method bitfit", *got))
    elif method in VIRTUAL_TOKEN_METHODS:
        found = _largest_fitting(
            TOKENS,
            lambda n: _count(recipe, num_labels, method=method, targets=None, virtual_tokens=n),
            budget,
        )
        if found:
            out.append(MethodCandidate(method, f"--method {method} --virtual-tokens {found[0]}", *found[1]))
    else:
        for targets in TARGET_SETS:
            if method == "ia3":
                got = _count(recipe, num_labels, method=method, targets=targets, bias="none")
                found = (None, got) if got and got[0] <= budget else None
            else:
                found = _largest_fitting(
                    RANKS,
                    lambda r, t=targets: _count(
                        recipe, num_labels, method=method, targets=t, r=r, bias="none"
                    ),
                    budget,
                )
            if found and all(c.trainable != found[1][0] for c in out):  # another target set, same modules
                rank = f" --rank {found[0]}" if found[0] is not None else ""
                out.append(
                    MethodCandidate(method, f"--method {method}{_targets_flag(targets)}{rank}", *found[1])
                )
    return out


def why_none(recipe: Recipe, num_labels: int, budget: int, method: str) -> str:
    """Why ``method`` has no configuration within ``budget``: its one-line refusal, or its smallest count."""
    smallest = {"virtual_tokens": 1} if method in VIRTUAL_TOKEN_METHODS else {"r": 1}
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
    """
    for m in methods:
        get_method(m)  # unknown names fail here, with a suggestion
    rows: list[MethodCandidate] = []
    per_method = max(1, top // max(1, len(methods)))
    for method in methods:
        if method == "lora":
            found = [
                MethodCandidate("lora", f"--method lora {c.flags()}", c.trainable, c.adapters)
                for c in search(recipe, num_labels, budget, top=per_method)
            ]
        elif method in ("head", "full"):
            got = _count(recipe, num_labels, method=method, targets=None, bias="none")
            found = (
                [MethodCandidate(method, f"--method {method}", got[0], 0)] if got and got[0] <= budget else []
            )
        else:
            found = _method_candidates(recipe, num_labels, budget, method)
        found.sort(key=lambda c: (-c.adapters, c.trainable, c.flags))
        rows += found[:per_method]
    rows.sort(key=lambda c: (-c.adapters, c.trainable, c.flags))
    return rows
