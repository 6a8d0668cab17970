"""Stand-ins for the pyarrow and ``datasets`` callables a pickled table names: they rebuild it from checked values.

A pickled Hugging Face ``Dataset`` (the course's unlabelled Kaggle test set is one), and under pandas 3 any
pickled DataFrame of strings, holds Arrow arrays. Their pickle calls ``pyarrow.lib._restore_array`` on a tuple of
raw buffers, lengths and offsets, and then the ``datasets`` classes' ``__setstate__``. None of that code was written
for hostile input: ``_restore_array`` wraps the buffers without validating them, so a crafted length or offset
reads outside them (and older pyarrow versions reached an unpickling extension-type path). loraclf therefore never
hands a pickle's bytes to those functions. The restricted unpickler (:mod:`loraclf.data.safe_pickle`) resolves
their names to the stand-ins here instead:

* ``_restore_array`` is :func:`restore_array`: the buffers are decoded in Python and NumPy, with every length,
  offset and bound checked against the buffer sizes, into Python values; pyarrow then builds a fresh array from
  those values (``pa.array``), its ordinary, validating entry point. Types are limited to what tables of texts and
  labels use: null, bool, integers, floats, (large) strings and binaries, and (large) lists of those.
* Types, fields and schemas are built through pyarrow's public constructors after their arguments' types are
  checked; chunked arrays and tables only from arrays built here.
* ``datasets`` classes (``Dataset``, ``InMemoryTable``, ``Features``, ``DatasetInfo`` …) become :class:`Inert`
  records: they keep what the pickle hands them and run no code of ``datasets``. :func:`dataset_table` then takes
  the Arrow table out of a ``Dataset`` record (applying its row selection, ``_indices``, when it has one).

So the worst a crafted pickle can do here is fail a check, which the loader reports as an unreadable file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

FIXED = {
    "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8",
    "uint8": "u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
    "float": "<f4", "double": "<f8",
}  # fmt: skip
OFFSETS = {"string": "<i4", "binary": "<i4", "large_string": "<i8", "large_binary": "<i8"}
ALIASES = {*FIXED, *OFFSETS, "bool", "null"}
# No table of texts has this many rows; a larger length in a pickle is a crafted one (and would allocate it).
MAX_LENGTH = 2**31


class Refused(ValueError):
    """The pickle holds something these stand-ins do not rebuild (a type, a shape, an inconsistent buffer)."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise Refused(what)


def type_for_alias(name):
    _check(isinstance(name, str) and name in ALIASES, f"Arrow type {name!r}")
    return pa.type_for_alias(name)


def _is_type(t) -> bool:
    return isinstance(t, pa.DataType) and (
        str(t) in ALIASES or pa.types.is_list(t) or pa.types.is_large_list(t)
    )


def field(name, type_, nullable=True, metadata=None):
    _check(isinstance(name, str) and _is_type(type_) and isinstance(nullable, bool), "an Arrow field")
    _check(metadata is None or isinstance(metadata, dict), "Arrow field metadata")
    return pa.field(name, type_, nullable, metadata)


def list_(value):
    _check(isinstance(value, pa.Field) or _is_type(value), "an Arrow list type")
    return pa.list_(value)


def large_list(value):
    _check(isinstance(value, pa.Field) or _is_type(value), "an Arrow list type")
    return pa.large_list(value)


def schema(fields, metadata=None):
    _check(isinstance(fields, list) and all(isinstance(f, pa.Field) for f in fields), "an Arrow schema")
    _check(metadata is None or isinstance(metadata, dict), "Arrow schema metadata")
    return pa.schema(fields, metadata)


def py_buffer(obj) -> bytes:
    _check(isinstance(obj, (bytes, bytearray)), "an Arrow buffer")
    return bytes(obj)


def _validity(buf, offset: int, length: int) -> np.ndarray | None:
    """The validity bits of rows offset..offset+length (bit i, least significant first), or None for all valid."""
    if buf is None:
        return None
    _check(len(buf) * 8 >= offset + length, "an Arrow validity bitmap shorter than its array")
    bits = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")
    return bits[offset : offset + length].astype(bool)


def _offsets(buf, kind: str, offset: int, length: int, limit: int) -> np.ndarray:
    """Value offsets of rows offset..offset+length, checked: inside the buffer, non-decreasing, within ``limit``."""
    dtype = np.dtype(kind)
    _check(buf is not None and len(buf) >= (offset + length + 1) * dtype.itemsize, "Arrow offsets")
    off = np.frombuffer(buf, dtype, count=offset + length + 1)[offset:].astype(np.int64)
    _check(bool(off[0] >= 0) and bool(np.all(np.diff(off) >= 0)) and int(off[-1]) <= limit, "Arrow offsets")
    return off


