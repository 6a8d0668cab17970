"""Scores on other files in the run report: what ``loraclf evaluate RUN --data FILE`` recorded.

``evaluate`` on a single run writes ``RUN/evaluations/<file name>.json`` (see
:func:`loraclf.runfolder.schema.write_evaluation`): the same metrics as ``metrics.json`` (accuracy, macro-F1,
per-class scores, confusion matrix) for that file. The report lists each file's scores in the Summary beside the
validation split's, and draws its confusion matrix next to validation's, so a shifted test set is seen at once.
"""

from __future__ import annotations

from loraclf.reporting import figures


def summary_rows(evaluations: dict[str, dict]) -> list[list[str]]:
    """Summary rows "<file> accuracy" and "<file> macro-F1" for each recorded evaluation."""
    rows = []
    for stem, e in evaluations.items():
        rows.append(
            [f"{stem} accuracy", f"{e['accuracy'] * 100:.2f}% ({e.get('n', '?'):,} rows of {e['data']})"]
        )
        rows.append([f"{stem} macro-F1", f"{e['macro_f1'] * 100:.2f}%"])
    return rows


def build(evaluations: dict[str, dict], display) -> dict:
    """Confusion-matrix figures of the recorded evaluations, keyed ``confusion_matrix_<file name>``.

    Args:
        evaluations: The recorded evaluations by file name.
        display: Maps the run's label values (as strings) to the names shown (see ``data.label_names``).
    """
    return {
        f"confusion_matrix_{stem}": figures.fig_confusion_matrix(
            e["confusion_matrix"], display(e.get("labels", []))
        )
        for stem, e in evaluations.items()
    }


def caption(e: dict) -> str:
    """The caption of an evaluation's confusion matrix (plain text: the page escapes it)."""
    return (
        f"On {e['data']} ({e.get('n', '?'):,} rows, recorded by `loraclf evaluate`): rows are "
        "true classes, columns predicted ones; colour is the share of the row."
    )
