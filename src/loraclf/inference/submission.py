"""Submission files: ``ID,Label`` rows (plus class probabilities on request), written atomically.

No model library is imported here, so writing predictions from the int8 graph needs no PyTorch.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from loraclf.utils.errors import UserError
from loraclf.utils.files import atomic_open


def write_submission(
    path: Path, ids: list, labels: list, probs: np.ndarray | None, label_names: list
) -> None:
    """Write ``ID,Label`` (plus ``prob_<label>`` columns when probabilities are given) atomically."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--output: '{path}' is a folder; give a file name such as predictions.csv")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise UserError(f"--output: folder '{parent}' does not exist; create it first")
    try:
        with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            header = ["ID", "Label"] + ([f"prob_{n}" for n in label_names] if probs is not None else [])
            w.writerow(header)
            for i, (rid, lab) in enumerate(zip(ids, labels)):
                row = [rid, lab]
                if probs is not None:
                    row += [f"{p:.6f}" for p in probs[i]]
                w.writerow(row)
    except PermissionError:
        raise UserError(
            f"--output: cannot write '{path}' (permission denied); choose a writable location"
        ) from None
    except OSError as exc:
        raise UserError(
            f"--output: cannot write '{path}' ({exc.strerror}); choose a writable location"
        ) from None
