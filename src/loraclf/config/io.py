"""Recipe files and overrides: reading YAML, applying ``key.sub=value`` overrides, writing ``recipe.yaml``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml

from loraclf.config.coerce import from_dict, to_dict
from loraclf.config.flags import suggest_key
from loraclf.config.schema import Recipe
from loraclf.utils.errors import UserError
from loraclf.utils.files import atomic_write_text


def load_recipe(path: str | Path | None) -> Recipe:
    """Read a YAML recipe; an absent path gives the defaults."""
    if path is None:
        return Recipe()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config: recipe file '{p}' not found; pass a YAML file (see recipes/)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{p}: not valid YAML{where}; check indentation and quoting") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text; save the recipe as UTF-8") from None
    return from_dict(Recipe, data, source=str(p))


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML scalars (``8``, ``1e-4``, ``[q,v]``, ``null``)."""
    data = to_dict(recipe)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not key=value; write e.g. train.lr=1e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts):
            where = ".".join(parts[: i + 1])
            if not isinstance(node, dict) or part not in node:
                raise UserError(
                    f"override: unknown key '{where}'{suggest_key(key.strip())}; "
                    "`loraclf train --help` lists every key"
                )
            if i == len(parts) - 1:
                try:
                    value = yaml.safe_load(raw) if raw.strip() else ""
                except yaml.YAMLError:
                    value = raw  # e.g. "," as in data.delimiter=,
                if value in ("", None) and raw.strip() in ("|", ">"):
                    value = raw.strip()  # YAML block-scalar marks, meant literally (data.delimiter=|)
                # YAML reads 1e-4 as a string; accept scientific notation for numeric fields.
                if isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        value = float(value) if any(c in value for c in ".eE") else int(value)
                node[part] = value
            else:
                node = node[part]
    return from_dict(Recipe, data, source="override")


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the recipe as YAML, atomically (a unique temporary sibling renamed over ``path``)."""
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(recipe), sort_keys=False))
