"""The Calibration section of the run report: what temperature scaling did on the validation rows.

Training fits one temperature T on the validation rows and keeps it in ``run.json`` as ``calibration`` (see
:mod:`loraclf.inference.calibration`); ``evaluate`` and ``predict`` apply it. The section shows T, the expected
calibration error (ECE, 15 equal-width confidence bins) and the negative log-likelihood before and after, and the
reliability diagram of both. Runs trained before calibration existed have no record: the section says so.
"""

from __future__ import annotations

from loraclf.reporting import figures
from loraclf.reporting.html import img, note, pct, section, table

CAPTION = (
    "Left: accuracy of the validation rows in each confidence bin against their mean confidence; on the dotted "
    "diagonal a model's confidence is its accuracy, below it the model is over-confident. Right: how the rows' "
    "confidences spread. Blue: the raw softmax; red: after temperature scaling (what evaluate and predict report)."
)


def build(record: dict | None) -> dict:
    """The reliability figure (key ``reliability``) of a run's calibration record; none without a record."""
    if not record or not isinstance(record.get("bins"), dict):
        return {}
    b = record["bins"]
    named = {"raw softmax": b.get("before"), "temperature-scaled": b.get("after")}
    return {
        "reliability": figures.fig_reliability(
            {k: v for k, v in named.items() if v}, record.get("temperature")
        )
    }


def render(record: dict | None, png: bytes | None, finished: bool) -> str:
    """The section's HTML: a table of T, ECE and NLL before and after, and the reliability diagram.

    Args:
        record: run.json's ``calibration`` (None or empty when the run has none).
        png: The reliability figure from :func:`build`.
        finished: Whether training completed (a run still training has no temperature yet).
    """
    if not record:
        why = (
            "this run was trained before loraclf kept a temperature: evaluate and predict give the raw softmax "
            "(T = 1)"
            if finished
            else "not available yet: the temperature is fitted when training completes"
        )
        return _section(note(why))
    t = record.get("temperature")
    rows = [
        ["expected calibration error", pct(record.get("ece_before")), pct(record.get("ece_after"))],
        ["negative log-likelihood", _num(record.get("nll_before")), _num(record.get("nll_after"))],
    ]
    parts = [
        note(
            f"Temperature {t:.4g}, fitted on {record.get('n', 0):,} validation rows by minimising the negative "
            "log-likelihood of softmax(logits / T). Probabilities of evaluate and predict are scaled by it "
            "(predict --no-calibration gives the raw ones); the predicted labels are the same either way."
        ),
        table(["on the validation rows", "raw softmax", f"temperature {t:.3g}"], rows),
    ]
    if record.get("note"):
        parts.append(note(f"Note: {record['note']}.", "warn"))
    if png is not None:
        parts.append(img(png, "reliability diagram", CAPTION))
    return _section(*parts)


def _section(*parts: str) -> str:
    return section("Calibration", *parts)


def _num(x) -> str:
    return "–" if x is None else f"{x:.4f}"
