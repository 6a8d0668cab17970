"""The run report: one self-contained HTML page (plus PNG figures) built from a run folder alone.

``write_report(run)`` reads what training wrote and nothing else: ``run.json`` (model, data summary, token-length
histogram, parameter plan, environment, timings), ``labels.json``, ``metrics.jsonl`` (the history: ``train`` rows
with step, loss, accuracy, lr; ``eval`` rows with step, loss, accuracy, macro_f1) and ``metrics.json`` (final
metrics of the kept weights: per-class scores and the confusion matrix); ``evaluations/*.json`` (files scored by
``loraclf evaluate``, shown beside the validation split; see :mod:`loraclf.reporting.evaluations`); run.json's
``calibration`` gives the Calibration section (see :mod:`loraclf.reporting.calibration`). An optional
``ID,Label`` predictions file adds its predicted class distribution. Classes are shown by name: the training file's
label values, or ``data.label_names`` when the labels were numbers.

Every figure is drawn by its own function in :mod:`loraclf.reporting.figures` (Agg canvas, no pyplot state). The PNGs
are written to ``figures/`` and also embedded in ``report.html`` (see :mod:`loraclf.reporting.html`: inline CSS, no
scripts, fonts or links, so the page opens offline and can be mailed as one file). Every text that comes from the
folder is escaped. Files are written to a temporary name and moved into place with ``os.replace``, so a reader never
sees half a page.

A run that is still training has no ``metrics.json`` yet; its report says so in the sections that need it instead
of failing, so the page can be used to watch a run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from loraclf.reporting import calibration, evaluations, figures
from loraclf.reporting.html import atomic_write, esc, img, note, page, pct, section, table
from loraclf.reporting.run_files import load_run_files, named, read_predictions
from loraclf.utils.errors import UserError

# Every figure the report can write, in page order; stale ones (say, from an earlier --predictions) are removed.
FIGURES = (
    "training_curves",
    "confusion_matrix",
    "reliability",
    "token_lengths",
    "label_distribution",
    "parameter_budget",
    "predicted_distribution",
)


def _env_value(v) -> str:
    """Lists in run.json's environment (nondeterministic paths) read as prose; an empty one as "none"."""
    if isinstance(v, list):
        return "; ".join(map(str, v)) or "none"
    return str(v)


def _summary(r: dict) -> str:
    info, m, plan = r["info"], r["metrics"] or {}, r["info"]["plan"]
    data, env = info.get("data", {}), info.get("environment", {})
    secs, speed = info.get("train_seconds"), info.get("train_samples_per_s")
    budget = plan.get("budget")
    fits = (
        ""
        if budget is None
        else f" — budget {budget:,}, {'fits' if plan.get('fits', True) else 'OVER BUDGET'}"
    )
    rows = [
        ["model", info.get("model", {}).get("name", plan.get("model", "?"))],
        ["method", plan.get("method", "?")],
        [
            "trainable / total",
            f"{plan['trainable']:,} / {plan['total']:,} ({plan['trainable'] / max(plan['total'], 1):.3%}){fits}",
        ],
        ["validation accuracy", pct(m.get("accuracy"))],
        ["validation macro-F1", pct(m.get("macro_f1"))],
        *evaluations.summary_rows(r.get("evaluations", {})),
        ["validation rows", f"{m.get('n', data.get('n_eval', 0)):,} (train rows {data.get('n_train', 0):,})"],
        ["kept weights", f"step {info.get('best_step', m.get('best_step', '?'))} of {m.get('steps', '?')}"],
        ["train time", "–" if secs is None else f"{secs:,.1f} s"],
        ["samples/s", "–" if speed is None else f"{speed:,.1f}"],
        ["max length", info.get("max_length", "?")],
        ["status", info.get("status", "?")],
        ["validation data", data.get("validation") or data.get("eval_file") or "?"],
        ["environment", ", ".join(f"{k} {_env_value(v)}" for k, v in env.items()) or "?"],
        ["loraclf", info.get("loraclf_version", "?")],
    ]
    note = ""
    if data.get("eval_texts_seen_in_train"):
        note = (
            f'<p class="warn">{data["eval_texts_seen_in_train"]:,} validation texts also occur in the training '
            "rows; the validation scores are optimistic.</p>"
        )
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary"><tbody>{body}</tbody></table>{note}'


