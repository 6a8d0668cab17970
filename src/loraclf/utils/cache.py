"""loraclf's cache folder: assembled offline models, token ids, teacher probabilities and int8 graphs.

Nothing here imports a model library, so the int8 prediction path can find its graph without loading PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where loraclf keeps assembled offline models, token ids and int8 graphs (``LORACLF_CACHE`` overrides).

    Everything there can be rebuilt, so an unwritable location (a read-only home, say) falls back to a folder in
    the system's temporary directory, with a note, instead of failing the command.
    """
    wanted = Path(os.environ.get("LORACLF_CACHE", Path.home() / ".cache" / "loraclf"))
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        if os.access(wanted, os.W_OK | os.X_OK):
            return wanted
    except OSError:
        pass
    import sys
    import tempfile

    fallback = (
        Path(tempfile.gettempdir()) / f"loraclf-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    )
    fallback.mkdir(parents=True, exist_ok=True)
    if not getattr(cache_dir, "warned", False):
        print(f"loraclf: note: cache folder '{wanted}' is not writable; using '{fallback}'", file=sys.stderr)
        cache_dir.warned = True
    return fallback
