"""Recipe flags, derived from the recipe dataclasses, and the recipe they resolve to.

A recipe field that carries ``flag`` metadata (``opt(..., flag="--rank")`` in :mod:`loraclf.config`) becomes
a command-line shortcut: its name, type, help text and the commands it appears on all come from that one
declaration, and :data:`FLAG_KEYS` maps the flag's argparse ``dest`` back to the dotted key. Resolving a recipe is
then one path for every command: recipe file (or the model's default recipe), flags, ``key.sub=value`` overrides,
validation.

Flags and overrides are first checked against the generic defaults, which needs only PyYAML: a misspelt key or an
impossible value is reported in a fraction of a second, before the model's default recipe (which reads the model's
config through transformers) is built.
"""

from __future__ import annotations

import argparse
import json
import types
import typing

from loraclf.config import (
    FLAG_FIELDS,
    Recipe,
    apply_overrides,
    describe,
    load_recipe,
    validate,
)


def _members(tp: typing.Any) -> list:
    """The alternatives of a union annotation (``int | None`` → [int, NoneType]), origins for generics."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return [typing.get_origin(a) or a for a in args]


def _flag_type(tp: typing.Any):
    """argparse type of a field: int and float parse as such; lists and expressions stay text (see below)."""
    kinds = _members(tp)
    if list in kinds or str in kinds:
        return str
    return next((k for k in (int, float) if k in kinds), str)


def add_recipe_flags(p: argparse.ArgumentParser, command: str) -> None:
    """``--config`` and every recipe flag declared for ``command``, help ending in its key (``(adapter.r)``)."""
    p.add_argument("--config", help="recipe YAML (see recipes/)")
    from loraclf.modeling.methods import METHODS  # torch-free: the registry only

    for key, f, tp in FLAG_FIELDS:
        if command in f.metadata["commands"]:
            text = f.metadata["help"]
            if key == "adapter.method":  # the config layer cannot read the registry; the command line can
                text = f"adaptation method: {' | '.join(METHODS)}"
            p.add_argument(f.metadata["flag"], type=_flag_type(tp), help=f"{text} ({key})")


def recipe_keys_help() -> str:
    """The epilog of ``loraclf train --help``: every recipe key with its default and help."""
    rows = describe()
    width = max(len(k) + len(d) for k, d, _ in rows) + 3
    lines = [
        "recipe keys (set in --config YAML or as key.sub=value overrides). The defaults shown are the generic",
        "ones; without --config, the model's default recipe applies first (minilm and mpnet-base: LoRA on every",
        "linear layer, an MLP head over mean pooling, base dropout off; see recipes/minilm-cpu.yaml), and its",
        "resolved values are written to RUN/recipe.yaml.",
    ]
    lines += [f"  {k}={d}".ljust(width + 2) + f"  {h}" for k, d, h in rows]
    return "\n".join(lines)


def flag_overrides(args) -> list[str]:
    """The recipe flags given, as ``key=value`` overrides (lists as YAML lists, expressions as strings)."""
    pairs = []
    for key, f, tp in FLAG_FIELDS:
        value = getattr(args, f.metadata["flag"].lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        if list in _members(tp) and isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
            numeric = all(c.isdigit() or c in ", " for c in value)
            # "8,8,16" and "query,value" are lists; "8*2**(i//4)" is an expression the field also accepts.
            as_list = numeric or str not in _members(tp)
            value = "[" + ",".join(items) + "]" if as_list else json.dumps(value)
        pairs.append(f"{key}={value}")
    return pairs


def check_recipe(args) -> Recipe:
    """Flags and overrides applied to the recipe file or the generic defaults, validated: no model needed.

    Returns:
        The checked recipe. Its ``data`` section is the run's: a model's default recipe changes only the model,
        adapter and training sections.

    Raises:
        UserError: unknown key, wrong type or impossible value, naming the key or flag.
    """
    recipe = load_recipe(args.config) if args.config else Recipe()
    return validate(
        apply_overrides(recipe, flag_overrides(args) + list(getattr(args, "overrides", []) or []))
    )


def resolve_recipe(args) -> Recipe:
    """Recipe file (or the model's default recipe), then flags, then dotted overrides; validated.

    Raises:
        UserError: as :func:`check_recipe`, or a combination the adaptation method refuses.
    """
    check_recipe(args)
    # The model's default recipe reads its config (transformers): loaded only once the cheap checks passed.
    from loraclf.modeling.defaults import default_recipe
    from loraclf.modeling.methods import validate_recipe

    recipe = (
        load_recipe(args.config)
        if args.config
        else default_recipe(args.model or "minilm", getattr(args, "method", None))
    )
    recipe = apply_overrides(recipe, flag_overrides(args) + list(getattr(args, "overrides", []) or []))
    return validate_recipe(recipe)
