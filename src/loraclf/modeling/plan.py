"""Exact trainable-parameter plans, computed before any weight is loaded.

``plan()`` builds the classifier on PyTorch's ``meta`` device (shapes, no storage, no download), applies exactly the
adapter code that training uses, and counts. The count therefore *is* the count of the trained model, which a test
checks against real built models. The breakdown splits trainable parameters into

* adapters per layer: ``sum over adapted matrices of r_i · (d_in + d_out)``,
* biases: with ``bias=lora_only`` those of adapted matrices, with ``bias=all`` every bias outside the head,
* head: every parameter of the classification head (peft trains a copy of it through ``modules_to_save``, so peft's
  total counts the head twice; loraclf reports the same total as peft so numbers match a notebook's),
* other: whatever else trains (full fine-tuning).

``search()`` ranks configurations that fit a budget with a closed-form count over the model's module inventory (one
meta build, then arithmetic), preferring more parameters spent on adapters: more coverage and rank first.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from loraclf.config import AdapterConfig, Recipe
from loraclf.modeling.adapters import count_parameters, head_name, layer_of, linear_modules
from loraclf.modeling.backbones import build_model
from loraclf.modeling.methods import apply_adapters, check_spec
from loraclf.utils.errors import UserError


@dataclass
class Plan:
    """Trainable and total parameter counts of one recipe, with a breakdown."""

    model: str
    num_labels: int
    method: str
    trainable: int
    total: int
    adapters_per_layer: dict[int, int] = field(default_factory=dict)
    adapter_modules: dict[str, int] = field(default_factory=dict)  # short module name → rank(s) summary
    biases: int = 0
    head: int = 0
    other: int = 0
    budget: int | None = None
    kinds_per_layer: dict[int, dict[str, int]] = field(
        default_factory=dict
    )  # layer (-1: none) → kind → count

    @property
    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for per_kind in self.kinds_per_layer.values():
            for kind, n in per_kind.items():
                out[kind] += n
        return dict(sorted(out.items()))

    @property
    def adapters(self) -> int:
        return sum(self.adapters_per_layer.values())

    @property
    def ratio(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "num_labels": self.num_labels,
            "method": self.method,
            "trainable": self.trainable,
            "total": self.total,
            "ratio": round(self.ratio, 6),
            "adapters": self.adapters,
            "adapters_per_layer": {str(k): v for k, v in sorted(self.adapters_per_layer.items())},
            "biases": self.biases,
            "head": self.head,
            "other": self.other,
            "budget": self.budget,
            "kinds": self.kinds,
            "kinds_per_layer": {
                str(k): dict(sorted(v.items())) for k, v in sorted(self.kinds_per_layer.items())
            },
            "fits": self.budget is None or self.trainable <= self.budget,
        }


def breakdown(model, name: str, num_labels: int, spec: AdapterConfig, budget: int | None) -> Plan:
    """Count a built (meta or real) model's parameters and split the trainable ones by kind."""
    trainable, total = count_parameters(model)
    head = head_name(model.get_base_model() if hasattr(model, "peft_config") else model)
    kind_of = check_spec(spec).param_kind
    per_layer: dict[int, int] = defaultdict(int)
    kinds: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    biases = head_n = other = 0
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        n = p.numel()
        parts = pname.split(".")
        layer = layer_of(pname) if layer_of(pname) is not None else -1
        kind = kind_of(pname)
        if kind is not None:
            per_layer[layer] += n
        elif head in parts[: parts.index(head) + 1] if head in parts else False:
            head_n += n
            kind = "head"
        elif pname.endswith("bias"):
            biases += n
            kind = "bias"
        else:
            other += n
            kind = "other"
        kinds[layer][kind] += n
    return Plan(
        name,
        num_labels,
        spec.method,
        trainable,
        total,
        dict(per_layer),
        {},
        biases,
        head_n,
        other,
        budget,
        {k: dict(v) for k, v in kinds.items()},
    )


def plan(recipe: Recipe, num_labels: int) -> Plan:
    """The exact parameter plan of a recipe, from the architecture config alone (meta device, no weights)."""
    model = build_model(recipe.model.name, num_labels, recipe.model, meta=True)
    model = apply_adapters(model, recipe.adapter)
    return breakdown(model, recipe.model.name, num_labels, recipe.adapter, recipe.budget)


