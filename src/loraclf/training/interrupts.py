"""Ctrl-C and SIGTERM while training: raised at once, or, inside a window that must land whole, at its end.

The training loop applies each optimizer step's update (optimizer, schedule, state, history line) and each
evaluation's result inside :meth:`Interrupts.deferred`; everywhere else a signal raises :class:`Interrupted` at
once, and the checkpoint written then is the last step boundary (training/checkpointing.py).
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM, raised in the main thread; ``signum`` says which (the exit status is 128 + it)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupts:
    """SIGINT and SIGTERM while training: raised at once, except inside :meth:`deferred` windows, whose end raises.

    Only the main thread can receive signals; elsewhere (a sweep worker thread) :meth:`installed` does nothing and
    Ctrl-C keeps Python's default behaviour.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._pending: int | None = None

    @contextlib.contextmanager
    def installed(self):
        """Route SIGINT and SIGTERM here for the block; the previous handlers come back afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, _frame) -> None:
        if self._depth:
            self._pending = signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self):
        """A block that a signal must not cut in half; a signal that arrived during it is raised at its end."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Interrupted(signum)
