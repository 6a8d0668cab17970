"""Figures of the run report, each drawn by its own function from plain run-folder data.

Each function returns a ``matplotlib.figure.Figure`` bound to the Agg canvas; ``png()`` turns it into bytes.
Working with ``Figure`` objects instead of ``pyplot`` keeps this module free of global state: no backend switch
(which would break a notebook's interactive backend), no figure registry to leak figures into, and rendering works
headless. Sizes grow with the number of classes; class names are shortened on axes only (the report's tables keep
them whole); short histories are drawn with markers so that a single logged point is still visible.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

# Parameter counts read better as 1,000,000 than as 1.0 with a 1e6 offset.
THOUSANDS = FuncFormatter(lambda x, _: f"{x:,.0f}")

TRAIN_COLOR, EVAL_COLOR, EXTRA_COLOR = "#1f77b4", "#d62728", "#2ca02c"
PART_COLORS = {"adapters": "#1f77b4", "biases": "#ff7f0e", "head": "#2ca02c", "other": "#9467bd"}
DPI = 110


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def short_name(name: str, width: int = 18) -> str:
    """Tick labels are shortened so a long class name cannot squeeze the plot; the tables keep full names.

    The middle goes, not the end: class names often share a prefix ("category 10", "category 11").
    """
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[-(width - 1 - head) :]


def empty_axes(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def fig_training_curves(history: list[dict], best_step: int | None = None) -> Figure:
    """Loss, accuracy (with evaluation macro-F1) and learning rate against optimizer steps."""
    train = [r for r in history if r.get("split") == "train"]
    evals = [r for r in history if r.get("split") == "eval"]
    fig = new_figure(12, 3.6)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    # Markers make a short run (a handful of logged points, or just one) visible; long runs read better as lines.
    mk = "o" if max(len(train), len(evals)) <= 30 else None

    def plot(ax, rows, key, label, color, style="-", marker=None):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
        if pts:
            ax.plot(*zip(*pts), style, marker=marker or mk, color=color, label=label, markersize=5, zorder=3)

    plot(ax_loss, train, "loss", "train (moving average)", TRAIN_COLOR)
    # Evaluations always get markers (a diamond for macro-F1, which often equals accuracy): a run evaluated once
    # has one point, and it sits on the kept-weights line, which is drawn beneath it.
    plot(ax_loss, evals, "loss", "validation", EVAL_COLOR, marker="o")
    plot(ax_acc, train, "accuracy", "train", TRAIN_COLOR)
    plot(ax_acc, evals, "accuracy", "validation accuracy", EVAL_COLOR, marker="o")
    plot(ax_acc, evals, "macro_f1", "validation macro-F1", EXTRA_COLOR, "--", marker="D")
    plot(ax_lr, train, "lr", "learning rate", "gray")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy / macro-F1"), (ax_lr, "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not ax.lines:
            empty_axes(ax, "nothing logged yet")
            continue
        if best_step is not None and ax is not ax_lr:
            ax.axvline(
                best_step,
                color="black",
                linestyle=":",
                linewidth=1,
                label=f"kept weights (step {best_step})",
                zorder=1,
            )
        ax.legend(fontsize=8)
        ax.set_xlim(left=0)  # steps count from zero; a lone point otherwise floats in a ±0.4 window
    if ax_acc.lines:
        ax_acc.set_ylim(0, 1.02)
    return fig


def fig_confusion_matrix(matrix: list[list[int]], labels: list[str]) -> Figure:
    """Counts, coloured by the share of each true class, so errors of small classes stay visible."""
    cm = np.asarray(matrix, dtype=float)
    n = len(labels)
    side = min(max(4.5, 0.55 * n + 2.5), 14)
    fig = new_figure(side + 1.2, side)
    ax = fig.subplots()
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    ticks = [short_name(x) for x in labels]
    ax.set_xticks(range(n), ticks, rotation=45 if max(map(len, ticks)) > 3 else 0, ha="right")
    ax.set_yticks(range(n), ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 25:  # beyond that the numbers no longer fit their cells
        size = 10 if n <= 10 else 7
        for i in range(n):
            for j in range(n):
                color = "white" if share[i, j] > 0.55 else "black"
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color=color, fontsize=size)
    return fig


def fig_token_lengths(lengths: dict) -> Figure:
    """Histogram of training-text lengths in tokens, with the chosen max length marked."""
    hist = np.asarray(lengths.get("histogram") or [], dtype=float)
    max_len = lengths.get("max_length")
    fig = new_figure(10, 3.6)
    ax = fig.subplots()
    if not hist.size:
        empty_axes(ax, "no token lengths recorded")
        return fig
    # A bincount can run to thousands of lengths; about 128 bars keep the shape readable at any length.
    width = max(1, int(np.ceil(hist.size / 128)))
    starts = np.arange(0, hist.size, width)
    ax.bar(starts, np.add.reduceat(hist, starts), width=width, align="edge", color=TRAIN_COLOR, alpha=0.85)
    if max_len is not None:
        truncated = lengths.get("truncated")
        note = (
            f" — {truncated:,} of {lengths.get('count', int(hist.sum())):,} truncated"
            if truncated is not None
            else ""
        )
        ax.axvline(max_len + 1, color=EVAL_COLOR, linewidth=2, label=f"max_length = {max_len}{note}")
        ax.legend()
    ax.set_xlabel("tokens per training text" + (f" (bars of {width})" if width > 1 else ""))
    ax.set_ylabel("texts")
    ax.set_xlim(0, max(hist.size, (max_len or 0) + 2))
    ax.grid(alpha=0.3, axis="y")
    return fig


def grouped_bars(ax, labels: list[str], series: list[tuple[str, list[float], str]], fmt: str) -> None:
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for k, (name, values, color) in enumerate(series):
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name, color=color)
        if len(labels) <= 12:
            ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
    ticks = [short_name(lab) for lab in labels]
    long = len(labels) > 8 or max(map(len, ticks)) > 8
    ax.set_xticks(x, ticks, rotation=45 if long else 0, ha="right" if long else "center")
    ax.margins(y=0.15)
    # Headroom above the tallest bar so the legend never covers a bar's value label.
    ax.set_ylim(top=ax.get_ylim()[1] * 1.2)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper center", ncol=len(series), fontsize=8, frameon=False)


def fig_label_distribution(data: dict, labels: list[str]) -> Figure:
    """Rows per class in the training and the validation split."""
    fig = new_figure(max(7, 0.6 * len(labels) + 3), 3.8)
    ax = fig.subplots()
    series = [
        (f"{name} ({sum(data[key]):,} rows)", data[key], color)
        for name, key, color in (
            ("train", "train_label_counts", TRAIN_COLOR),
            ("validation", "eval_label_counts", EVAL_COLOR),
        )
        if data.get(key)
    ]
    if not series:
        empty_axes(ax, "no label counts recorded")
        return fig
    grouped_bars(ax, labels, series, "{:,.0f}")
    ax.set_ylabel("rows")
    return fig


def fig_parameter_budget(plan: dict) -> Figure:
    """Trainable parameters by kind against the budget, and adapter parameters per layer."""
    per_layer = {int(k): v for k, v in (plan.get("adapters_per_layer") or {}).items()}
    fig = new_figure(12, 3.4)
    axes = fig.subplots(1, 2, width_ratios=[3, 2]) if per_layer else [fig.subplots()]
    ax = axes[0]
    left = 0
    for part in ("adapters", "biases", "head", "other"):
        n = plan.get(part) or (sum(per_layer.values()) if part == "adapters" else 0)
        if n:
            ax.barh(["trainable"], [n], left=left, color=PART_COLORS[part], label=f"{part} {n:,}")
            left += n
    budget, trainable, total = plan.get("budget"), plan.get("trainable", left), plan.get("total", 0)
    if budget:
        ax.axvline(budget, color="black", linewidth=2, linestyle="--", label=f"budget {budget:,}")
    ax.set_xlim(0, max(left, budget or 0) * 1.08 or 1)
    ax.set_xlabel("parameters")
    ax.xaxis.set_major_formatter(THOUSANDS)
    ax.set_title(f"trainable {trainable:,} of {total:,} ({trainable / max(total, 1):.3%})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.3), ncol=5, frameon=False)
    ax.grid(alpha=0.3, axis="x")
    if per_layer:
        layers = sorted(per_layer)
        axes[1].bar(layers, [per_layer[i] for i in layers], color=PART_COLORS["adapters"])
        axes[1].set_xlabel("layer")
        axes[1].set_ylabel("adapter parameters")
        axes[1].yaxis.set_major_formatter(THOUSANDS)
        axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[1].set_title("adapters per layer")
        axes[1].grid(alpha=0.3, axis="y")
    return fig


def fig_predicted_distribution(
    counts: dict[str, int], eval_counts: list[int] | None, labels: list[str]
) -> Figure:
    """Share of predictions per class, beside the validation split's share for comparison."""
    names = labels + [lab for lab in counts if lab not in labels]  # unknown labels are shown, not hidden
    total = max(sum(counts.values()), 1)
    series = [(f"predictions ({total:,} rows)", [counts.get(n, 0) / total for n in names], EXTRA_COLOR)]
    if eval_counts:
        share = [c / max(sum(eval_counts), 1) for c in eval_counts]
        series.append(("validation split", share + [0.0] * (len(names) - len(share)), EVAL_COLOR))
    fig = new_figure(max(7, 0.6 * len(names) + 3), 3.8)
    ax = fig.subplots()
    grouped_bars(ax, names, series, "{:.0%}")
    ax.set_ylabel("share of rows")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return fig