def check_budget(p: Plan) -> None:
    if p.budget is not None and p.trainable > p.budget:
        raise UserError(
            f"--budget: this recipe trains {p.trainable:,} parameters, over the budget of {p.budget:,} by "
            f"{p.trainable - p.budget:,}; lower --rank, drop targets or layers, or run `loraclf plan --search "
            f"--budget {p.budget}`"
        )


# --- search -----------------------------------------------------------------------------------------------------

RANKS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass
class Candidate:
    targets: list[str]
    r: int
    bias: str
    layer_ranks: str | None
    trainable: int
    adapters: int
    coverage: int = 0  # adapted matrices

    def flags(self) -> str:
        ranks = f"--layer-ranks '{self.layer_ranks}'" if self.layer_ranks else f"--rank {self.r}"
        return f"--targets {','.join(self.targets)} {ranks} --bias {self.bias}"


def _inventory(recipe: Recipe, num_labels: int):
    model = build_model(recipe.model.name, num_labels, recipe.model, meta=True)
    head = head_name(model)
    mods = linear_modules(model)
    head_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith(head + "."))
    all_biases = {
        n: p.numel()
        for n, p in model.named_parameters()
        if n.endswith("bias") and not n.startswith(head + ".")
    }
    return model, mods, head_params, all_biases


def search(recipe: Recipe, num_labels: int, budget: int, top: int = 12) -> list[Candidate]:
    """Configurations under ``budget``, most adapter parameters first (coverage, then rank)."""
    from loraclf.modeling.adapters import layer_ranks, num_layers_of, select_targets

    model, mods, head_params, all_biases = _inventory(recipe, num_labels)
    n_layers = num_layers_of(model)
    attn = _attention_names(mods)
    sets = [[a] for a in attn]
    sets += [list(c) for k in range(2, len(attn) + 1) for c in itertools.combinations(attn, k)]
    sets += [["attention"], ["all-linear"]]
    seen, out = set(), []
    schedules = [None] + [f"{b}*2**(i//{max(1, n_layers // 3)})" for b in (1, 2, 4, 8)]
    for tset, r, bias, sched in itertools.product(sets, RANKS, ("none", "lora_only", "all"), schedules):
        if sched is not None and r != RANKS[0]:
            continue  # a schedule replaces the uniform rank
        spec = AdapterConfig(targets=tset, r=r, bias=bias, layer_ranks=sched)
        try:
            chosen = select_targets(model, spec)
        except UserError:
            continue
        ranks = layer_ranks(spec, n_layers)
        adapters = sum(ranks.get(t.layer, (r, 0))[0] * (t.d_in + t.d_out) for t in chosen)
        if bias == "all":
            bias_n = sum(all_biases.values())
        elif bias == "lora_only":
            bias_n = sum(all_biases.get(t.name + ".bias", 0) for t in chosen)
        else:
            bias_n = 0
        total = adapters + bias_n + head_params
        key = (tuple(sorted(t.name for t in chosen)), total, sched)
        if total <= budget and key not in seen:
            seen.add(key)
            out.append(Candidate(tset, r, bias, sched, total, adapters, len(chosen)))
    # More adapter parameters first; among equals, wider coverage, then a uniform rank, then fewer biases.
    out.sort(key=lambda c: (-c.adapters, -c.coverage, c.layer_ranks is not None, c.trainable, c.flags()))
    return out[:top]


def _attention_names(mods) -> list[str]:
    """Shortest unambiguous names of the attention projections: ``query``, but ``attention.output.dense``."""
    attn = [
        t
        for t in mods
        if t.layer is not None and any(p in ("attention", "attn", "self_attn") for p in t.name.split("."))
    ]
    names = []
    for t in attn:
        tail = t.name.split(f".{t.layer}.", 1)[-1]
        leaf = tail.rsplit(".", 1)[-1]
        same_leaf = {
            m.name.split(f".{m.layer}.", 1)[-1]
            for m in mods
            if m.layer is not None and m.name.rsplit(".", 1)[-1] == leaf
        }
        name = leaf if len(same_leaf) == 1 else tail
        if name not in names:
            names.append(name)
    return names
