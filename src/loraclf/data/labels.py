"""Label values as the training file spells them, the label map, and class indices.

A label comes back from ``predict`` exactly as the training file wrote it: a grader compares strings, and category
codes such as ``01``..``12`` or ICD's ``007`` are names, not numbers. So labels are unified as numbers only where
the file itself says they are numbers:

* a column the file stores as numbers (JSON numbers, a Parquet or pickled int/float column): ``3`` and ``3.0``
  are the class ``3``;
* a column of text in which *every* value is a plain decimal number (``3``, ``-2``, ``3.0``; no leading zero, sign
  ``+``, digit separator ``_``, exponent or inner space): CSV has no types, and such a column is what a spreadsheet
  writes for numbers. ``1`` and ``1.0`` there are one class, as a number column's would be;
* any other text column keeps every value as written (after surrounding whitespace is stripped): ``01`` and ``1``,
  ``1e3`` and ``1000``, ``+1`` and ``1`` are different classes. When one file holds two spellings of one number,
  the data summary says so.

Evaluation files meet the training label map by value, and by spelling for a number written as text (``"3"`` in
a file is the training class ``3``). Against a map of numbers only (a number column, or a run trained before
labels kept their spelling, whose ``labels.json`` holds ``01`` as ``1``), any spelling of a class's number is that
class: nothing else could be meant. A label the training file does not have is an error naming the training label
it resembles (another case or spacing, the same number spelled differently, a close spelling).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

import numpy as np

from loraclf.utils.errors import UserError, did_you_mean, short_list

# A number as a spreadsheet or pandas writes it: no leading zeros, no "+", "_", exponent or spaces.
PLAIN_NUMBER = re.compile(r"(?:0|-?[1-9][0-9]*)(?:\.[0-9]+)?|-0\.[0-9]+")
CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")


def _number(s: str):
    """A plain decimal string as an int when whole, else as its shortest decimal text ("2.50" → "2.5")."""
    d = Decimal(s)
    return int(d) if d == d.to_integral_value() else str(d.normalize())


def label_key(v, numeric_text: bool = False):
    """One label value as a class key.

    Numbers stay numbers (whole floats become ints, other floats their text); strings are stripped of surrounding
    whitespace. A string becomes a number when ``numeric_text`` says its column is a column of plain numbers, or on
    its own when it is an integer's one canonical spelling (``"3"``, never ``"03"``).
    """
    if isinstance(v, (bool, np.bool_, int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if float(v).is_integer() else str(v).strip()
    s = str(v).strip()
    if numeric_text and PLAIN_NUMBER.fullmatch(s):
        return _number(s)
    return int(s) if CANONICAL_INT.fullmatch(s) else s


def column_labels(values) -> list:
    """Class keys of one label column (see the module docstring): strings become numbers only when every
    string of the column is a plain decimal number."""
    values = list(values)
    strings = [v.strip() for v in values if isinstance(v, str)]
    numeric = all(PLAIN_NUMBER.fullmatch(s) for s in strings)
    if numeric:
        return [label_key(v, True) for v in values]
    # A text column: its strings are names, kept as written even when one looks like a number.
    return [v.strip() if isinstance(v, str) else label_key(v) for v in values]


def build_label_map(labels: list, source: str, flag: str) -> list:
    """Sorted distinct labels (numbers numerically, otherwise by their text); at least two classes.

    A string that is exactly a number's text beside that number (``"3"`` from a text column of one training file,
    ``3`` from a number column of another) is that number's class, not a second one.
    """
    distinct = set(labels)
    numbers = {str(x) for x in distinct if isinstance(x, int)}
    distinct = {x for x in distinct if not (isinstance(x, str) and x in numbers)}
    if len(distinct) < 2:
        only = next(iter(distinct)) if distinct else None
        raise UserError(
            f"{flag}: '{source}' has a single class ({only!r}); a classifier needs at least two labels"
        )
    numeric = all(isinstance(x, int) for x in distinct)
    return sorted(distinct) if numeric else sorted(distinct, key=str)


def encode_labels(labels: list, label_map: list, source: str, flag: str) -> np.ndarray:
    """Class indices of ``labels`` in ``label_map``.

    Raises:
        UserError: a label the training file does not have; names the row and the training label it resembles
            (same letters in another case, the same number spelled differently, or a close spelling).
    """
    index = {v: i for i, v in enumerate(label_map)}
    # Files may mix string and int spellings of the same label ("1" vs 1): compare by string too.
    by_str = {str(v): i for i, v in enumerate(label_map)}
    # Classes that are numbers (a number column in training, or a run from before labels kept their spelling,
    # whose labels.json holds "01" as 1) are met by number: "01" can then mean nothing but the class 1.
    by_number = {v: i for i, v in enumerate(label_map)} if all(isinstance(v, int) for v in label_map) else {}
    out = np.empty(len(labels), dtype=np.int64)
    for row, v in enumerate(labels, 1):
        i = index.get(v, by_str.get(str(v)))
        if i is None and by_number:
            i = by_number.get(as_number(v))
        if i is None:
            raise UserError(
                f"{flag}: '{source}' row {row} has label {v!r}, which the training file does not have"
                f"{_resembles(v, label_map)} (labels: {short_list(map(str, label_map))}); fix the row or the file"
            )
        out[row - 1] = i
    return out


def _resembles(value, label_map: list) -> str:
    """Which training label ``value`` resembles, for the error message; '' when none does."""
    folded = " ".join(str(value).split()).casefold()
    for known in label_map:
        if " ".join(str(known).split()).casefold() == folded:
            # Case is meaning-bearing in some label sets: say what differs instead of merging the two.
            return f"; it differs only in case or spacing from the training label {str(known)!r}"
    number = as_number(value)
    for known in label_map:
        if number is not None and as_number(known) == number:
            return f"; it is the number of the training label {str(known)!r} spelled differently"
    return did_you_mean(str(value), map(str, label_map))


def as_number(v):
    """The number a label spells in any of Python's spellings (``01``, ``+1``, ``1_000``, ``1e3``), or None."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
    else:
        try:
            return int(str(v).strip())
        except ValueError:
            pass
        try:
            f = float(str(v).strip())
        except ValueError:
            return None
    if not math.isfinite(f):
        return None
    return int(f) if f.is_integer() else f


def same_number_labels(label_map: list) -> list[list[str]]:
    """Groups of training labels that spell one number differently (``01`` and ``1``), each sorted."""
    groups: dict = {}
    for label in label_map:
        number = as_number(label)
        if number is not None:
            groups.setdefault(number, []).append(str(label))
    return [sorted(g) for _, g in sorted(groups.items(), key=lambda kv: kv[0]) if len(g) > 1]