def _per_class(m: dict, labels: list[str], names: dict[str, str]) -> str:
    pc = m["per_class"]
    rows = [
        [
            names.get(n, n),
            f"{pc[n]['precision']:.4f}",
            f"{pc[n]['recall']:.4f}",
            f"{pc[n]['f1']:.4f}",
            f"{pc[n]['support']:,}",
        ]
        for n in m.get("labels", labels)
        if n in pc
    ]
    means = [np.mean([pc[n][k] for n in pc]) for k in ("precision", "recall", "f1")]
    rows.append(
        ["macro average", *(f"{v:.4f}" for v in means), f"{sum(c['support'] for c in pc.values()):,}"]
    )
    return table(["class", "precision", "recall", "F1", "support"], rows)


def _budget(plan: dict) -> str:
    budget = plan.get("budget")
    share = (lambda n: f"{n / budget:.1%}") if budget else (lambda n: "–")
    rows = [
        [part, f"{plan.get(part, 0):,}", share(plan.get(part, 0))]
        for part in ("adapters", "biases", "head", "other")
    ]
    rows.append(["trainable", f"{plan['trainable']:,}", share(plan["trainable"])])
    rows.append(["total (trainable + frozen)", f"{plan['total']:,}", ""])
    verdict = "no budget set"
    if budget:
        left = budget - plan["trainable"]
        verdict = f"budget {budget:,}: " + (f"fits, {left:,} to spare" if left >= 0 else f"OVER by {-left:,}")
    cls = "over" if budget and plan["trainable"] > budget else "note"
    return table(["part", "parameters", "share of budget"], rows) + f'<p class="{cls}">{esc(verdict)}</p>'


def _time_budget(plan: dict) -> str:
    """Planned against actual seconds per phase of a time-budgeted run (run.json ``time_plan``)."""
    actual = plan.get("actual", {})
    training = plan["estimated_seconds"] - plan["setup_seconds"] - plan["finish_seconds"]
    phases = [
        ("setup (reading, tokenising, model, warm-up)", plan["setup_seconds"], actual.get("setup")),
        ("training (steps, evaluations, checkpoints)", training, actual.get("training")),
        ("finishing (final evaluation, calibration, int8 export, report)", plan["finish_seconds"],
         actual.get("finishing")),
        ("whole command", plan["estimated_seconds"], actual.get("total")),
    ]  # fmt: skip

    def secs(v):
        return "–" if v is None else f"{v:,.1f}"

    rows = [[name, secs(planned), secs(done)] for name, planned, done in phases]
    cuts = plan.get("replans") or []
    lines = [
        f"budget {plan['budget_seconds']:,.0f} s: {plan['steps']:,} steps planned at {plan['samples_per_s']:,.1f} "
        f"samples/s, {plan['evaluations']} evaluation(s), {plan['rows']:,} training rows"
        + (" (a stratified sample)" if plan.get("sampled") else "")
        + f", safety margin {plan['margin_seconds']:,.1f} s.",
        *(f"re-planned at step {c['step']:,} ({c['elapsed']:,.1f} s): {c['steps']:,} steps." for c in cuts),
    ]
    if actual.get("finishing") is None:
        lines.append("The finishing and whole-command times are recorded after this page is drawn; "
                     "`loraclf report RUN` redraws it with them.")  # fmt: skip
    return table(["phase", "planned s", "actual s"], rows) + "".join(note(x) for x in lines)


def build_figures(r: dict, predictions: list[str] | None = None) -> dict[str, bytes]:
    """PNG bytes of every figure of the report, keyed by file stem (the section order of the page)."""
    info, m, labels = r["info"], r["metrics"], r["labels"]
    figs = {"training_curves": figures.fig_training_curves(r["history"], info.get("best_step"))}
    if m:
        figs["confusion_matrix"] = figures.fig_confusion_matrix(
            m["confusion_matrix"], named(r, m.get("labels", labels))
        )
    figs.update(evaluations.build(r.get("evaluations", {}), lambda xs: named(r, xs)))
    figs.update(calibration.build(info.get("calibration")))
    figs["token_lengths"] = figures.fig_token_lengths(info.get("token_lengths", {}))
    figs["label_distribution"] = figures.fig_label_distribution(info.get("data", {}), named(r, labels))
    figs["parameter_budget"] = figures.fig_parameter_budget(info["plan"])
    if predictions is not None:
        counts = Counter(predictions)
        eval_counts = info.get("data", {}).get("eval_label_counts")
        counts = {r["names"].get(k, k): v for k, v in counts.items()}
        figs["predicted_distribution"] = figures.fig_predicted_distribution(
            counts, eval_counts, named(r, labels)
        )
    return {name: figures.png(fig) for name, fig in figs.items()}


