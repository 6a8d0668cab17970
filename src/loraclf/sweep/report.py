"""The sweep report: ``DIR/report.html``, one self-contained page about a whole study.

It holds a summary (study, storage, metric, trials by state, the best trial and its settings, the space), the
leaderboard with a link from every trial to its own run report (``trials/trial-NNNN/report.html``, by relative
path, so the folder can be moved or copied whole), Optuna's figures, and the ``--top K --seeds`` table when there
is one. The figures come from ``optuna.visualization.matplotlib``: the optimisation history, the intermediate
values (where pruning shows: pruned curves end early), the parameter importances (fANOVA, seeded), the slice plot
and the parallel coordinates. They are rendered to PNG and embedded as base64 ``data:`` URIs as in the run report
(:mod:`loraclf.report`), and also written to ``DIR/figures/``. Optuna draws with pyplot and sets a global style, so
each figure is drawn inside ``matplotlib.rc_context`` (the style is undone) and closed after saving. A figure that
cannot be drawn yet (importances need two finished trials) gets a one-line note instead.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import warnings
from pathlib import Path

from loraclf.reporting.html import CSS
from loraclf.utils.files import atomic_write_bytes

FIGURES = {
    "optimization_history": (
        "Optimisation history",
        "The metric of every finished trial and the best so far; pruned and over-budget trials have no final value.",
    ),
    "intermediate_values": (
        "Intermediate values",
        "The metric at each evaluation of every trained trial; curves that stop early were pruned there.",
    ),
    "param_importances": (
        "Parameter importances",
        "How much of the metric's variance each searched key explains (fANOVA over the finished trials).",
    ),
    "slice": (
        "Slice plot",
        "The metric of every finished trial against each searched key; colour is the trial number.",
    ),
    "parallel_coordinate": (
        "Parallel coordinates",
        "Each finished trial as a line through its values of the searched keys, coloured by the metric.",
    ),
}


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def build_figures(study, metric: str) -> dict[str, bytes | str]:
    """PNG bytes of each figure, or the reason it could not be drawn."""
    import matplotlib
    import matplotlib.pyplot as plt  # Optuna's matplotlib plots are drawn through pyplot
    import numpy as np
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    draw = {
        "optimization_history": lambda: ovm.plot_optimization_history(study, target_name=metric),
        "intermediate_values": lambda: ovm.plot_intermediate_values(study),
        "param_importances": lambda: ovm.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0), target_name=metric
        ),
        "slice": lambda: ovm.plot_slice(study, target_name=metric),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study, target_name=metric),
    }
    out: dict[str, bytes | str] = {}
    for name, plot in draw.items():
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's "experimental" and "no trials" warnings
            try:
                axes = plot()
            except (
                Exception
            ) as exc:  # a figure that cannot be drawn yet must not take the sweep's results down
                out[name] = f"not drawn: {str(exc).strip() or type(exc).__name__}"
                continue
            fig = np.asarray(axes).flat[0].figure
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        out[name] = buf.getvalue()
    return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A table of cells that are already HTML (escaped text or links)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value, percent: bool = False) -> str:
    if value in ("", None):
        return "–"
    if isinstance(value, float):
        return f"{value:.2%}" if percent else f"{value:.4g}"
    return esc(f"{value:,}" if isinstance(value, int) else value)


def _link(out: Path, row: dict) -> str:
    """The trial number, linking the trial's own report when it is in this folder."""
    page = Path(row["run_folder"]) / "report.html" if row.get("run_folder") else None
    if page is None or not page.is_file():
        return esc(row["trial"])
    rel = os.path.relpath(page, out).replace(os.sep, "/")
    return f'<a href="{esc(rel)}">{esc(row["trial"])}</a>'


