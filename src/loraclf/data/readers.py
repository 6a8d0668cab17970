"""Reading data files into a DataFrame: CSV/TSV, JSON Lines, Parquet, Excel, pickles, folders, HF datasets.

Every kind of file may be compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``) and text is decoded as
:mod:`loraclf.data.encodings` says (UTF-8, a byte-order mark's UTF-16/32, or ``data.encoding``). A folder of text
files per class is :mod:`loraclf.data.folders`; an Excel workbook :mod:`loraclf.data.spreadsheets`. A column name
that occurs twice is an error in every format, never a silent pick of one of the two.

Delimited files (``.csv``, ``.tsv``, ``.tab``, ``.txt``) are parsed with Python's ``csv`` module, record by record,
so that every problem can name its line:

* **Delimiter.** ``data.delimiter`` wins when set. Then a first line ``sep=;`` (which Excel writes and reads to
  name the separator) is honoured and skipped. Otherwise the delimiter is detected from the first line: each of
  ``,`` ``;`` tab and ``|`` is counted outside double quotes and the most frequent wins (ties go to the suffix's
  own delimiter, comma for ``.csv`` and tab for ``.tsv``). Spreadsheet programs in many locales write ``;``, so a
  ``.csv`` name says little about the separator. Without a header row and with ``data.columns`` known, the
  delimiter that splits the first line into exactly that many fields is preferred.
* **Header.** By default the first record names the columns. ``data.header=false`` with ``data.columns=a,b,c``
  (names in file order) reads every record as data, as the original AG News release needs.
* **Shape.** After parsing, every record has the header's number of fields, or the error names its 1-based line
  in the file, its field count and the header's. Records of blank fields only are skipped in files of several
  columns (and counted on stderr); in a one-column file a blank line is a row with an empty text.
* **Line breaks.** Records end at ``\\n``, ``\\r\\n`` or ``\\r`` outside quotes and nowhere else: U+2028, U+2029,
  ``\\x85`` and the other characters :meth:`str.splitlines` treats as line ends stay inside their field.

JSON Lines files are split on ``\\n`` only (a ``\\r`` before it is dropped), never with :meth:`str.splitlines`:
JSON strings may hold U+2028, U+2029, ``\\x85`` and other characters that method would split on, so any valid
JSON Lines file reads. A file whose first character is ``[`` is read as one JSON array of records. A record with
one key twice is an error (``json`` itself would keep the last silently).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from loraclf.config import DataConfig
from loraclf.data.encodings import decode, format_of, raw_bytes
from loraclf.data.folders import HF_MARKERS, is_text_folder, read_text_folder
from loraclf.data.headers import column_names
from loraclf.data.paths import check_data_path
from loraclf.data.spreadsheets import SUFFIXES as EXCEL_SUFFIXES
from loraclf.data.spreadsheets import read_xlsx
from loraclf.utils.errors import UserError, say

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
PICKLE_SUFFIXES = (".pkl", ".pickle")
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
# Excel's first line naming the separator: sep=; (some writers quote it).
SEP_LINE = re.compile(r'"?sep=(.)"?[ \t]*')
FIRST_LINE = re.compile(r"[^\r\n]*")
# A megabyte-long text in one field is a real file, not an attack worth refusing (the csv default is 128 KiB).
FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def count_outside_quotes(line: str, char: str) -> int:
    """How often ``char`` occurs in ``line`` outside double-quoted stretches."""
    count, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted  # a doubled quote inside a field toggles twice: no net change
        elif c == char and not quoted:
            count += 1
    return count


def detect_delimiter(first_line: str, default: str, width: int | None = None) -> str:
    """The delimiter of a file whose first line is ``first_line`` (see the module docstring)."""
    counts = {d: count_outside_quotes(first_line, d) for d in DELIMITERS}
    if width is not None:
        exact = [d for d in DELIMITERS if counts[d] == width - 1]
        if default in exact:
            return default
        if exact:
            return max(exact, key=lambda d: counts[d])
    best = max(DELIMITERS, key=lambda d: (counts[d], d == default))
    return best if counts[best] else default


def _records(text: str, sep: str, path: Path, flag: str, skipped: int = 0) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each record; quotes are checked strictly so that errors name a line.

    ``skipped`` lines (a ``sep=`` line) were cut from the top of ``text``: line numbers count them.

    Raises:
        UserError: a quote is never closed, or text follows a closing quote.
    """
    csv.field_size_limit(FIELD_LIMIT)
    # newline="": records end at \r, \n or \r\n outside quotes, and the csv module keeps them inside quotes.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    start = 1 + skipped
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                where = f"the quote opened in the record starting on line {start} is never closed"
                fix = "close it, or double the quotes inside quoted fields"
            else:
                where = f"line {reader.line_num + skipped} has text after a closing quote ({exc})"
                fix = 'quote the whole field and double the quotes inside it ("")'
            raise UserError(f"{flag}: '{path}' is malformed: {where}; {fix}") from None
        yield start, row
        start = reader.line_num + 1 + skipped