def fig_reliability(bins: dict[str, dict], temperature: float | None = None) -> Figure:
    """Reliability diagram (accuracy against confidence per bin, the diagonal is perfect calibration) and the rows'
    confidence histogram, for each set of bins given (e.g. before and after temperature scaling).

    Args:
        bins: Name → :func:`loraclf.inference.calibration.reliability_bins` (``edges``, ``count``,
            ``confidence``, ``accuracy``); drawn in the order given, the first in blue, the second in red.
        temperature: Shown in the title when given.
    """
    fig = new_figure(11, 4.0)
    ax, hist = fig.subplots(1, 2, width_ratios=[1, 1.2])
    colors = [TRAIN_COLOR, EVAL_COLOR, EXTRA_COLOR, "gray"]
    ax.plot([0, 1], [0, 1], ":", color="black", linewidth=1, label="perfect calibration")
    for k, (name, b) in enumerate(bins.items()):
        edges = np.asarray(b["edges"])
        full = [i for i, c in enumerate(b["count"]) if c]
        if not full:
            continue
        ax.plot(
            [b["confidence"][i] for i in full],
            [b["accuracy"][i] for i in full],
            "o-",
            color=colors[k % 4],
            label=name,
            markersize=4,
        )
        total = max(sum(b["count"]), 1)
        width = np.diff(edges)
        share = np.asarray(b["count"]) / total
        offset = (k - (len(bins) - 1) / 2) * width / (len(bins) + 0.5)
        hist.bar(
            edges[:-1] + width / 2 + offset, share, width / (len(bins) + 0.5), color=colors[k % 4], label=name
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("reliability" + (f" (temperature {temperature:.3g})" if temperature else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    hist.set_xlim(0, 1)
    hist.set_xlabel("confidence (top-class probability)")
    hist.set_ylabel("share of rows")
    hist.yaxis.set_major_formatter(PercentFormatter(1.0))
    hist.set_title("confidence histogram")
    hist.grid(alpha=0.3, axis="y")
    if hist.patches:
        hist.legend(fontsize=8, loc="upper left")
    else:
        empty_axes(hist, "no rows")
    return fig