def _summary(study, rows: list[dict], metric: str, space, storage: str) -> str:
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    best = next((r for r in rows if r["state"] == "complete"), None)
    items = [
        ("study", study.study_name),
        ("storage", storage),
        ("metric", f"{metric} ({study.direction.name.lower()})"),
        (
            "trials",
            f"{len(rows)}: " + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(states.items())),
        ),
        (
            "best trial",
            f"{best['trial']}: {metric} {_cell(best[metric], metric != 'loss')}" if best else "none yet",
        ),
    ]
    if best:
        items += [(f"  {d.key}", _cell(best.get(d.key, ""))) for d in space]
        items.append(("  trainable", _cell(best["trainable"])))
    items += [(f"space: {d.key}", d.describe()) for d in space]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<table class="summary"><tbody>{body}</tbody></table>'


def _leaderboard(out: Path, rows: list[dict], keys: list[str], metric: str) -> str:
    from loraclf.sweep.space import metric_columns

    mcols = metric_columns(metric)
    header = ["trial", "state", "method", *keys, "trainable", *mcols, "train s", "note"]
    body = [
        [_link(out, r), esc(r["state"]), esc(r["method"])]
        + [_cell(r.get(k, "")) for k in keys]
        + [_cell(r["trainable"])]
        + [_cell(r[m], m != "loss") for m in mcols]
        + [_cell(r["train_seconds"]), esc(r["note"])]
        for r in rows
    ]
    note = '<p class="note">Trial numbers link to each run\'s own report.</p>'
    return _table(header, body) + note


def _top(out: Path) -> str:
    """The --top K --seeds table that `loraclf compare` wrote, when there is one."""
    path = out / "top" / "leaderboard.csv"
    if not path.is_file():
        return ""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return ""
    metrics = [k for k in rows[0] if k.endswith(("accuracy", "macro_f1")) and not k.endswith("_std")]

    def pm(r, k):
        std = r.get(f"{k}_std")
        return f"{float(r[k]):.2%}" + (f" ± {float(std) * 100:.2f}" if std else "")

    body = [[esc(r["name"]), esc(r["trainable"]), *(pm(r, k) for k in metrics)] for r in rows]
    caption = (
        '<p class="note">Mean ± standard deviation (points) over the seeds; from top/leaderboard.csv.</p>'
    )
    return (
        "<section><h2>Best trials retrained over seeds</h2>"
        + _table(["trial", "trainable", *metrics], body)
        + caption
        + "</section>"
    )


def write_sweep_report(
    out: Path, study, rows: list[dict], keys: list[str], metric: str, space, storage: str
) -> Path:
    """Write ``DIR/report.html`` and ``DIR/figures/*.png`` for a study.

    Args:
        out: The sweep folder.
        study: The Optuna study.
        rows: Leaderboard rows (:func:`loraclf.sweep.leaderboard`), best first.
        keys: The searched keys, in column order.
        metric: The metric the study optimises.
        space: The distributions (:func:`loraclf.sweep_space.parse_space`).
        storage: The storage as shown to users (password hidden).

    Returns:
        The path of the written page.
    """
    out = Path(out)
    pngs = build_figures(study, metric)
    (out / "figures").mkdir(exist_ok=True)
    sections = [
        f"<section><h2>Summary</h2>{_summary(study, rows, metric, space, storage)}</section>",
        f"<section><h2>Leaderboard</h2>{_leaderboard(out, rows, keys, metric)}</section>",
        _top(out),
    ]
    for name, (title, caption) in FIGURES.items():
        png = pngs[name]
        if isinstance(png, bytes):
            _atomic_write(out / "figures" / f"{name}.png", png)
            data = base64.b64encode(png).decode("ascii")
            body = f'<figure><img src="data:image/png;base64,{data}" alt="{esc(title)}"><figcaption>{esc(caption)}</figcaption></figure>'
        else:
            (out / "figures" / f"{name}.png").unlink(missing_ok=True)
            body = f'<p class="note">{esc(png)}</p>'
        sections.append(f"<section><h2>{esc(title)}</h2>{body}</section>")
    title = f"loraclf sweep: {study.study_name}"
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body><h1>{esc(title)}</h1>{''.join(sections)}</body></html>\n"
    )
    _atomic_write(out / "report.html", page.encode("utf-8"))
    return out / "report.html"


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file then os.replace: a reader (or a second worker writing the same page) never sees half a file."""
    atomic_write_bytes(path, data)