def read_delimited(raw: bytes, path: Path, default_sep: str, flag: str, cfg: DataConfig) -> pd.DataFrame:
    """A CSV/TSV file's bytes as a DataFrame of strings, read as ``cfg`` says (encoding, delimiter, header,
    column names).

    Raises:
        UserError: empty or undecodable file, malformed quoting, a column named twice, or a record whose field
            count differs from the header's (naming its line, its count and the header's).
    """
    text = decode(raw, path, flag, cfg.encoding)
    columns = list(cfg.columns) if not cfg.header and cfg.columns else None
    first_line = FIRST_LINE.match(text).group(0)
    declared, skipped = None, 0
    sep_line = SEP_LINE.fullmatch(first_line)
    if sep_line:  # Excel's "sep=;" line: the separator, then the file proper
        declared, skipped = sep_line.group(1), 1
        text = text[sep_line.end() :].removeprefix("\r").removeprefix("\n")
        first_line = FIRST_LINE.match(text).group(0)
    if not text.strip():
        raise UserError(f"{flag}: file '{path}' is empty; give a file with a header row and data rows")
    # Empty lines at the end of a file are an editor's doing, not rows (a line of spaces is a row of spaces).
    text = re.sub(r"(\r?\n)+\Z", "\n", text)
    sep = (
        cfg.delimiter
        or declared
        or detect_delimiter(first_line, default_sep, len(columns) if columns else None)
    )
    records = _records(text, sep, path, flag, skipped)
    if columns is None:
        header: list[str] = []
        while not header:  # blank lines above the header row are not columns
            line, header = next(records)
        columns = column_names(header, path, flag, f"line {line}")
        what = "the header has"
    else:
        what = f"data.columns names {len(columns)} ({', '.join(columns)}), so rows need"
    width = len(columns)
    rows, blank = [], 0
    for line, row in records:
        if width > 1 and all(not f.strip() for f in row):
            blank += 1  # with several columns a blank line holds no field at all: skip it, and say so
            continue
        if len(row) != width:
            if width != 1 or row:
                raise UserError(_width_message(path, flag, line, len(row), width, what, sep))
            row = [""]  # in a one-column file a blank line is a row with an empty text
        rows.append(row)
    if blank:
        say(f"loraclf: note: {flag}: skipped {blank:,} blank line{'s' if blank > 1 else ''} of '{path}'")
    df = pd.DataFrame(rows, columns=columns, dtype=object)
    df.attrs["delimited"] = True  # lets the header checks (loraclf.data.headers) skip self-describing formats
    return df


def _width_message(path: Path, flag: str, line: int, n: int, width: int, what: str, sep: str) -> str:
    name = DELIMITER_NAMES.get(sep, repr(sep))
    fix = (
        f"quote fields that contain {name}"
        if n > width
        else "fill in the missing fields (or check the delimiter: set data.delimiter)"
    )
    return (
        f"{flag}: '{path}' is malformed: line {line} has {n} field{'s' if n != 1 else ''} separated by {name}, "
        f"but {what} {width}; {fix}"
    )


