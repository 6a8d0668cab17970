"""Reading a run folder for the report: run.json, labels, metrics, history, recorded evaluations, display names.

Everything the report shows comes through :func:`load_run_files`, from the folder alone. A torn last line of
``metrics.jsonl`` (a run killed mid-write) is dropped; damage elsewhere is one error naming the file. Classes are
shown by name: the training file's label values, or ``data.label_names`` (in class order) when those were numbers.
"""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

from loraclf.runfolder.metrics_log import read_metrics
from loraclf.runfolder.schema import read_evaluations, read_labels, read_recipe, read_run_info
from loraclf.utils.errors import UserError, short_list


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"RUN: cannot read '{path}' ({exc}); the run folder is damaged, retrain it") from None


def read_history(path: Path) -> list[dict]:
    """The run's history from metrics.jsonl (see :func:`loraclf.runfolder.metrics_log.read_metrics`).

    Raises:
        UserError: a line other than the last is not JSON (the folder is damaged).
    """
    if not path.is_file():
        return []
    try:
        return read_metrics(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"RUN: cannot read '{path}' ({exc}); the run folder is damaged, retrain it") from None
    except ValueError as exc:
        raise UserError(f"RUN: '{path}' {exc}; the run folder is damaged, retrain it") from None


def check_report_folder(run: Path) -> None:
    """A folder with a run.json: enough for a report (a run still training has no metrics.json yet).

    Raises:
        UserError: the folder is missing or has no run.json.
    """
    hint = "pass the --out folder of a `loraclf train` run"
    if not run.is_dir():
        raise UserError(f"RUN: run folder '{run}' not found; {hint}")
    if not (run / "run.json").is_file():
        raise UserError(f"RUN: '{run}' is not a loraclf run folder (no run.json); {hint}")


def load_run_files(run_dir: Path) -> dict:
    """Everything the report shows, read from the run folder: info, labels, metrics (or None), history."""
    run = Path(run_dir)
    check_report_folder(run)
    try:
        info = read_run_info(run).to_json()
        labels = [str(x) for x in read_labels(run)]
    except UserError as exc:
        raise UserError(f"RUN: {exc}") from None
    metrics = _read_json(run / "metrics.json") if (run / "metrics.json").is_file() else None
    return {
        "name": run.resolve().name,
        "info": info,
        "labels": labels,
        "names": _display_names(run, labels),
        "metrics": metrics,
        "history": read_history(run / "metrics.jsonl"),
        "recipe": _read_text(run / "recipe.yaml"),
        "evaluations": read_evaluations(run),
    }


def _display_names(run: Path, labels: list[str]) -> dict[str, str]:
    """Label value → the name shown: ``data.label_names`` for numeric labels (``1`` → ``World``), else itself."""
    names = None
    with contextlib.suppress(UserError):  # a damaged recipe only loses the names; the report shows it as text
        names = read_recipe(run).data.label_names
    if names and len(names) == len(labels):
        return {label: str(name) for label, name in zip(labels, names)}
    return {label: label for label in labels}


def named(r: dict, labels: list) -> list[str]:
    """The display names of label values (see :func:`_display_names`)."""
    return [r["names"].get(str(x), str(x)) for x in labels]


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def read_predictions(path: Path, labels: list[str]) -> list[str]:
    """The Label column of an ``ID,Label`` CSV (as written by ``loraclf predict``), as strings; a file without an
    ID column, or with no label in the run's ``labels``, is not a prediction of this run and is refused."""
    path = Path(path)
    hint = "pass the ID,Label CSV written by `loraclf predict --output`"
    if not path.is_file():
        raise UserError(f"--predictions: file '{path}' not found; {hint}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            col = next((i for i, h in enumerate(header) if h.strip().lower() == "label"), None)
            if col is None:
                raise UserError(
                    f"--predictions: '{path}' has no Label column (columns: {short_list(header) or 'none'}); {hint}"
                )
            values = [row[col] for row in reader if len(row) > col]
    except UnicodeDecodeError:
        raise UserError(f"--predictions: '{path}' is not a UTF-8 text file; {hint}") from None
    if not values:
        raise UserError(f"--predictions: '{path}' has a header but no rows; {hint}")
    if not any(h.strip().lower() == "id" for h in header):
        raise UserError(f"--predictions: '{path}' has no ID column, so it is not a prediction file; {hint}")
    if not set(values) & set(labels):
        raise UserError(
            f"--predictions: no label of '{path}' is one of this run's ({short_list(labels)}); it was written by "
            f"a run with another label set; {hint}"
        )
    return values  # a few labels outside the run's set are shown and counted in the report, not hidden
