"""The metrics history: one JSON object per line in ``metrics.jsonl`` (and, optionally, TensorBoard scalars).

Reports and run listings read that file, never training internals, so anything that can log a dict can feed them.

The file is only ever appended to. A resumed run continues from its newest checkpoint, so what the interrupted
process logged after that step is logged again; rather than rewriting the file (and losing the record of the
interrupted attempt if the resume is stopped in turn), the logger appends a ``{"split": "resume", "step": N}``
marker, and :func:`read_metrics` reads the history as the run sees it: each marker sets aside the rows logged after
its step before it. A torn last line (a process killed mid-write) is cut off before appending.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RESUME = "resume"


def read_metrics(path: Path) -> list[dict]:
    """The run's history from ``metrics.jsonl``: rows superseded by a later resume marker left out, markers too.

    Raises:
        ValueError: a line other than the last (a torn one, dropped) is not JSON: "line N is not JSON".
        OSError, UnicodeDecodeError: the file cannot be read.
    """
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows: list[dict] = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise ValueError(f"line {i} is not JSON") from None
        if isinstance(row, dict) and row.get("split") == RESUME:
            rows = [r for r in rows if r.get("step", 0) <= row.get("step", 0)]
        elif isinstance(row, dict):
            rows.append(row)
    return rows


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (the writer was killed mid-line), so appended rows stay readable."""
    with path.open("rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)
            fh.flush()
            os.fsync(fh.fileno())


class MetricsLogger:
    """Appends one JSON object per line to metrics.jsonl; reports read that file, never training internals.

    With ``keep_until_step`` (a resume from the checkpoint of that step), a resume marker is appended first; see
    the module docstring. With ``tensorboard`` set, the same scalars also go to TensorBoard event files
    (``<run>/tensorboard``).
    """

    def __init__(self, path: Path, keep_until_step: int | None = None, tensorboard: bool = False):
        self.path = path
        resuming = keep_until_step is not None and path.exists()
        if resuming:
            _cut_torn_tail(path)
        self.fh = path.open("a", encoding="utf-8")
        if resuming:
            self.fh.write(json.dumps({"step": keep_until_step, "split": RESUME, "time": time.time()}) + "\n")
            self.fh.flush()
        self.writer = None
        if tensorboard:
            # Optional dependency (train.tensorboard), and it pulls in torch: loaded only when asked for.
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tensorboard"), purge_step=keep_until_step)

    def log(self, record: dict) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.writer is not None:
            for key, value in record.items():
                if (
                    key not in ("step", "split")
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self.writer.add_scalar(f"{record.get('split', 'train')}/{key}", value, record["step"])

    def close(self) -> None:
        self.fh.close()
        if self.writer is not None:
            self.writer.close()


class NullLogger:
    """The metrics logger of ranks other than 0, which write nothing (same interface as :class:`MetricsLogger`)."""

    def log(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass
