"""The search space of a sweep: SPACE.yaml parsed into distributions, checked against the recipe and the budget.

SPACE.yaml maps recipe keys to distributions: ``{int: [lo, hi]}`` and ``{float: [lo, hi]}``, both with optional
``log: true`` or ``step: s``, and ``{choice: [a, b, …]}``, whose choices can be any recipe value (a list of
targets, a rank expression such as ``"8*2**(i//4)"``, a scheduler name). ``parse_space`` checks every key against
the recipe dataclasses (an unknown key suggests the full dotted key) and every bound and choice against the
recipe's own validation, so a typo fails in milliseconds, before a study exists. Optuna stores scalar choices only,
so list choices are stored as readable labels (``[query, value]``) and mapped back to the list.

The budget is checked before the first trial: for every searched key that changes the trainable count (the
``model.*`` and ``adapter.*`` keys), its cheapest value is found with the exact meta-device plan
(:func:`loraclf.budget.plan`), and the combination of those, the cheapest corner of the space, is planned too.
When even it is over the budget no point can fit, which is a one-line error instead of a sweep of rejected trials.
Plans are cached by the model and adapter settings, so a trial that changes only the learning rate costs nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loraclf.config import FLAG_KEYS, Recipe, from_dict, to_dict
from loraclf.modeling.methods import validate_recipe
from loraclf.utils.errors import UserError, did_you_mean

KINDS = ("int", "float", "choice")
OPTIONS = {"int": ("log", "step"), "float": ("log", "step"), "choice": ()}
RESERVED = {"train.metric": "the sweep sets it from --metric", "budget": "the sweep sets it from --budget"}
EXAMPLE = "e.g. train.lr: {float: [1e-4, 3e-3], log: true} or adapter.r: {choice: [4, 8, 16]}"


def label(value) -> str:
    """How a value reads in Optuna, the leaderboard and messages: lists as ``[query, value]``, None as ``null``."""
    if isinstance(value, list):
        return "[" + ", ".join(label(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


@dataclass
class Dist:
    """One searched recipe key and its distribution."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    values: dict = field(default_factory=dict)  # choice label → recipe value

    def suggest(self, trial):
        """The value of this key for an Optuna trial (a recipe value, not a label)."""
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        scalar = [v if _scalar(v) else k for k, v in self.values.items()]  # Optuna stores scalars only
        picked = trial.suggest_categorical(self.key, scalar)
        return self.values[picked] if isinstance(picked, str) and picked in self.values else picked

    def extremes(self) -> list:
        """The values that bound this key: both ends of a range, every choice."""
        if self.kind == "choice":
            return list(self.values.values())
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice of " + ", ".join(self.values)
        extra = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"{self.kind} {self.low:g}…{self.high:g}{extra}"


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _number(value) -> float | None:
    """A bound as a number; YAML 1.1 reads ``1e-4`` (no dot) as a string, which is still meant as a number."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _leaf_types(cls: type = Recipe, prefix: str = "") -> dict[str, typing.Any]:
    """Recipe key → type annotation, for every leaf key."""
    out = {}
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(_leaf_types(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


def suggest_key(key: str, keys: list[str]) -> str:
    """' (did you mean "adapter.r"?)' for a misspelled or shortened key, matched on the whole key, then on the
    flag names (``rank``), then on the last part (``lr`` → ``train.lr``)."""

    leaf = key.rsplit(".", 1)[-1].replace("-", "_")
    if FLAG_KEYS.get(leaf) in keys:
        return f' (did you mean "{FLAG_KEYS[leaf]}"?)'
    hint = did_you_mean(key, keys)
    if hint:
        return hint
    leaves = {k.rsplit(".", 1)[-1] for k in keys}
    close = difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.6)
    if not close:
        return ""
    full = [k for k in keys if k.rsplit(".", 1)[-1] == close[0]]
    return " (did you mean " + " or ".join(f'"{k}"' for k in full) + "?)"


def parse_space(path: str | Path, base: Recipe) -> list[Dist]:
    """Read SPACE.yaml into distributions; every key, bound and choice is checked against the recipe.

    Args:
        path: The YAML file mapping recipe keys to ``{int: …}``, ``{float: …}`` or ``{choice: …}``.
        base: The recipe the sweep starts from; each bound and choice must be a valid value of it.

    Returns:
        The distributions, in file order.

    Raises:
        UserError: Missing or unreadable file, empty space, unknown key, malformed distribution or invalid value.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"--space: file '{p}' not found; pass a YAML file mapping recipe keys to distributions"
        )
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{p}: not valid YAML{where}; check indentation and quoting") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text; save the space as UTF-8") from None
    if not data:
        raise UserError(f"{p}: the space is empty; map at least one recipe key to a distribution, {EXAMPLE}")
    if not isinstance(data, dict):
        raise UserError(f"{p}: must map recipe keys to distributions, got a {type(data).__name__}; {EXAMPLE}")
    types = _leaf_types()
    dists = []
    for key, spec in data.items():
        key, where = str(key), f"{p}: {key}"
        if key not in types:
            raise UserError(
                f"{where}: not a recipe key{suggest_key(key, list(types))}; `loraclf train --help` lists every key"
            )
        if key in RESERVED:
            raise UserError(f"{where}: cannot be searched ({RESERVED[key]})")
        dist = _parse_dist(where, key, spec, types[key])
        for value in dist.extremes():
            try:
                recipe_with(base, {key: value})
            except UserError as exc:
                raise UserError(f"{where}: {label(value)} is not a valid value ({exc})") from None
        dists.append(dist)
    return dists


