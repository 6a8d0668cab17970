"""The ``loraclf shift`` outputs: the printed summary and the HTML page (``shift.html`` + ``figures/*.png``).

Both are drawn from the ``shift.json`` result alone (see :func:`loraclf.toolbox.shift.analyse`). Where the estimate
is not trustworthy, neither shows it as a plain number: the summary prints "NOT TRUSTWORTHY" beside it and the
page greys the slice, each with the reason.
"""

from __future__ import annotations

from pathlib import Path

from loraclf.reporting import figures, shift_figures
from loraclf.reporting.html import atomic_write, esc, img, note, page, section, table

STATS = (  # (key, label, format) of the side-by-side text statistics, in print order
    ("rows", "rows measured", "{:,.0f}"),
    ("words_mean", "words per row (mean)", "{:.1f}"),
    ("words_median", "words per row (median)", "{:.0f}"),
    ("tokens_mean", "tokens per row (mean)", "{:.1f}"),
    ("tokens_median", "tokens per row (median)", "{:.0f}"),
    ("over_max_length", "rows over max_length", "{:.1%}"),
    ("unknown_token_rate", "unknown-token rate", "{:.2%}"),
    ("non_word_rate", "non-word rate", "{:.2%}"),
    ("vocabulary_overlap", "vocabulary overlap", "{:.1%}"),
    ("digit_rate", "digit rate", "{:.2%}"),
    ("punctuation_rate", "punctuation rate", "{:.2%}"),
    ("empty_rows", "empty rows", "{:,.0f}"),
)
UNTRUSTED = "NOT TRUSTWORTHY"


def stats_rows(stats: dict | None) -> list[list[str]]:
    """``[statistic, training, input]`` rows of the text statistics both sides have."""
    if not stats:
        return []
    tr, inp = stats["training"], stats["input"]
    return [[label, fmt.format(tr[k]), fmt.format(inp[k])] for k, label, fmt in STATS if k in tr and k in inp]


def _est(stage: dict, key: str, trusted: bool | None = True) -> str:
    """An estimate with its interval; in parentheses when it is not trustworthy (not a number to rely on)."""
    lo, hi = stage["intervals"][key]
    text = f"{stage[key]:.1%} [{lo:.1%}, {hi:.1%}]"
    return text if trusted is not False else f"({text})"


def _verdict(trustworthy: bool | None) -> str:
    if trustworthy is None:
        return "cannot be checked (no domain classifier)"
    return "" if trustworthy else f"{UNTRUSTED} (likely too high)"


def _auc_words(auc: float | None) -> str:
    if auc is None:
        return "not measured"
    words = "like training" if auc < 0.6 else "somewhat different" if auc < 0.7 else "clearly different"
    return f"{auc:.3f} (the input is {words} from the training texts)"


def estimate_rows(result: dict) -> list[list[str]]:
    """``[what, ATC, DoC, average confidence, verdict]``: overall (after and before T) and per slice."""
    est = result["estimated_accuracy"]
    keys = ("atc", "doc", "average_confidence")
    after = {k: est[k] for k in keys} | {"intervals": est["intervals"]}
    trusted = est["trustworthy"]
    rows = [
        ["all rows, temperature-scaled", *(_est(after, k, trusted) for k in keys), _verdict(trusted)],
        [
            "all rows, raw softmax",
            *(_est(est["before_temperature"], k, trusted) for k in keys),
            _verdict(trusted),
        ],
    ]
    for s in result["slices"] if len(result["slices"]) > 1 else []:
        name = f"{s['name']}: {s['rows']:,} rows, atypicality {s['mean_atypicality']:.2f}"
        trusted = s["trustworthy"] if result["auc"] is not None else None
        rows.append([name, *(_est(s["after"], k, trusted) for k in keys), _verdict(trusted)])
    return rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), *(line(r) for r in rows)])


def summary_text(result: dict) -> str:
    """The printed summary of ``loraclf shift`` (plain text, a few screens at most)."""
    est, cal = result["estimated_accuracy"], result["calibration"]
    mix = result["class_mix"]
    train_mix = result.get("training_class_mix") or {}
    lines = [
        f"shift: {result['run']} on {result['input']} ({result['rows']:,} rows)",
        f"domain classifier ROC AUC: {_auc_words(result['auc'])}",
    ]
    if result.get("text_stats"):
        lines += [
            "text statistics:",
            _text_table(["", "training", "input"], stats_rows(result["text_stats"])),
        ]
    lines.append(
        "predicted class mix: "
        + ", ".join(
            f"{k} {v:.1%}" + (f" (training {train_mix[k]:.1%})" if k in train_mix else "")
            for k, v in mix.items()
        )
    )
    lines += [
        f"expected accuracy without labels (validation accuracy {est['validation_accuracy']:.1%} on "
        f"{cal.get('validation_rows') or 0:,} rows, temperature {cal['temperature']:.3g}; 95% bootstrap intervals "
        "over the input rows; numbers in parentheses are not trustworthy):",
        _text_table(["", "ATC", "DoC", "average confidence", ""], estimate_rows(result)),
    ]
    if est["trustworthy"] is False:
        lines.append(
            f"the estimate is {UNTRUSTED} on this file: the model stays confident on rows unlike its training "
            "data, where confidence cannot show its errors (see the warnings)"
        )
    for key, title in (("least_typical", "least typical rows"), ("most_typical", "most typical rows")):
        lines.append(f"{title}:")
        lines += [
            f"  [{e['atypicality']:.2f}] {e['predicted']} ({e['confidence']:.0%}): {e['text'][:120]}"
            for e in result["examples"][key][:3]
        ]
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


