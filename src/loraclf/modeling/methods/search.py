"""How a method offers its candidates to ``plan --search --methods``: the strategies the families pick from.

A strategy gets a :class:`SearchContext`, whose ``count`` plans one configuration exactly (on the meta device, by
:func:`loraclf.modeling.plan.plan`), and returns the method's candidates that fit the budget. To keep the number of
builds small the ladders use that a method's count grows with its rank (and with its prompt length): per target set
(the method's default, the attention projections, every linear layer) they bisect for the largest value that fits.
The context is built by :mod:`loraclf.modeling.method_search`, which sits above the plan; this module imports nothing
of it, so the registry stays below the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

TARGET_SETS = (None, ["attention"], ["all-linear"])
TOKENS = (1, 2, 5, 10, 20, 30, 50, 100, 200)


@dataclass
class MethodCandidate:
    """One row of ``plan --search --methods``: the flags that reproduce it and its exact counts."""

    method: str
    flags: str
    trainable: int
    adapters: int  # parameters of the method itself (head and biases excluded; BitFit: its biases)


@dataclass
class SearchContext:
    """What a strategy may ask while searching one method under one budget.

    Attributes:
        budget: The trainable-parameter limit.
        top: Rows wanted for this method.
        ranks: The rank ladder (increasing).
        count: ``(with_biases=False, **adapter settings) -> (trainable, method parameters)``, or None when the
            method refuses that configuration for this model; ``with_biases`` counts biases as the method's own.
        closed_form: ``(top) -> plan.Candidate list`` of LoRA's closed-form search over targets, ranks, biases and schedules.
    """

    budget: int
    top: int
    ranks: Sequence[int]
    count: Callable[..., tuple[int, int] | None]
    closed_form: Callable[[int], list]


def largest_fitting(ladder: Sequence, count: Callable, budget: int):
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


def _per_target_set(ctx: SearchContext, name: str, fit: Callable) -> list[MethodCandidate]:
    out: list[MethodCandidate] = []
    for targets in TARGET_SETS:
        found = fit(targets)
        if found and all(c.trainable != found[1][0] for c in out):  # another target set, same modules
            rank = f" --rank {found[0]}" if found[0] is not None else ""
            out.append(MethodCandidate(name, f"--method {name}{_targets_flag(targets)}{rank}", *found[1]))
    return out


def by_rank(ctx: SearchContext, name: str, ladder: Sequence[int] | None = None) -> list[MethodCandidate]:
    """Per target set, the largest rank of ``ladder`` (default: the context's ranks) that fits."""

    def fit(targets):
        return largest_fitting(
            ladder or ctx.ranks,
            lambda r: ctx.count(method=name, targets=targets, r=r, bias="none"),
            ctx.budget,
        )

    return _per_target_set(ctx, name, fit)


def per_target_set(ctx: SearchContext, name: str) -> list[MethodCandidate]:
    """Rank-less methods (IA³): one candidate per target set that fits."""

    def fit(targets):
        got = ctx.count(method=name, targets=targets, bias="none")
        return (None, got) if got and got[0] <= ctx.budget else None

    return _per_target_set(ctx, name, fit)


def by_tokens(ctx: SearchContext, name: str) -> list[MethodCandidate]:
    """Virtual-token methods: the most virtual tokens that fit."""
    found = largest_fitting(
        TOKENS, lambda n: ctx.count(method=name, targets=None, virtual_tokens=n), ctx.budget
    )
    return [MethodCandidate(name, f"--method {name} --virtual-tokens {found[0]}", *found[1])] if found else []


def single(ctx: SearchContext, name: str, with_biases: bool = False, **adapter) -> list[MethodCandidate]:
    """Methods with nothing to size (the baselines, BitFit): the one configuration, if it fits."""
    got = ctx.count(method=name, targets=None, with_biases=with_biases, **adapter)
    return [MethodCandidate(name, f"--method {name}", *got)] if got and got[0] <= ctx.budget else []


def closed_form(ctx: SearchContext, name: str) -> list[MethodCandidate]:
    """LoRA: the closed-form search over targets, ranks, biases and layer schedules."""
    return [
        MethodCandidate(name, f"--method {name} {c.flags()}", c.trainable, c.adapters)
        for c in ctx.closed_form(ctx.top)
    ]