def _parse_dist(where: str, key: str, spec, tp) -> Dist:
    if not isinstance(spec, dict):
        raise UserError(
            f"{where}: write a distribution such as {{int: [2, 64]}} or {{choice: [a, b]}}, got {spec!r}"
        )
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        given = ", ".join(map(str, spec)) or "nothing"
        hint = did_you_mean(next(iter(spec), ""), KINDS) if not kinds and spec else ""
        raise UserError(f"{where}: name exactly one of int, float or choice, got {given}{hint}")
    kind = kinds[0]
    for opt in spec:
        if opt != kind and opt not in OPTIONS[kind]:
            allowed = f"takes {' and '.join(OPTIONS[kind])}" if OPTIONS[kind] else "takes no options"
            raise UserError(
                f"{where}: unknown option '{opt}'{did_you_mean(opt, OPTIONS[kind])}; {kind} {allowed}"
            )
    body = spec[kind]
    if kind == "choice":
        if not isinstance(body, list) or not body:
            raise UserError(f"{where}: choice needs a non-empty list, e.g. {{choice: [linear, cosine]}}")
        values = {}
        for v in body:
            if label(v) in values:
                raise UserError(f"{where}: the choice {label(v)} is listed twice")
            values[label(v)] = v
        return Dist(key, kind, values=values)
    bounds = [_number(b) for b in body] if isinstance(body, list) else []
    if len(bounds) != 2 or None in bounds:
        raise UserError(f"{where}: {kind} needs [low, high], two numbers, got {body!r}")
    low, high = bounds
    log, step = spec.get("log", False), spec.get("step")
    args = typing.get_args(tp) or (tp,)
    if kind == "float" and int in args and float not in args:
        raise UserError(f"{where}: {key} holds whole numbers; write {{int: [{low:g}, {high:g}]}}")
    if low > high:
        raise UserError(f"{where}: low {low:g} is above high {high:g}")
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false, got {log!r}")
    if step is not None and (_number(step) is None or _number(step) <= 0):
        raise UserError(f"{where}: step must be a positive number, got {step!r}")
    step = _number(step) if step is not None else None
    if log and low <= 0:
        raise UserError(f"{where}: log needs a positive low bound, got {low:g}")
    if log and step is not None:
        raise UserError(f"{where}: log and step cannot be combined; drop one")
    if kind == "int" and not all(float(x).is_integer() for x in (low, high, step or 1)):
        raise UserError(f"{where}: int bounds and step must be whole numbers, got {body!r}")
    return Dist(key, kind, low, high, log, step)


def recipe_with(base: Recipe, values: dict, source: str = "sweep") -> Recipe:
    """A copy of ``base`` with recipe keys set to ``values``, type-checked and validated."""
    data = to_dict(base)
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    return validate_recipe(from_dict(Recipe, data, source=source))


# --- budget ----------------------------------------------------------------------------------------------------------


class Planner:
    """Exact plans of recipes, cached by the settings that decide the count (model and adapter)."""

    def __init__(self, num_labels: int):
        self.num_labels, self.cache = num_labels, {}

    def __call__(self, recipe: Recipe):
        from loraclf.modeling.plan import (
            plan,  # torch: loaded once a sweep is about to run, not for argument errors
        )

        d = to_dict(recipe)
        key = json.dumps([d["model"], d["adapter"]], sort_keys=True, default=str)
        if key not in self.cache:
            self.cache[key] = plan(recipe, self.num_labels)
        return self.cache[key]


def check_some_point_fits(base: Recipe, space: list[Dist], planner: Planner, where: str) -> None:
    """Plan the cheapest corner of the space exactly; raise when even it is over the budget."""
    if base.budget is None:
        return
    corner = {}
    for d in space:
        if d.key.startswith(("model.", "adapter.")):  # only these change the trainable count
            corner[d.key] = min(
                d.extremes(), key=lambda v, k=d.key: planner(recipe_with(base, {k: v})).trainable
            )
    try:
        cheapest = recipe_with(base, corner)
    except UserError:
        return  # the per-key cheapest values do not combine into a valid recipe: no proof either way
    n = planner(cheapest).trainable
    if n > base.budget:
        at = ", ".join(f"{k}={label(v)}" for k, v in corner.items()) or "the recipe's fixed settings"
        raise UserError(
            f"{where}: no point of the space fits the budget of {base.budget:,}: its cheapest corner ({at}) trains "
            f"{n:,} parameters; search smaller settings or raise --budget"
        )


def metric_columns(metric: str) -> list[str]:
    """The leaderboard's score columns: the optimised metric first, then accuracy and macro-F1."""
    return [metric] + [m for m in ("accuracy", "macro_f1") if m != metric]
