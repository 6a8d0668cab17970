"""Atomic file writes for run folders: a temporary sibling of the writer's own, flushed, renamed over the target.

The implementation lives in :mod:`loraclf.utils.files` (the data and inference layers need it too); this module keeps
the run folder's names for it. Kept free of torch so that reading and checking run folders stays cheap
(``check_run`` runs before the heavy libraries load).
"""

from __future__ import annotations

from loraclf.utils.files import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text, fsync_dir

__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]
