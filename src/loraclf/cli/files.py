"""How ``evaluate`` and ``predict`` read their file: the run's data settings, then overrides and column flags.

A run records how its training file was read (``data.*`` in ``recipe.yaml``), and by default a file given to
``evaluate`` or ``predict`` is read the same way. Test files need not look like the training file, though: AG News'
original test split has no header row while a training file may have one, or the reverse. So both commands take
trailing ``data.KEY=VALUE`` overrides for the keys that say how a file is read, and only those (the model's other
settings are fixed once trained)::

    loraclf evaluate runs/x --data test_noheader.csv data.header=false data.columns=label,title,description
    loraclf predict runs/x --input test.csv --output p.csv data.header=true   # run trained headerless
    loraclf evaluate runs/x --data export.csv data.encoding=cp1252            # a file saved by Excel

They are the very words ``train`` takes and that a header-looks-like-data error prints, so one fix works in every
command. ``data.header=true`` without ``data.columns`` drops the run's headerless column list. The column flags
(``--text-column`` and friends) apply last.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

from loraclf.utils.errors import UserError, did_you_mean

FILE_KEYS = (
    "header",
    "columns",
    "delimiter",
    "encoding",
    "text_column",
    "title_column",
    "description_column",
    "label_column",
    "id_column",
)
OVERRIDES_HELP = (
    "trailing data.KEY=VALUE overrides say how the file is read when it differs from the training file "
    f"({', '.join('data.' + k for k in FILE_KEYS[:4])}, data.*_column), e.g. data.header=false "
    "data.columns=label,title,description"
)
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def add_column_flags(p: argparse.ArgumentParser, label: bool) -> None:
    """Column names of the file to score, when they differ from the training file's, and the overrides slot."""
    p.add_argument("--text-column", metavar="NAME", help="text column (default: the run's, e.g. text)")
    if label:
        p.add_argument("--label-column", metavar="NAME", help="label column (default: the run's, e.g. label)")
    else:
        p.add_argument("--id-column", metavar="NAME", help="id column (default: id; absent = row numbers)")
    p.set_defaults(overrides=None)  # filled with trailing key=value words by the command-line parser


def split_runs(args) -> None:
    """Move ``key=value`` words that argparse took for run folders (``RUN data.header=false``) to the overrides."""
    runs = list(args.runs)
    moved = [r for r in runs if _OVERRIDE.match(r) and not Path(r).exists()]
    args.runs = [r for r in runs if r not in moved]
    args.overrides = moved + list(args.overrides or [])
    if not args.runs:
        raise UserError(f"{args.command}: give at least one RUN folder; see `loraclf {args.command} --help`")
    _override_keys(args)  # before any run is loaded: a wrong key fails at once


def _override_keys(args) -> set[str]:
    """The ``data.*`` names the overrides set.

    Raises:
        UserError: an override of a key that does not say how a file is read.
    """
    keys = set()
    for item in args.overrides or []:
        key = item.split("=", 1)[0].strip()
        name = key.removeprefix("data.")
        if not key.startswith("data.") or name not in FILE_KEYS:
            raise UserError(
                f"{args.command}: '{item}' cannot change a finished run; only how the file is read can be "
                f"overridden: {', '.join('data.' + k for k in FILE_KEYS)}{did_you_mean(name, FILE_KEYS)}"
            )
        keys.add(name)
    return keys


def file_config(cfg, args):
    """The run's data settings ``cfg`` with the overrides and then the column flags of ``args`` applied.

    Raises:
        UserError: an override of a key that is not about reading files, or an invalid combination.
    """
    from loraclf.config import Recipe, apply_overrides, validate_files

    overrides = list(getattr(args, "overrides", None) or [])
    keys = _override_keys(args)
    data = apply_overrides(Recipe(data=replace(cfg)), overrides).data if overrides else replace(cfg)
    if data.header and "columns" not in keys:
        data.columns = (
            None  # a run trained headerless reading a file with a header: its names come from the file
        )
    validate_files(data)
    names = {
        f"{k}_column": getattr(args, f"{k}_column", None)
        for k in ("text", "label", "id")
        if getattr(args, f"{k}_column", None)
    }
    return replace(data, **names)