def _confusion_section(r: dict, pngs: dict[str, bytes], pending: str) -> str:
    """Validation's confusion matrix, then one per file recorded by `loraclf evaluate`."""
    validation = (
        img(
            pngs["confusion_matrix"],
            "confusion matrix",
            "Rows are true classes, columns predicted ones, on the validation rows; colour is the share of the row.",
        )
        if r["metrics"]
        else note(pending)
    )
    others = [
        img(pngs[f"confusion_matrix_{stem}"], f"confusion matrix on {stem}", evaluations.caption(e))
        for stem, e in r.get("evaluations", {}).items()
    ]
    return section("Confusion matrix", validation, *others)


def _predictions_section(pngs: dict[str, bytes], predictions: list[str], labels: list[str], name: str) -> str:
    """The predicted class distribution of a ``--predictions`` file, with a warning for unknown labels."""
    unknown = sum(1 for p in predictions if p not in labels)
    warn = f'<p class="warn">{unknown:,} predictions are not in the run\'s label map.</p>' if unknown else ""
    caption = (
        f"Share of predicted classes in {name} ({len(predictions):,} rows), beside the validation split."
    )
    return section(
        "Predicted class distribution",
        img(pngs["predicted_distribution"], "predicted class distribution", caption),
        warn,
    )


def render_html(
    r: dict, pngs: dict[str, bytes], predictions: list[str] | None = None, pred_name: str = ""
) -> str:
    """The report page; ``pngs`` are embedded, so the page needs no other file."""
    info, m, labels = r["info"], r["metrics"], r["labels"]
    pending = "not available yet: metrics.json is written when training completes"
    tl = info.get("token_lengths", {})
    sections = [
        section("Summary", _summary(r)),
        section(
            "Training curves",
            img(
                pngs["training_curves"],
                "training curves",
                "Loss, accuracy and learning rate per optimizer step (metrics.jsonl); the dotted line marks the "
                "evaluation whose weights were kept.",
            ),
        ),
        _confusion_section(r, pngs, pending),
        section("Per-class metrics", _per_class(m, labels, r["names"]) if m else note(pending)),
        calibration.render(info.get("calibration"), pngs.get("reliability"), m is not None),
        section(
            "Token lengths",
            img(
                pngs["token_lengths"],
                "token length histogram",
                f"Training texts by length in tokens; max_length {tl.get('max_length', '?')} is the "
                f"{tl.get('quantile', '?')} quantile (median {tl.get('median', '?')}, longest {tl.get('max', '?')}).",
            ),
        ),
        section(
            "Label distribution",
            img(
                pngs["label_distribution"],
                "label distribution",
                "Rows per class in the training and validation splits.",
            ),
        ),
        section(
            "Parameter budget",
            img(
                pngs["parameter_budget"],
                "parameter budget",
                "Trainable parameters by kind against the budget.",
            ),
            _budget(info["plan"]),
        ),
    ]
    if info.get("time_plan"):
        sections.append(section("Time budget", _time_budget(info["time_plan"])))
    if predictions is not None:
        sections.append(_predictions_section(pngs, predictions, labels, pred_name))
    if r.get("recipe"):
        sections.append(section("Recipe", f"<pre>{esc(r['recipe'])}</pre>"))
    return page(f"loraclf run: {r['name']}", sections)


def write_report(run_dir: Path, predictions: Path | None = None) -> Path:
    """Write ``report.html`` and ``figures/*.png`` into a run folder.

    Args:
        run_dir: A run folder written by ``loraclf train`` (finished or still training).
        predictions: Optional ``ID,Label`` CSV whose predicted class distribution is added to the report.

    Returns:
        The path of the written ``report.html``.

    Raises:
        UserError: The folder is missing or not a run folder, or the predictions file is missing or has no
            Label column.
    """
    r = load_run_files(Path(run_dir))
    preds = read_predictions(Path(predictions), r["labels"]) if predictions is not None else None
    pngs = build_figures(r, preds)
    run = Path(run_dir)
    try:
        (run / "figures").mkdir(exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"RUN: cannot create '{run / 'figures'}' ({exc.strerror}); make the run folder writable"
        ) from None
    for old in (run / "figures").glob("*.png"):
        if old.stem not in pngs and (old.stem in FIGURES or old.stem.startswith("confusion_matrix_")):
            old.unlink(missing_ok=True)  # stale: from an earlier --predictions or a removed evaluation
    for name, png in pngs.items():
        atomic_write(run / "figures" / f"{name}.png", png)
    text = render_html(r, pngs, preds, Path(predictions).name if predictions is not None else "")
    atomic_write(run / "report.html", text.encode("utf-8"))
    return run / "report.html"
