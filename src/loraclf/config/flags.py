"""Recipe keys as the command line sees them: every key's default and help, the fields that are flags, and the
closest key to a misspelt one.

A field declared with ``opt(..., flag="--rank")`` becomes a flag of the commands it names; :mod:`loraclf.cli.args`
builds argparse options from :data:`FLAG_FIELDS`, and :data:`FLAG_KEYS` maps each option's ``dest`` back to its
dotted key. ``--help`` lists :func:`describe`, so a setting is documented once, in the schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing

from loraclf.config.schema import Recipe


def describe(cls: type | None = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every recipe key, for `--help` and the generated recipe-key reference (docs/gen_reference.py)."""
    cls = cls or Recipe
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], key + ".")
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows


def suggest_key(key: str) -> str:
    """' (did you mean "train.epochs"?)': the closest full dotted key, so the suggestion can be pasted as is.

    The whole path is compared first (``train.epoch`` → ``train.epochs``, ``trian.lr`` → ``train.lr``); failing
    that, the last part alone (``epochs`` → ``train.epochs``, ``lrr`` → ``train.lr``).
    """
    leaves = [k for k, _, _ in describe()]
    found = difflib.get_close_matches(key, leaves + [f.name for f in dataclasses.fields(Recipe)], n=1)
    if not found:
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in leaves}
        found = [by_leaf[m] for m in difflib.get_close_matches(key.rsplit(".", 1)[-1], by_leaf, n=1)]
    return f' (did you mean "{found[0]}"?)' if found else ""


def _flag_fields(
    cls: type | None = None, prefix: str = ""
) -> list[tuple[str, dataclasses.Field, typing.Any]]:
    """(dotted key, field, annotation) of every recipe field that declares a command-line flag."""
    cls = cls or Recipe
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += _flag_fields(tp, f"{prefix}{f.name}.")
        elif f.metadata.get("flag"):
            rows.append((f"{prefix}{f.name}", f, tp))
    return rows


FLAG_FIELDS = _flag_fields()
# flag dest → recipe key path (``layer_ranks`` → ``adapter.layer_ranks``)
FLAG_KEYS = {f.metadata["flag"].lstrip("-").replace("-", "_"): key for key, f, _ in FLAG_FIELDS}
