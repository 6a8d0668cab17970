"""Atomic file writes that never collide: each writer has its own temporary name.

A write goes to a temporary sibling, is flushed to disk, and is renamed over the target. A rename within one folder
is atomic, so a reader (or a process killed half-way) sees the old file or the new one, never half of one.

The temporary name carries the process id and a random part. A fixed name (``.name.tmp``) is shared by every writer
of ``name``: with two writers at once (two sweep workers updating one leaderboard, two ``evaluate`` of one run),
one truncates the other's half-written file, and the first rename moves the file away, so the second rename fails.
With a name of its own, each writer renames a complete file of its own; the last rename wins, whole.

Kept free of third-party imports so that every layer (data, runfolder, inference, sweep) can use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def temp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A hidden sibling of ``path`` no other writer uses: ``.NAME.<pid>.<random>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is flushed); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the block ends.

    For writers that take a file name (``np.save``, ``df.to_parquet``, safetensors). The temporary file is removed
    when the block raises, and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temp_sibling(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs):
    """``open()`` on a temporary sibling, flushed and renamed over ``path`` when the block ends (see
    :func:`atomic_path`); ``mode`` is ``"w"`` or ``"wb"``, ``kwargs`` go to :func:`open`."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, under a temporary name of this writer's own."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
