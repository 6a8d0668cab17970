"""Coercion: a nested dict (parsed YAML, overrides) into the recipe dataclasses, checked against each annotation.

The annotations in :mod:`loraclf.config.schema` are the types; a value that does not fit is an error naming its key
path. Coercion is gentle where users write values loosely: ``8`` for ``8.0``, ``"1e-4"`` (YAML 1.1 reads it as a
string) for a float, ``"query,value"`` or a lone value for a list.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from loraclf.config.flags import suggest_key
from loraclf.config.schema import Recipe
from loraclf.utils.errors import UserError


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check (and gently coerce) a value against a field annotation; returns (ok, value)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is list:
        (inner,) = typing.get_args(tp)
        # Flags and overrides spell lists as "a,b" or "8,8,16"; a lone value is a one-item list.
        if isinstance(value, str):
            value = [s.strip() for s in value.strip("[]").split(",") if s.strip()]
            if inner in (int, float):
                try:
                    value = [float(v) if inner is float else int(v) for v in value]
                except ValueError:
                    return False, value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for item in value:
            ok, v = _type_ok(item, inner)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        # YAML 1.1 reads "1e-4" (no dot) as a string; a number written that way is still a number.
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def from_dict(cls: type, data: dict, path: str = "", source: str = "recipe") -> Any:
    """Build a dataclass from a nested dict, naming the key path of any unknown key or wrong type."""
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: {path or 'top level'} must be a mapping of keys, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise UserError(
                f"{source}: unknown key '{where}'{suggest_key(where)}; see `loraclf train --help`"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, where, source)
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise UserError(
                f"{source}: key '{where}' must be {_type_name(tp)}, got {value!r}; fix the value in the recipe or flag"
            )
        kwargs[key] = coerced
    return cls(**kwargs)


def to_dict(recipe: Recipe) -> dict:
    """The recipe as plain nested dicts and lists (what ``recipe.yaml`` holds)."""
    return dataclasses.asdict(recipe)
