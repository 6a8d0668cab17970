"""Reading data files into a DataFrame: CSV/TSV, JSON Lines, Parquet, Hugging Face datasets, pickles.

Delimited files (``.csv``, ``.tsv``, ``.tab``, ``.txt``, optionally compressed) are parsed with Python's ``csv``
module, record by record, so that every problem can name its line:

* **Delimiter.** ``data.delimiter`` wins when set. Otherwise it is detected from the first line: each of ``,``
  ``;`` tab and ``|`` is counted outside double quotes and the most frequent wins (ties go to the suffix's own
  delimiter, comma for ``.csv`` and tab for ``.tsv``). Spreadsheet programs in many locales write ``;``, so a
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
JSON Lines file reads. A file whose first character is ``[`` is read as one JSON array of records.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from loraclf.config import DataConfig
from loraclf.data.paths import check_data_path
from loraclf.utils.errors import UserError, say

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
# A megabyte-long text in one field is a real file, not an attack worth refusing (the csv default is 128 KiB).
FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def raw_bytes(path: Path, flag: str) -> bytes:
    """The file's bytes, decompressed when it ends in .gz, .bz2 or .xz.

    Raises:
        UserError: the compressed stream is damaged.
    """
    kind = COMPRESSED.get(path.suffix.lower())
    if kind is None:
        return path.read_bytes()
    try:
        return importlib.import_module(kind).decompress(path.read_bytes())
    except (OSError, EOFError, ValueError) as exc:
        raise UserError(f"{flag}: '{path}' is not a readable {path.suffix} file ({exc})") from None


def decode(raw: bytes, path: Path, flag: str) -> str:
    """UTF-8 text without a leading byte-order mark (spreadsheet programs often write one).

    Raises:
        UserError: the bytes are not UTF-8; the message names the byte and its line.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{flag}: '{path}' is not UTF-8 (byte {exc.start}, line {line}); re-save it as UTF-8, "
            "e.g. `iconv -f latin1 -t utf-8`"
        ) from None


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


def _records(text: str, sep: str, path: Path, flag: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each record; quotes are checked strictly so that errors name a line.

    Raises:
        UserError: a quote is never closed, or text follows a closing quote.
    """
    csv.field_size_limit(FIELD_LIMIT)
    # newline="": records end at \r, \n or \r\n outside quotes, and the csv module keeps them inside quotes.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    start = 1
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
                where = f"line {reader.line_num} has text after a closing quote ({exc})"
                fix = 'quote the whole field and double the quotes inside it ("")'
            raise UserError(f"{flag}: '{path}' is malformed: {where}; {fix}") from None
        yield start, row
        start = reader.line_num + 1


def _column_names(cells: list[str]) -> list[str]:
    """Header cells as column names: empty ones become ``Unnamed: i``, repeats ``name.1`` (as pandas names them)."""
    names, seen = [], {}
    for i, cell in enumerate(cells):
        name = cell if cell.strip() else f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        else:
            seen[name] = 0
        names.append(name)
    return names


def read_delimited(path: Path, default_sep: str, flag: str, cfg: DataConfig) -> pd.DataFrame:
    """A CSV/TSV file as a DataFrame of strings, read as ``cfg`` says (delimiter, header, column names).

    Raises:
        UserError: empty or undecodable file, malformed quoting, or a record whose field count differs from the
            header's (naming its line, its count and the header's).
    """
    text = decode(raw_bytes(path, flag), path, flag)
    if not text.strip():
        raise UserError(f"{flag}: file '{path}' is empty; give a file with a header row and data rows")
    # Empty lines at the end of a file are an editor's doing, not rows (a line of spaces is a row of spaces).
    text = re.sub(r"(\r?\n)+\Z", "\n", text)
    columns = list(cfg.columns) if not cfg.header and cfg.columns else None
    first_line = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    sep = cfg.delimiter or detect_delimiter(first_line, default_sep, len(columns) if columns else None)
    records = _records(text, sep, path, flag)
    if columns is None:
        header: list[str] = []
        while not header:  # blank lines above the header row are not columns
            _, header = next(records)
        columns = _column_names(header)
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


def read_jsonl(path: Path, flag: str) -> pd.DataFrame:
    """JSON Lines (one object per ``\\n``-ended line) or a JSON array of objects.

    Raises:
        UserError: undecodable text, a line that is not valid JSON (naming it), or no objects at all.
    """
    text = decode(raw_bytes(path, flag), path, flag)
    if text.lstrip().startswith("["):  # a JSON array of records
        try:
            rows = json.loads(text, strict=False)
        except json.JSONDecodeError as exc:
            raise UserError(f"{flag}: '{path}' is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    else:
        rows = []
        # Records end at "\n" only: str.splitlines would also split inside strings holding U+2028, \x85 etc.
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip(" \t\r"):  # JSON's own whitespace; anything else must parse
                continue
            try:
                # strict=False: raw control characters inside strings, which scrapers write, are kept as text.
                rows.append(json.loads(line, strict=False))
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{flag}: '{path}' line {n} is not valid JSON ({exc.msg}, column {exc.colno}); one object "
                    "per line"
                ) from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise UserError(
            f"{flag}: '{path}' holds no JSON objects; write one object per line with text and label keys"
        )
    return pd.DataFrame(rows)


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
    """Read any supported file into a DataFrame (strings for CSV/TSV; other formats keep their types).

    ``cfg`` says how delimited files are read (``data.delimiter``, ``data.header``, ``data.columns``); other
    formats name their fields themselves and ignore it.

    Raises:
        UserError: a missing or unreadable file, an unknown format, or any error of the format's reader.
    """
    cfg = cfg or DataConfig()
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        if any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return read_hf(str(path), flag)
        raise UserError(
            f"{flag}: '{path}' is a folder but not a saved Hugging Face dataset; pass a data file"
        )
    if not path.exists():
        check_data_path(path_or_id, flag)
        return read_hf(path_or_id, flag)  # a hub dataset id such as "ag_news" or "ag_news:test"
    if not path.is_file():
        raise UserError(f"{flag}: '{path}' is not a regular file")
    suffix = path.suffix.lower()
    if suffix in COMPRESSED:  # data.csv.gz: the format is the suffix before the compression's
        suffix = Path(path.stem).suffix.lower()
    try:
        if suffix in TABLE_SUFFIXES:
            return read_delimited(path, TABLE_SUFFIXES[suffix], flag, cfg)
        if suffix in (".jsonl", ".json", ".ndjson"):
            return read_jsonl(path, flag)
        if suffix in (".parquet", ".pq"):
            try:
                return pd.read_parquet(path)
            except Exception as exc:  # pyarrow raises its own error types for corrupt files
                raise UserError(
                    f"{flag}: '{path}' is not a readable Parquet file ({type(exc).__name__})"
                ) from None
        if suffix in (".pkl", ".pickle"):
            from loraclf.data.safe_pickle import load_pickle_table

            return load_pickle_table(path, flag)
    except PermissionError:
        raise UserError(f"{flag}: cannot read '{path}' (permission denied)") from None
    raise UserError(
        f"{flag}: '{path}' has an unknown format '{suffix}'; use .csv, .tsv, .jsonl, .parquet or .pkl "
        "(.csv, .tsv and .jsonl may be compressed: .gz, .bz2, .xz)"
    )
