"""Figures of the ``loraclf shift`` page, each drawn from ``shift.json`` alone (see :mod:`loraclf.toolbox.shift`).

Like :mod:`loraclf.reporting.figures`, each function returns a ``Figure`` on the Agg canvas (no pyplot state).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from loraclf.reporting.figures import (
    EVAL_COLOR,
    EXTRA_COLOR,
    TRAIN_COLOR,
    empty_axes,
    fig_reliability,
    grouped_bars,
    new_figure,
)

WARN_COLOR = "#bbbbbb"


def _share_bars(ax, edges: np.ndarray, series: list[tuple[str, list[int], str]]) -> None:
    """Side-by-side bars of each series' share of rows per bin."""
    width = np.diff(edges)
    k = len(series)
    for j, (name, counts, color) in enumerate(series):
        share = np.asarray(counts, dtype=float) / max(sum(counts), 1)
        offset = (j - (k - 1) / 2) * width / (k + 0.5)
        ax.bar(edges[:-1] + width / 2 + offset, share, width / (k + 0.5), color=color, label=name)
    ax.set_xlim(edges[0], edges[-1])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("share of rows")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def fig_atypicality(result: dict) -> Figure:
    """How typical the file's rows are: the domain classifier's out-of-fold probability of "file", training
    rows against the file's."""
    fig = new_figure(9, 3.6)
    ax = fig.subplots()
    hist = result["domain"]["histogram"]
    if result.get("auc") is None:
        empty_axes(ax, "no domain classifier (the training texts could not be read)")
        return fig
    edges = np.linspace(0, 1, len(hist["input"]) + 1)
    _share_bars(
        ax,
        edges,
        [("training rows", hist["training"], TRAIN_COLOR), ("input rows", hist["input"], EVAL_COLOR)],
    )
    ax.axvline(0.5, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel(
        "atypicality: out-of-fold probability that a row is from the input file (0.5 = no evidence)"
    )
    ax.set_title(
        f"domain classifier ROC AUC {result['auc']:.3f} (0.5: indistinguishable, 1: fully separable)"
    )
    return fig


def fig_confidence(result: dict) -> Figure:
    """Top-class probability after temperature scaling: validation rows against the file's rows."""
    fig = new_figure(9, 3.6)
    ax = fig.subplots()
    cal = result["calibration"]
    val, inp = cal.get("validation_bins", {}).get("after"), cal["input_bins"]["after"]
    series = [("input rows", inp["count"], EVAL_COLOR)]
    if val:
        series.insert(0, ("validation rows", val["count"], TRAIN_COLOR))
    _share_bars(ax, np.asarray(inp["edges"]), series)
    means = cal["validation_mean_confidence"]["after"], result["estimated_accuracy"]["average_confidence"]
    for mean, color, name in zip(means, (TRAIN_COLOR, EVAL_COLOR), ("validation", "input")):
        ax.axvline(mean, color=color, linestyle="--", linewidth=1.5, label=f"{name} mean {mean:.1%}")
    ax.legend(fontsize=8, loc="upper left")
    lo = min(i for i, c in enumerate(inp["count"]) if c) if any(inp["count"]) else 0
    ax.set_xlim(min(lo / len(inp["count"]), 0.5), 1)
    ax.set_xlabel(f"confidence (top-class probability at temperature {cal['temperature']:.3g})")
    ax.set_title("confidence: a model that noticed the shift is less sure on the input")
    return fig


def fig_class_mix(result: dict) -> Figure:
    """Predicted class shares on the file beside the training shares and EM's estimate of the file's priors."""
    labels = list(result["class_mix"])
    series = [
        (name, [result[key].get(lab, 0.0) for lab in labels], color)
        for name, key, color in (
            ("training", "training_class_mix", TRAIN_COLOR),
            ("predicted on input", "class_mix", EVAL_COLOR),
            ("estimated input priors (EM)", "estimated_priors", EXTRA_COLOR),
        )
        if result.get(key)
    ]
    fig = new_figure(max(7, 0.6 * len(labels) + 3), 3.8)
    ax = fig.subplots()
    grouped_bars(ax, labels, series, "{:.0%}")
    ax.set_ylabel("share of rows")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return fig


def fig_validation_reliability(result: dict) -> Figure:
    """The validation rows' reliability diagram (the file has no labels): what the temperature corrected."""
    bins = result["calibration"].get("validation_bins") or {}
    named = {"raw softmax": bins.get("before"), "temperature-scaled": bins.get("after")}
    return fig_reliability({k: v for k, v in named.items() if v}, result["calibration"]["temperature"])


def fig_slices(result: dict) -> Figure:
    """Expected accuracy per atypicality slice (ATC and DoC with 95% bootstrap intervals, after temperature
    scaling), validation accuracy for reference; slices where the estimate is not trustworthy are greyed."""
    slices = result["slices"]
    fig = new_figure(max(7, 1.6 * len(slices) + 3), 4.0)
    ax = fig.subplots()
    x = np.arange(len(slices))
    for k, (key, name, color) in enumerate((("atc", "ATC", TRAIN_COLOR), ("doc", "DoC", EXTRA_COLOR))):
        y = np.array([s["after"][key] for s in slices])
        lo = y - np.array([s["after"]["intervals"][key][0] for s in slices])
        hi = np.array([s["after"]["intervals"][key][1] for s in slices]) - y
        ax.errorbar(x + (k - 0.5) * 0.2, y, yerr=[lo, hi], fmt="o", color=color, capsize=4, label=name)
    val = result["estimated_accuracy"]["validation_accuracy"]
    ax.axhline(val, color=EVAL_COLOR, linestyle="--", linewidth=1, label=f"validation accuracy {val:.1%}")
    for i, s in enumerate(slices):
        if not s["trustworthy"]:
            ax.axvspan(i - 0.45, i + 0.45, color=WARN_COLOR, alpha=0.5, zorder=0)
            ax.text(i, 0.02, "not trustworthy", ha="center", va="bottom", fontsize=8, color="#a33",
                    transform=ax.get_xaxis_transform())  # fmt: skip
    names = [f"{s['name']}\n{s['rows']:,} rows, atyp. {s['mean_atypicality']:.2f}" for s in slices]
    ax.set_xticks(x, names, fontsize=8)
    ax.set_xlim(-0.6, len(slices) - 0.4)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("expected accuracy")
    ax.set_title("expected accuracy by atypicality of the input rows (95% bootstrap intervals)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower left")
    return fig


def build(result: dict) -> dict[str, Figure]:
    """Every figure of the page, keyed by file stem, in page order."""
    figs = {"atypicality": fig_atypicality(result), "confidence": fig_confidence(result)}
    figs["class_mix"] = fig_class_mix(result)
    if result["calibration"].get("validation_bins"):
        figs["reliability"] = fig_validation_reliability(result)
    figs["slices"] = fig_slices(result)
    return figs
