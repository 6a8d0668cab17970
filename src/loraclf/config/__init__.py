"""Recipes: the typed dataclasses every setting lives in, their loading, overrides and validation.

``schema`` declares the settings, ``coerce`` builds them from parsed YAML, ``io`` reads files and overrides and
writes ``recipe.yaml``, ``validate`` checks values and combinations, ``flags`` derives the command line and ``--help``.
Import from here; the modules are an internal split.
"""

from loraclf.config.coerce import from_dict, to_dict
from loraclf.config.flags import FLAG_FIELDS, FLAG_KEYS, describe, suggest_key
from loraclf.config.io import apply_overrides, load_recipe, save_recipe
from loraclf.config.schema import (
    CHOICES,
    FORMAT_VERSION,
    AdapterConfig,
    CleanConfig,
    DataConfig,
    DistillConfig,
    FilterConfig,
    ModelConfig,
    Recipe,
    TrainConfig,
)
from loraclf.config.validate import validate, validate_files

__all__ = [
    "CHOICES",
    "FLAG_FIELDS",
    "FLAG_KEYS",
    "FORMAT_VERSION",
    "AdapterConfig",
    "CleanConfig",
    "DataConfig",
    "DistillConfig",
    "FilterConfig",
    "ModelConfig",
    "Recipe",
    "TrainConfig",
    "apply_overrides",
    "describe",
    "from_dict",
    "load_recipe",
    "save_recipe",
    "suggest_key",
    "to_dict",
    "validate",
    "validate_files",
]