class _RepeatedKey(ValueError):
    """A JSON object with one key twice."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):  # rare: only then look for the repeated key
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return out


def _json(text: str):
    # strict=False: raw control characters inside strings, which scrapers write, are kept as text.
    return json.loads(text, strict=False, object_pairs_hook=_unique_keys)


def read_jsonl(raw: bytes, path: Path, flag: str, cfg: DataConfig) -> pd.DataFrame:
    """JSON Lines (one object per ``\\n``-ended line) or a JSON array of objects.

    Raises:
        UserError: undecodable text, a line that is not valid JSON or repeats a key (naming it), or no objects.
    """
    text = decode(raw, path, flag, cfg.encoding)
    if text.lstrip().startswith("["):  # a JSON array of records
        try:
            rows = _json(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{flag}: '{path}' is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        except _RepeatedKey as exc:
            raise UserError(f"{flag}: '{path}' has a record with the key '{exc}' twice; keep one") from None
    else:
        rows = []
        # Records end at "\n" only: str.splitlines would also split inside strings holding U+2028, \x85 etc.
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip(" \t\r"):  # JSON's own whitespace; anything else must parse
                continue
            try:
                rows.append(_json(line))
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{flag}: '{path}' line {n} is not valid JSON ({exc.msg}, column {exc.colno}); one object "
                    "per line"
                ) from None
            except _RepeatedKey as exc:
                raise UserError(
                    f"{flag}: '{path}' line {n} has the key '{exc}' twice; keep one (JSON readers would silently "
                    "take the last)"
                ) from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise UserError(
            f"{flag}: '{path}' holds no JSON objects; write one object per line with text and label keys"
        )
    return pd.DataFrame(rows)


def read_parquet(raw: bytes, path: Path, flag: str, cfg: DataConfig) -> pd.DataFrame:
    """A Parquet file's bytes (its columns keep their types).

    Raises:
        UserError: not a readable Parquet file.
    """
    try:
        return pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        error = exc
    try:  # pandas refuses a schema that names a column twice: say which
        import pyarrow.parquet as pq

        names = pq.read_schema(io.BytesIO(raw)).names
        _unique_columns(pd.DataFrame(columns=names), path, flag)
    except UserError:
        raise
    except Exception:  # not Parquet at all: the first error says so
        pass
    raise UserError(f"{flag}: '{path}' is not a readable Parquet file ({type(error).__name__})") from None


def read_pickle(raw: bytes, path: Path, flag: str, cfg: DataConfig) -> pd.DataFrame:
    """A pickled table, through the restricted unpickler (:mod:`loraclf.data.safe_pickle`)."""
    from loraclf.data.safe_pickle import load_pickle_table

    return load_pickle_table(path, flag, raw)


def _reader(suffix: str):
    """The reader of a file kind, by its own suffix (before any compression suffix); None when unknown."""
    if suffix in TABLE_SUFFIXES:
        return lambda raw, path, flag, cfg: read_delimited(raw, path, TABLE_SUFFIXES[suffix], flag, cfg)
    for suffixes, reader in (
        (JSON_SUFFIXES, read_jsonl),
        (PARQUET_SUFFIXES, read_parquet),
        (PICKLE_SUFFIXES, read_pickle),
        (EXCEL_SUFFIXES, read_xlsx),
    ):
        if suffix in suffixes:
            return reader
    return None


def read_hf(spec: str, flag: str) -> pd.DataFrame:
    """A saved HF dataset folder (``save_to_disk``) or a hub dataset id with an optional ``:split``.

    Raises:
        UserError: the dataset cannot be loaded (missing, unreachable offline, damaged).
    """
    import datasets

    path = Path(spec)
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        else:
            name, _, split = spec.partition(":")
            ds = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # datasets raises many types for a missing or unreachable dataset
        raise UserError(
            f"{flag}: cannot load dataset '{spec}' ({type(exc).__name__}); give a data file or a "
            "saved dataset folder"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    # Hugging Face ClassLabel columns hold ints; keep them, the label map is built from the values.
    return ds.to_pandas()


def read_table(path_or_id: str, flag: str = "--data", cfg: DataConfig | None = None) -> pd.DataFrame:
    """Read any supported input into a DataFrame (strings for CSV/TSV; other formats keep their types).

    ``cfg`` says how files are read (``data.encoding``, and for delimited files ``data.delimiter``,
    ``data.header``, ``data.columns``); formats that name their fields themselves ignore the last three.

    Raises:
        UserError: a missing or unreadable file, an unknown format, a column named twice, or any error of the
            format's reader.
    """
    cfg = cfg or DataConfig()
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        if any((path / n).exists() for n in HF_MARKERS):
            return _unique_columns(read_hf(str(path), flag), path, flag)
        if is_text_folder(path):
            return read_text_folder(path, flag, cfg)
        raise UserError(
            f"{flag}: '{path}' is a folder but neither a saved Hugging Face dataset nor a folder of text files "
            "per class (CLASS/NAME.txt); pass a data file or such a folder"
        )
    if not path.exists():
        check_data_path(path_or_id, flag)
        # a hub dataset id such as "ag_news" or "ag_news:test"
        return _unique_columns(read_hf(path_or_id, flag), path, flag)
    if not path.is_file():
        raise UserError(f"{flag}: '{path}' is not a regular file")
    suffix, _ = format_of(path)
    reader = _reader(suffix)
    if reader is None:
        old_excel = " (an Excel 97-2003 workbook: save it as .xlsx or CSV)" if suffix == ".xls" else ""
        raise UserError(
            f"{flag}: '{path}' has an unknown format '{suffix}'{old_excel}; use .csv, .tsv, .jsonl, .parquet, "
            ".pkl or .xlsx (any of them compressed: .gz, .bz2, .xz, .zst), or a folder of text files per class"
        )
    try:
        raw = raw_bytes(path, flag)
    except PermissionError:
        raise UserError(f"{flag}: cannot read '{path}' (permission denied)") from None
    return _unique_columns(reader(raw, path, flag, cfg), path, flag)


def _unique_columns(df: pd.DataFrame, path, flag: str) -> pd.DataFrame:
    """Raise when a column name occurs twice (Parquet, pickles and datasets can hold such frames).

    Raises:
        UserError: names the repeated column.
    """
    repeated = df.columns[df.columns.duplicated()]
    if len(repeated):
        raise UserError(
            f"{flag}: '{path}' has two columns named '{repeated[0]}'; rename or remove one of them"
        )
    return df
