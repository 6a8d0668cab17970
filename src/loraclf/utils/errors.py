"""User-facing errors.

Every mistake a user can make (a missing file, a misspelled column, a rank below one, a model over budget) is raised
as :class:`UserError`. The CLI prints its message as a single line and exits with status 2; it never shows a
traceback for these. Messages follow one shape: what was wrong, where (file, row, column, key or flag), and what to
do about it.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input, reported as one line with exit status 2."""

    exit_code = 2

    def __init__(self, message: str):
        # One line, always: newlines inside a message would break scripts that parse stderr.
        super().__init__(" ".join(str(message).split()))


class PointError(UserError):
    """A problem of one configuration rather than of the inputs, e.g. out of memory at this batch size or a length
    beyond the model's position table.

    ``loraclf train`` reports it like any UserError. A sweep, whose trials try many configurations, records the
    trial as failed with this message and goes on, while any other UserError (a file, the recipe) stops it: every
    trial would meet that one.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def short_list(items: Iterable[str], limit: int = 12) -> str:
    """Join items for a message, eliding the tail so that a message stays one readable line."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def say(msg: str) -> None:
    """A note for the user on stderr (progress, counts, warnings); errors are UserError instead.

    Under a multi-process launcher only rank 0 speaks (``RANK`` is set by torchrun and accelerate): the ranks
    prepare the same data and would print every note N times.
    """
    if os.environ.get("RANK", "0") != "0":
        return
    print(msg, file=sys.stderr, flush=True)
