"""The run-folder lock: one process writes a run at a time, and a dead writer's lock is taken over atomically.

The lock is the file ``RUN/.lock`` holding the writer's process id (the runs table reads it to tell a training run
from an interrupted one). Holding it means holding an exclusive ``flock`` on that file. The kernel drops a flock when
its process ends, however it ends, so a lock left by a killed writer is free to take, and taking it is one system
call that exactly one process can win. The older way, "read the pid, see that it is dead, delete the file, create
a new one", is a check-then-act race: two ``--resume`` of one run could both see the dead pid, and the second would
delete the first one's fresh lock, so both would write the same checkpoints.

Details that keep the flock sound:

* A process that opened the file just before the holder deleted it (on release) may win a flock on the deleted
  file. After locking, the file's inode is compared with what the path names now; on a mismatch the attempt starts
  over with the new file.
* A writer killed with ``kill -9`` keeps its flock until the kernel has finished tearing it down (freeing gigabytes
  of tensors takes a moment), and a child it forked shares the flock until it exits too. So a flock that is busy
  while the pid in the file is gone is waited for, up to ``DYING_WRITER_WAIT_S`` seconds, before the attempt is
  refused; a busy flock with a live pid in the file is refused at once.
* A lock file whose pid is alive but holds no flock was written by a loraclf that predates this scheme; it is
  respected as held, as before.
* On a system without ``fcntl`` (Windows), the lock is created with ``O_EXCL`` and a stale one is taken over by
  renaming it to a name of this process's own: a rename of one file succeeds for exactly one process.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from loraclf.utils.errors import UserError, say
from loraclf.utils.files import temp_sibling
from loraclf.utils.processes import process_alive

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

DYING_WRITER_WAIT_S = 15.0  # how long a busy flock whose named pid is gone is waited for (see above)


def _pid_in(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


class RunLock:
    """An exclusive lock on a run folder (see the module docstring); a context manager."""

    def __init__(self, run: Path):
        self.path = Path(run) / ".lock"
        self.held = False
        self._fd: int | None = None

    def _refuse(self, pid: int) -> UserError:
        who = f"pid {pid}" if pid and process_alive(pid) else "it is still exiting or taking the folder over"
        return UserError(
            f"--out: run folder '{self.path.parent}' is being written by another loraclf process ({who}); "
            "wait for it or choose another --out"
        )

    def acquire(self) -> None:
        """Take the lock, or raise.

        Raises:
            UserError: another live process holds the lock (names its pid), or the lock cannot be created.
        """
        if fcntl is None:
            self._acquire_by_rename()
            return
        for _ in range(8):  # each retry follows a release that replaced the file between open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(
                    f"--out: cannot lock run folder '{self.path.parent}' ({exc.strerror}); make it writable"
                ) from None
            if not self._flock_or_wait(fd):
                os.close(fd)
                raise self._refuse(_pid_in(self.path)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)  # we locked a file its holder deleted on release: lock the current one
                continue
            self._claim(fd)
            return
        raise UserError(
            f"--out: cannot lock run folder '{self.path.parent}'; remove {self.path} if no run is active"
        )

    def _flock_or_wait(self, fd: int) -> bool:
        """Take the flock on ``fd``; while it is busy and the pid in the file is gone, wait for the dying holder."""
        deadline = time.monotonic() + DYING_WRITER_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pid = _pid_in(self.path)
                if (pid and process_alive(pid)) or time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)

    def _claim(self, fd: int) -> None:
        """With the flock held: respect a live writer of the pre-flock scheme, else write our pid."""
        pid = _pid_in(self.path)
        if pid and pid != os.getpid() and process_alive(pid):
            os.close(fd)
            raise self._refuse(pid)
        if pid and pid != os.getpid():
            say(
                f"note: took over the stale lock {self.path} (pid {pid} is no longer running; it was stopped "
                "or crashed)"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        os.fsync(fd)
        self._fd, self.held = fd, True

    def _acquire_by_rename(self) -> None:
        for _ in range(8):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = _pid_in(self.path)
                if pid and process_alive(pid):
                    raise self._refuse(pid) from None
                with contextlib.suppress(FileNotFoundError):  # another process moved it first: try again
                    stale = temp_sibling(self.path, ".stale")
                    os.rename(self.path, stale)
                    stale.unlink()
                    say(f"note: took over the stale lock {self.path} (pid {pid or '?'} is no longer running)")
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self.held = True
            return
        raise UserError(
            f"--out: cannot lock run folder '{self.path.parent}'; remove {self.path} if no run is active"
        )

    def release(self) -> None:
        """Give the lock up: the file is deleted while still locked, then the flock ends with the descriptor."""
        if not self.held:
            return
        self.path.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