def _values(t: pa.DataType, length: int, offset: int, buffers: list, children: list):
    """Row values of one array (before validity), as a NumPy array or a list."""
    name = str(t)
    if name in FIXED:
        dtype = np.dtype(FIXED[name])
        _check(len(buffers) == 2 and buffers[1] is not None, "an Arrow array's buffers")
        _check(
            len(buffers[1]) >= (offset + length) * dtype.itemsize,
            "an Arrow value buffer shorter than its array",
        )
        return np.frombuffer(buffers[1], dtype, count=offset + length)[offset:]
    if name == "bool":
        _check(len(buffers) == 2 and buffers[1] is not None, "an Arrow array's buffers")
        return _validity(buffers[1], offset, length)
    if name in OFFSETS:
        _check(len(buffers) == 3 and buffers[2] is not None, "an Arrow array's buffers")
        data = buffers[2]
        off = _offsets(buffers[1], OFFSETS[name], offset, length, len(data))
        items = [data[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
        if "string" in name:
            try:
                return [x.decode("utf-8") for x in items]
            except UnicodeDecodeError:
                raise Refused("an Arrow string that is not UTF-8") from None
        return items
    # A list: offsets into the one child array.
    _check(len(buffers) == 2 and len(children) == 1, "an Arrow list array's buffers")
    child = decode(children[0])
    kind = "<i8" if pa.types.is_large_list(t) else "<i4"
    off = _offsets(buffers[1], kind, offset, length, len(child))
    return [child[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]


def decode(data) -> list:
    """The Python values of a pickled Arrow array's data tuple (None for null rows), every bound checked.

    Raises:
        Refused: an unsupported type, a dictionary, or buffers that do not fit the lengths and offsets.
    """
    _check(isinstance(data, tuple) and len(data) == 7, "an Arrow array")
    t, length, null_count, offset, buffers, children, dictionary = data
    _check(_is_type(t) and dictionary is None, f"Arrow arrays of type {t}")
    _check(all(isinstance(x, int) for x in (length, null_count, offset)), "an Arrow array's lengths")
    _check(0 <= length <= MAX_LENGTH and 0 <= offset <= MAX_LENGTH, "an Arrow array's lengths")
    _check(
        isinstance(buffers, list) and all(b is None or isinstance(b, bytes) for b in buffers), "Arrow buffers"
    )
    _check(isinstance(children, list), "an Arrow array's children")
    if str(t) == "null":
        _check(length <= 2**24, "an Arrow null array of implausible length")  # it has no buffer to bound it
        return [None] * length
    _check(len(buffers) >= 1, "an Arrow array's buffers")
    values = _values(t, length, offset, buffers, children)
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    valid = _validity(buffers[0], offset, length)
    if valid is not None:
        values = [v if ok else None for v, ok in zip(values, valid.tolist())]
    return values


def restore_array(data) -> pa.Array:
    """Stands in for ``pyarrow.lib._restore_array``: a fresh array built from :func:`decode`'s values."""
    return pa.array(decode(data), type=data[0])


def chunked_array(arrays, type_=None):
    _check(
        isinstance(arrays, list) and all(isinstance(a, pa.Array) for a in arrays), "an Arrow chunked array"
    )
    _check(type_ is None or _is_type(type_), "an Arrow chunked array's type")
    return pa.chunked_array(arrays, type_)


def _columns(arrays) -> bool:
    return isinstance(arrays, list) and all(isinstance(a, (pa.Array, pa.ChunkedArray)) for a in arrays)


def reconstruct_table(arrays, schema_):
    _check(_columns(arrays) and isinstance(schema_, pa.Schema), "an Arrow table")
    return pa.Table.from_arrays(arrays, schema=schema_)


def reconstruct_record_batch(arrays, schema_):
    _check(_columns(arrays) and isinstance(schema_, pa.Schema), "an Arrow record batch")
    return pa.RecordBatch.from_arrays(arrays, schema=schema_)


STAND_INS = {
    "type_for_alias": type_for_alias,
    "field": field,
    "list_": list_,
    "large_list": large_list,
    "schema": schema,
    "py_buffer": py_buffer,
    "_restore_array": restore_array,
    "chunked_array": chunked_array,
    "_reconstruct_table": reconstruct_table,
    "_reconstruct_record_batch": reconstruct_record_batch,
    # Type factories some pickles call by name: constructors without arguments.
    "int64": pa.int64,
    "string": pa.string,
    "large_string": pa.large_string,
}


class Inert:
    """Stands in for a ``datasets`` class: keeps the pickle's arguments and state, runs none of its code."""

    name = ""
    args: tuple = ()
    state = None

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


_INERT: dict[str, type] = {}


def inert(module: str, name: str) -> type:
    """The one stand-in class for ``module.name`` (a ``datasets`` class)."""
    key = f"{module}.{name}"
    if key not in _INERT:
        _INERT[key] = type(name, (Inert,), {"name": name, "__module__": __name__})
    return _INERT[key]


def dataset_table(obj) -> pa.Table | None:
    """The rows of a pickled ``Dataset`` record as an Arrow table (its ``_indices`` selection applied); None when
    ``obj`` is no Dataset record.

    Raises:
        Refused: a Dataset record whose table is not an in-memory one (a memory-mapped table names a file).
    """
    if not (isinstance(obj, Inert) and obj.name == "Dataset"):
        return None
    state = obj.state if isinstance(obj.state, dict) else {}

    def table_of(record) -> pa.Table:
        _check(isinstance(record, Inert) and record.name == "InMemoryTable", "a Dataset not held in memory")
        table = (record.state or {}).get("table") if isinstance(record.state, dict) else None
        _check(isinstance(table, pa.Table), "a Dataset without its table")
        return table

    table = table_of(state.get("_data"))
    if state.get("_indices") is not None:
        indices = table_of(state["_indices"]).column(0)
        try:
            table = table.take(indices)
        except (pa.ArrowException, IndexError):
            raise Refused("a Dataset row selection outside its table") from None
    return table
