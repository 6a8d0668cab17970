"""Cheap checks of data-file arguments, free of pandas so that the CLI can run them before the heavy imports.

The same rule as :func:`loraclf.data.tables.read_table`: a path that does not exist is an error, unless it looks
like a Hugging Face dataset id (``ag_news``, ``ag_news:test``: no slash and no file extension).
"""

from __future__ import annotations

from pathlib import Path

from loraclf.utils.errors import UserError


def looks_like_hub_id(path_or_id: str) -> bool:
    """A name such as ``ag_news`` or ``ag_news:test`` rather than a file path."""
    return "/" not in path_or_id and "." not in Path(path_or_id).name


def check_data_path(path_or_id: str, flag: str) -> None:
    """Raise the one-line "not found" error for a data file that does not exist.

    Raises:
        UserError: the path does not exist and is not a dataset id; names the flag and the path.
    """
    path = Path(path_or_id).expanduser()
    if not path.exists() and not looks_like_hub_id(path_or_id):
        raise UserError(
            f"{flag}: file '{path}' not found; check the path (data files are usually in ../shared/data)"
        )
