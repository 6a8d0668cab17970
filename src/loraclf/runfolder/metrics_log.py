"""The metrics history: one JSON object per line in ``metrics.jsonl`` (and, optionally, TensorBoard scalars).

Reports and run listings read that file, never training internals, so anything that can log a dict can feed them.
"""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLogger:
    """Appends one JSON object per line to metrics.jsonl; reports read that file, never training internals.

    With ``tensorboard`` set, the same scalars also go to TensorBoard event files (``<run>/tensorboard``).
    """

    def __init__(self, path: Path, keep_until_step: int | None = None, tensorboard: bool = False):
        self.path = path
        if keep_until_step is not None and path.exists():
            # On resume, forget what was logged after the checkpoint: it will be logged again, identically.
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln)["step"] <= keep_until_step]
            path.write_text("".join(k + "\n" for k in kept))
        self.fh = path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard:
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
