"""loraclf's cache folder: assembled offline models, token ids, teacher probabilities and int8 graphs.

loraclf trusts what it finds there (an int8 graph is run as it is, cached token ids are fed to the model), so the
folder must be this user's alone: a folder another user owns, or one other users may write to, could hold a graph
that predicts what they want. The folder is created owner-only (mode 0700), and an existing one is used only when
this user owns it and neither its group nor others may write to it; otherwise the command stops with one line
saying what to do. That matters most for the fallback in the system's temporary folder, whose name anyone can
predict and create first.

Nothing here imports a model library, so the int8 prediction path can find its graph without loading PyTorch.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from loraclf.utils.errors import UserError


def _private(path: Path) -> Path:
    """``path``, created owner-only when missing.

    Raises:
        UserError: it exists but belongs to another user, or its group or others may write to it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise UserError(
            f"cache folder '{path}' belongs to another user (uid {info.st_uid}); loraclf trusts the models and "
            "graphs it finds there, so remove it or set LORACLF_CACHE to a folder of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UserError(
            f"cache folder '{path}' may be written by other users (mode {stat.S_IMODE(info.st_mode):o}); loraclf "
            f"trusts the models and graphs it finds there, so run `chmod 700 '{path}'` or set LORACLF_CACHE to a "
            "folder of your own"
        )
    return path


def cache_dir() -> Path:
    """Where loraclf keeps assembled offline models, token ids and int8 graphs (``LORACLF_CACHE`` overrides).

    Everything there can be rebuilt, so an unwritable location (a read-only home, say) falls back to a folder in
    the system's temporary directory, with a note, instead of failing the command.

    Raises:
        UserError: the folder (or the fallback) is not private to this user (see the module docstring).
    """
    wanted = Path(os.environ.get("LORACLF_CACHE", Path.home() / ".cache" / "loraclf"))
    try:
        wanted.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.access(wanted, os.W_OK | os.X_OK):
            return _private(wanted)
    except OSError:
        pass
    fallback = (
        Path(tempfile.gettempdir()) / f"loraclf-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    )
    _private(fallback)
    if not getattr(cache_dir, "warned", False):
        print(f"loraclf: note: cache folder '{wanted}' is not writable; using '{fallback}'", file=sys.stderr)
        cache_dir.warned = True
    return fallback
