"""Reading pickled tables without running code hidden in them.

A pickle is a program: unpickling calls whatever callables the file names, so ``pickle.load`` on a stranger's file
can run anything (``os.system`` is the classic payload). The course's unlabelled test set is a pickled Hugging Face
``Dataset``, and people will pass such files to ``predict``. loraclf unpickles through an allowlist: only the
constructors a pandas DataFrame, a Hugging Face Dataset or plain lists and dicts of strings need. Any other global
ends the load before it is called, with a message saying how to convert the file.

The Arrow arrays inside a Dataset (and inside a pandas 3 DataFrame of strings) are not rebuilt by pyarrow's or
``datasets``' own reconstructors, which trust their buffers: their names resolve to the checked stand-ins of
:mod:`loraclf.data.arrow_pickle`, which decode every buffer with its bounds checked and hand pyarrow plain values.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path

import pandas as pd

from loraclf.data import arrow_pickle
from loraclf.utils.errors import UserError

ALLOWED = {
    ("builtins", n)
    for n in (
        "list",
        "dict",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "bool",
        "complex",
        "slice",
        "range",
        "object",
    )
} | {
    ("collections", "OrderedDict"),
    # Protocol 2 stores bytes as _codecs.encode(text, "latin1"): an encoder, nothing more.
    ("_codecs", "encode"),
    ("copyreg", "_reconstructor"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # numpy >= 2 pickles some arrays through this helper; it only rebuilds an array from bytes.
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("pandas", "DataFrame"),
    ("pandas", "Series"),
    ("pandas", "Index"),
    ("pandas", "RangeIndex"),
    ("pandas", "StringDtype"),
    # The missing-value singleton of "string[pyarrow]" columns: a constant, nothing to run.
    ("pandas", "NA"),
    ("pandas._libs.missing", "NA"),
    ("pandas", "CategoricalDtype"),
    ("pandas", "Categorical"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.series", "Series"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.arrays", "ArrowStringArray"),
    ("pandas.core.arrays.string_", "StringArray"),
    ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
}
# Resolved to loraclf's stand-ins (loraclf.data.arrow_pickle), never to pyarrow's or datasets' own code.
ARROW = "pyarrow.lib"
DATASETS = {
    ("datasets.arrow_dataset", "Dataset"),
    ("datasets.info", "DatasetInfo"),
    ("datasets.features.features", "Features"),
    ("datasets.features.features", "Value"),
    ("datasets.features.features", "ClassLabel"),
    ("datasets.features.features", "Sequence"),
    ("datasets.features.features", "List"),
    ("datasets.features.features", "LargeList"),
    ("datasets.table", "InMemoryTable"),
    ("datasets.splits", "NamedSplit"),
    ("datasets.splits", "Split"),
    ("datasets.splits", "SplitInfo"),
    ("datasets.splits", "SplitDict"),
    ("datasets.utils.version", "Version"),
}


class _Refused(pickle.UnpicklingError):
    """A pickle asks for a callable outside the allowlist (the only way a pickle runs code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # Protocol 0-2 pickles say "__builtin__.list"; map names the way pickle itself would before checking.
        # (Python 3 never writes these old names, so mapping them always is safe.)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == ARROW and name in arrow_pickle.STAND_INS:
            return arrow_pickle.STAND_INS[name]
        if (module, name) in DATASETS:
            return arrow_pickle.inert(module, name)
        if (module, name) not in ALLOWED:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def load_pickle_table(path: Path, flag: str, data: bytes | None = None) -> pd.DataFrame:
    """Unpickle a DataFrame, an HF Dataset, a dict of columns or a list of texts/records, running no foreign code.

    ``data`` is the file's (decompressed) bytes when the caller read them already.
    """
    convert = (
        f'if you trust the file, convert it once: python -c "import pandas as pd; '
        f"pd.read_pickle('{path}').to_csv('data.csv', index=False)\""
    )
    try:
        with io.BytesIO(data) if data is not None else Path(path).open("rb") as fh:
            obj = _RestrictedUnpickler(fh).load()
    except _Refused as exc:
        raise UserError(
            f"{flag}: '{path}' is a pickle that needs {exc}, which loraclf will not run; {convert}"
        ) from None
    except arrow_pickle.Refused as exc:
        raise UserError(
            f"{flag}: '{path}' is a pickle holding {exc}, which loraclf does not rebuild from a pickle; {convert}"
        ) from None
    except pickle.UnpicklingError:
        raise UserError(
            f"{flag}: '{path}' is not a pickle (or is damaged); give a CSV, TSV, JSONL or Parquet file"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as exc:
        raise UserError(
            f"{flag}: '{path}' is not a readable pickle ({type(exc).__name__}); {convert}"
        ) from None
    if isinstance(obj, pd.DataFrame):
        return obj
    try:
        table = arrow_pickle.dataset_table(obj)
    except arrow_pickle.Refused as exc:
        raise UserError(
            f"{flag}: '{path}' is a pickle holding {exc}, which loraclf does not rebuild from a pickle; {convert}"
        ) from None
    if table is not None:
        return table.to_pandas()
    if isinstance(obj, dict) and all(isinstance(v, (list, tuple)) for v in obj.values()):
        return pd.DataFrame(obj)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(x, str) for x in obj):
        return pd.DataFrame({"text": list(obj)})
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(x, dict) for x in obj):
        return pd.DataFrame(list(obj))
    raise UserError(
        f"{flag}: '{path}' holds a {type(obj).__name__}, not a table; save a DataFrame, a Dataset, "
        "a dict of columns or a list of texts"
    )
