"""The runs table: every run folder under a directory, one row each, for comparing runs at a glance.

A run folder is any folder holding a ``run.json``, found at any depth (``runs/agnews/r8`` as well as
``runs/r8``); the search does not descend into a run folder, so checkpoints and tokenizer folders are never
scanned. Each row is read from the folder's own files only:

* model, method and trainable parameters from ``run.json`` (its parameter plan),
* accuracy and macro-F1 from ``metrics.json`` (the kept weights); a run still training has none yet, so the
  last evaluation that improved (``"best": true`` in ``metrics.jsonl``) stands in for it,
* wall time from ``run.json`` ``train_seconds``,
* status: ``complete``, ``training`` (a live process holds the folder's ``.lock``), ``interrupted``
  (resume it with ``loraclf train --resume``) or ``unreadable`` (a damaged ``run.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from loraclf.runfolder.metrics_log import read_metrics
from loraclf.runfolder.schema import read_run_info
from loraclf.utils.errors import UserError
from loraclf.utils.processes import process_alive

# --sort value → row key; metrics sort best first, the others smallest (or alphabetical) first.
SORT_KEYS = {
    "name": "name",
    "accuracy": "accuracy",
    "macro_f1": "macro_f1",
    "trainable": "trainable",
    "time": "train_seconds",
}
DESCENDING = {"accuracy", "macro_f1"}
COLUMNS = ("run", "model", "method", "trainable", "accuracy", "macro-F1", "time", "status")


def find_runs(root: Path) -> list[Path]:
    """Folders under ``root`` (``root`` included) that hold a run.json, in path order."""
    found = []
    for folder, subdirs, files in os.walk(root):
        if "run.json" in files:
            found.append(Path(folder))
            subdirs.clear()  # a run folder's own subfolders (checkpoints, tokenizer) hold no runs
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    return sorted(found)


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _best_eval(path: Path) -> dict:
    """The last evaluation that improved in metrics.jsonl: the weights a running or interrupted run keeps."""
    best: dict = {}
    try:
        rows = read_metrics(path)
    except (OSError, ValueError):
        return best  # a listing shows what it can; the report names the damage
    for row in rows:
        if row.get("split") == "eval" and row.get("best", True):
            best = row
    return best


def _status(run: Path, info: dict) -> str:
    status = str(info.get("status", "unknown"))
    if status != "training":
        return status
    try:
        pid = int((run / ".lock").read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    return "training" if pid and process_alive(pid) else "interrupted"


def run_row(run: Path, root: Path) -> dict:
    """One row of the runs table, read from the run folder's files."""
    name = run.relative_to(root).as_posix() if run != root else run.resolve().name
    row = {"name": name, "path": str(run), "model": None, "method": None, "trainable": None, "total": None}
    row.update(budget=None, accuracy=None, macro_f1=None, train_seconds=None, status="unreadable")
    try:
        info = read_run_info(run).to_json()
    except UserError as exc:
        row["error"] = str(exc)
        return row
    plan = info.get("plan") or {}
    metrics = _json(run / "metrics.json")
    if not isinstance(metrics, dict):
        metrics = _best_eval(run / "metrics.jsonl")
    row.update(
        model=(info.get("model") or {}).get("name", plan.get("model")),
        method=plan.get("method"),
        trainable=plan.get("trainable"),
        total=plan.get("total"),
        budget=plan.get("budget"),
        accuracy=metrics.get("accuracy"),
        macro_f1=metrics.get("macro_f1"),
        train_seconds=info.get("train_seconds"),
        status=_status(run, info),
    )
    return row


def runs_table(root: Path) -> list[dict]:
    """Rows for every run folder under ``root``, in path order.

    Args:
        root: The folder to search (recursively) for run folders.

    Returns:
        One dict per run with keys name, path, model, method, trainable, total, budget, accuracy, macro_f1,
        train_seconds and status; values a run does not have yet are None.

    Raises:
        UserError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"DIR: folder '{root}' not found; pass the folder that holds your run folders")
    return [run_row(run, root) for run in find_runs(root)]


def sort_rows(rows: list[dict], sort: str = "name") -> list[dict]:
    """Rows sorted by a ``--sort`` key; metrics best first, rows without a value always last."""
    if sort not in SORT_KEYS:
        raise UserError(f"--sort: unknown key '{sort}'; use one of {', '.join(SORT_KEYS)}")
    key, desc = SORT_KEYS[sort], sort in DESCENDING
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    # Ties keep path order, so equal scores list the same way every time.
    return sorted(present, key=lambda r: r[key], reverse=desc) + missing


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def _cells(row: dict) -> list[str]:
    def pct(x):
        return "–" if x is None else f"{x * 100:.2f}%"

    return [
        row["name"],
        str(row["model"] or "–"),
        str(row["method"] or "–"),
        "–" if row["trainable"] is None else f"{row['trainable']:,}",
        pct(row["accuracy"]),
        pct(row["macro_f1"]),
        _duration(row["train_seconds"]),
        row["status"],
    ]


def format_runs_table(rows: list[dict], sort: str = "name") -> str:
    """A plain-text table of runs, sorted by ``sort`` (see :data:`SORT_KEYS`).

    Args:
        rows: Rows from :func:`runs_table`.
        sort: name, accuracy, macro_f1, trainable or time.

    Returns:
        The table; text columns left-aligned, numbers right-aligned.
    """
    rows = sort_rows(rows, sort)
    if not rows:
        return "no runs found (no folder with a run.json)"
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    right = {"trainable", "accuracy", "macro-F1", "time"}
    lines = [
        "  ".join(
            c.rjust(w) if COLUMNS[i] in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in cells
    ]
    return "\n".join(lines)
