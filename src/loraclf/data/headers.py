"""Telling a header row from a data row, for CSV/TSV files read with the wrong ``data.header``.

The original AG News release (and many copies of it) has no header row: ``"3","Wall St. Bears …","Reuters - …"``.
Read as if it had one, its first record becomes the column names ``3``, ``Wall St. Bears …``; the reverse mistake
(``data.header=false`` on a file that has a header) makes ``Class Index`` a class. A file alone cannot always
settle which it is, so loraclf never guesses silently; it checks only when something is already wrong:

* with a header expected but the configured text or label column missing, the names are examined. They read like
  data when one is a number or a known class and another is a long text, or when one reads like a sentence. The
  error then says so and gives the exact fix, ``data.header=false data.columns=…``, with a column list suggested
  from the cells: the number or class becomes ``label`` (``id`` in a file without labels, or for a second
  number), one other cell becomes ``text``, two become ``title,description`` (the AG News layout; among more
  cells, the two long ones), anything else ``colN``;
* with ``data.header=false``, a first row whose cells all look like column names (short, not numbers) and that
  either repeats a configured or a usual column name (``label``, ``text``, ``title``, …) or, in evaluation, carries
  a label the run does not know is a header row: the error says to set ``data.header=true``.

:func:`column_names` turns a header row into column names and refuses a name given twice (``text,text,label``):
pandas would rename the second to ``text.1`` and the first would be used without a word.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from loraclf.config import DataConfig
from loraclf.utils.errors import UserError, short_list

_INTEGER = re.compile(r"[+-]?\d+")
# Names that head the label and text columns of common data sets; a first row made of such names is a header.
HEADER_WORDS = (
    "label", "labels", "class", "class index", "category", "target", "topic", "sentiment",
    "text", "title", "description", "sentence", "content", "review", "id",
)  # fmt: skip


def _words(cell: str) -> int:
    return len(cell.split())


def looks_like_text(cell: str) -> bool:
    """A cell long enough to be a title or a description rather than a column name."""
    return _words(cell) >= 4 or len(cell) >= 30


def looks_like_sentence(cell: str) -> bool:
    """A cell no column name is: many words, or a long run of text."""
    return _words(cell) >= 6 or len(cell) >= 50


def looks_like_name(cell: str) -> bool:
    """A cell that could be a column name: a few words, short, not a number."""
    return 0 < _words(cell) <= 3 and len(cell) <= 30 and not _INTEGER.fullmatch(cell)


def _label_like(cell: str, label_map: list | None) -> bool:
    if label_map is not None and cell in {str(x) for x in label_map}:
        return True
    return bool(_INTEGER.fullmatch(cell))


def suggest_columns(cells: list[str], label_map: list | None = None, labelled: bool = True) -> list[str]:
    """Column names for a headerless file whose first record is ``cells`` (see the module docstring)."""
    names = [f"col{i + 1}" for i in range(len(cells))]
    known = [i for i, c in enumerate(cells) if label_map is not None and c in {str(x) for x in label_map}]
    numbers = [i for i, c in enumerate(cells) if _INTEGER.fullmatch(c)]
    label = (known or numbers or [None])[0] if labelled else None
    if label is not None:
        names[label] = "label"
    ids = [i for i in numbers if i != label]
    if ids:
        names[ids[0]] = "id"
    rest = [i for i in range(len(cells)) if i != label and i not in ids[:1]]
    # Two text cells are AG News' title and description, however short the title; among more, the long ones.
    texts = rest if len(rest) <= 2 else ([i for i in rest if looks_like_text(cells[i])] or rest)
    if len(texts) == 2:
        names[texts[0]], names[texts[1]] = "title", "description"
    elif texts:
        names[max(texts, key=lambda i: len(cells[i]))] = "text"
    return names


def headerless_fix(names: list[str], label_map: list | None = None, labelled: bool = True) -> str | None:
    """``data.header=false data.columns=…`` when column ``names`` read like a data record, else None."""
    cells = [str(n).strip() for n in names]
    label_like = [i for i, c in enumerate(cells) if _label_like(c, label_map)]
    texty = [i for i, c in enumerate(cells) if i not in label_like and looks_like_text(c)]
    if not ((label_like and texty) or any(looks_like_sentence(c) for c in cells)):
        return None
    return "data.header=false data.columns=" + ",".join(suggest_columns(cells, label_map, labelled))


def _cells(values) -> str:
    return short_list((repr(v if len(v) <= 30 else v[:27] + "…") for v in values), 4)


def check_header(
    df: pd.DataFrame, cfg: DataConfig, source: str, flag: str, *, label_map=None, labelled: bool = True
) -> None:
    """Raise when a delimited file was evidently read with the wrong ``data.header`` (see the module docstring).

    Raises:
        UserError: the header row reads like data (the message gives ``data.header=false data.columns=…``), or
            with ``data.header=false`` the first row reads like a header (the message says ``data.header=true``).
    """
    if not df.attrs.get("delimited"):
        return  # JSON Lines, Parquet and datasets name their own fields: data.header concerns CSV/TSV only
    names = [str(c) for c in df.columns]
    if cfg.header:
        has_text = cfg.text_column in names or {cfg.title_column, cfg.description_column} <= set(names)
        if has_text and (not labelled or cfg.label_column in names):
            return
        fix = headerless_fix(names, label_map, labelled)
        if fix:
            raise UserError(
                f"{flag}: '{source}' line 1 looks like data, not a header row (cells {_cells(names)}); if the "
                f"file has no header row, read it with {fix}"
            )
        return
    if not len(df):
        return
    first = [str(v).strip() for v in df.iloc[0]]
    if not all(looks_like_name(c) for c in first):
        return
    # A header row repeats a configured name or a usual one; in evaluation its label cell is no known class.
    repeats = any(c.lower() in (n.lower(), *HEADER_WORDS) for c, n in zip(first, names))
    odd_label = (
        labelled
        and label_map is not None
        and cfg.label_column in names
        and str(df[cfg.label_column].iloc[0]).strip() not in {str(x) for x in label_map}
    )
    if repeats or odd_label:
        raise UserError(
            f"{flag}: '{source}' row 1 (cells {_cells(first)}) looks like a header row, but data.header is "
            "false; set data.header=true to read it as column names"
        )


def column_names(cells: list[str], path: Path | str, flag: str, where: str = "line 1") -> list[str]:
    """Header cells as column names; empty ones become ``Unnamed: i`` (as pandas names them).

    Raises:
        UserError: a name occurs twice. pandas would read the second as ``text.1`` and loraclf would silently take
            the first; the error names the column and both positions instead.
    """
    names: list[str] = []
    first: dict[str, int] = {}
    for i, cell in enumerate(cells):
        name = cell if cell.strip() else f"Unnamed: {i}"
        if name in first:
            raise UserError(
                f"{flag}: '{path}' {where} names column '{name}' twice (columns {first[name] + 1} and {i + 1}); "
                "rename or remove one of them"
            )
        first[name] = i
        names.append(name)
    return names