CAPTIONS = {
    "atypicality": "How typical each row is: the out-of-fold probability, from a classifier trained to tell the "
    "input's rows from the training rows (hashed word and character n-grams), that a row is from the input. "
    "Training rows sit left of 0.5 and input rows right of it when the two are easy to tell apart.",
    "confidence": "Top-class probability after temperature scaling on the validation rows and on the input rows. "
    "Confidence-based estimates read a drop in accuracy from a shift of this histogram to the left.",
    "class_mix": "Predicted class shares on the input beside the training shares, and the input's class priors "
    "estimated by EM (Saerens et al. 2002; what predict --prior-correction uses).",
    "reliability": "Validation rows (the input has no labels): accuracy per confidence bin against confidence, "
    "before and after temperature scaling; the dotted diagonal is perfect calibration.",
    "slices": "Expected accuracy (ATC and DoC after temperature scaling, 95% bootstrap intervals over rows) for the "
    "input rows split by atypicality, most typical first; greyed slices are where the estimate is not trustworthy.",
}


def render_html(result: dict, pngs: dict[str, bytes]) -> str:
    """The page: summary, figures with captions, tables, examples and warnings."""
    est = result["estimated_accuracy"]
    numbers = (
        f"ATC {est['atc']:.1%} (95% interval {est['interval'][0]:.1%} to {est['interval'][1]:.1%}), DoC "
        f"{est['doc']:.1%}; validation accuracy {est['validation_accuracy']:.1%}"
    )
    if est["trustworthy"] is False:
        headline = note(
            f"Expected accuracy: {UNTRUSTED} on this file, likely too high (the estimates would say {numbers}); "
            "see the warnings below.",
            "warn",
        )
    else:
        headline = note(f"Expected accuracy: {numbers}.", "summary")
    sections = [
        section("Summary", headline, note(f"Domain classifier ROC AUC {_auc_words(result['auc'])}.")),
        section("Atypicality", img(pngs["atypicality"], "atypicality histogram", CAPTIONS["atypicality"])),
        section(
            "Expected accuracy",
            img(pngs["slices"], "expected accuracy per slice", CAPTIONS["slices"]),
            table(["rows", "ATC", "DoC", "average confidence", ""], estimate_rows(result)),
        ),
        section("Confidence", img(pngs["confidence"], "confidence histograms", CAPTIONS["confidence"])),
    ]
    if "reliability" in pngs:
        sections.append(
            section("Calibration", img(pngs["reliability"], "reliability diagram", CAPTIONS["reliability"]))
        )
    sections.append(section("Class mix", img(pngs["class_mix"], "class mix", CAPTIONS["class_mix"])))
    if result.get("text_stats"):
        sections.append(
            section("Text statistics", table(["", "training", "input"], stats_rows(result["text_stats"])))
        )
    ex = result["examples"]
    cols = ["atypicality", "predicted", "confidence", "text"]
    for key, title in (("least_typical", "Least typical rows"), ("most_typical", "Most typical rows")):
        rows = [
            [f"{e['atypicality']:.3f}", e["predicted"], f"{e['confidence']:.1%}", e["text"]] for e in ex[key]
        ]
        sections.append(section(title, table(cols, rows)))
    if result["warnings"]:
        items = "".join(f"<li>{esc(w)}</li>" for w in result["warnings"])
        sections.append(section("Warnings", f'<ul class="warn">{items}</ul>'))
    return page(f"loraclf shift: {Path(result['input']).name} against {Path(result['run']).name}", sections)


def write_page(result: dict, out: Path) -> Path:
    """Write ``out/shift.html`` (figures embedded) and ``out/figures/*.png``; returns the page's path.

    Raises:
        UserError: the folder is not writable.
    """
    pngs = {name: figures.png(fig) for name, fig in shift_figures.build(result).items()}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, data in pngs.items():
        atomic_write(out / "figures" / f"{name}.png", data, flag="--out")
    atomic_write(out / "shift.html", render_html(result, pngs).encode("utf-8"), flag="--out")
    return out / "shift.html"
