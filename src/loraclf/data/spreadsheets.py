"""Excel workbooks (``.xlsx``, ``.xlsm``): the first sheet as a table, read with openpyxl when it is installed.

openpyxl is an optional extra (``pip install loraclf[excel]``): without it a workbook is refused in one line that
says how to install it or to save the sheet as CSV. Cells keep their types: a column of numbers is numbers (labels
``1`` and ``1.0`` one class), a cell Excel stores as text keeps its spelling (``01``). The first row names the
columns, or ``data.header=false data.columns=…`` names them as for CSV; the header checks of
:mod:`loraclf.data.headers` apply. Rows whose cells are all empty (Excel keeps formatted empty rows) are skipped.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from loraclf.config import DataConfig
from loraclf.data.headers import column_names
from loraclf.utils.errors import UserError

SUFFIXES = (".xlsx", ".xlsm", ".xltx", ".xltm")


def _cells(row) -> list:
    """A sheet row's values, trailing empty cells dropped (Excel pads rows to the sheet's used width)."""
    cells = list(row)
    while cells and (cells[-1] is None or (isinstance(cells[-1], str) and not cells[-1].strip())):
        cells.pop()
    return cells


def read_xlsx(raw: bytes, path: Path, flag: str, cfg: DataConfig) -> pd.DataFrame:
    """The first worksheet of a workbook's bytes as a DataFrame (see the module docstring).

    Raises:
        UserError: openpyxl is missing, the file is not a workbook, it holds no rows, or a row has values beyond
            the header's columns (naming the row).
    """
    try:
        import openpyxl
    except ImportError:
        raise UserError(
            f"{flag}: reading the Excel file '{path}' needs openpyxl: pip install loraclf[excel] (or save the "
            "sheet as CSV)"
        ) from None
    try:
        book = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except Exception as exc:  # zipfile, XML and openpyxl errors for a damaged or foreign file
        raise UserError(
            f"{flag}: '{path}' is not a readable Excel workbook ({type(exc).__name__}); save it again from Excel "
            "as .xlsx, or as CSV"
        ) from None
    try:
        rows = [(n, _cells(r)) for n, r in enumerate(book.worksheets[0].iter_rows(values_only=True), 1)]
    finally:
        book.close()
    rows = [(n, cells) for n, cells in rows if cells]
    if not rows:
        raise UserError(f"{flag}: the first sheet of '{path}' is empty; put a header row and data rows on it")
    if cfg.header or not cfg.columns:
        line, header = rows.pop(0)
        columns = column_names(["" if c is None else str(c) for c in header], path, flag, f"row {line}")
    else:
        columns = list(cfg.columns)
    width = len(columns)
    for n, cells in rows:
        if len(cells) > width:
            raise UserError(
                f"{flag}: '{path}' row {n} has a value in column {len(cells)}, beyond the {width} columns the header "
                "names; name that column in the header row or clear the cell"
            )
    df = pd.DataFrame(
        [cells + [None] * (width - len(cells)) for _, cells in rows], columns=columns, dtype=object
    )
    df.attrs["delimited"] = True  # a sheet's first row may be data, as a CSV's: the header checks apply
    return df
