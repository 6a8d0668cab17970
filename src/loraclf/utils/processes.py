"""Whether a process still runs: the test behind stale run-folder locks, the runs table and lost sweep trials."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine and is not a zombie.

    A process of another user counts as alive (``kill(pid, 0)`` is refused but proves it exists). A killed process
    nobody has reaped yet (a launcher's worker whose parent was killed too) still answers ``kill(pid, 0)``; on
    Linux its state says it is a zombie, which holds nothing.
    """
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill() said it exists
    return state != "Z"
