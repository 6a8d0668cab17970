"""``loraclf shift RUN --input FILE``: what a run faces on a new file, and the accuracy to expect, without labels.

Given the run's scores of the file's rows, :func:`analyse` gathers:

- a **domain classifier** between the run's training texts and the file (:mod:`loraclf.toolbox.domain`): its
  cross-validated ROC AUC, and each file row's atypicality (out-of-fold probability of belonging to the file);
- **text statistics** side by side (:mod:`loraclf.toolbox.text_stats`), and the most and least typical rows;
- the **predicted class mix** against training's, with the class priors EM estimates under label shift;
- the **expected accuracy** (:mod:`loraclf.inference.estimate`: ATC, DoC, average confidence, before and after
  temperature scaling, bootstrap intervals), overall and per atypicality quarter of the file's rows.

Confidence-based estimates assume that confidence falls where accuracy falls. Where the domain classifier finds rows
clearly unlike training while the model stays as confident as on validation (mean top-class probability at most
:data:`CONFIDENCE_GAP` below validation's), there is no sign the model noticed the shift, and nothing in its
confidence can show the errors it is sure of: that slice (and the whole estimate, when it includes one) is marked
not trustworthy, with a warning, instead of a confident number. A row counts as unlike training when its
atypicality is above the :data:`TRAIN_QUANTILE` quantile of the training rows' own (out-of-fold) atypicality, a
scale-free rule (a regularised classifier's probabilities crowd towards 0.5 on few rows); a slice is unlike training
when at least :data:`UNLIKE_SHARE` of its rows are (a file like training has about 5% such rows everywhere). The whole
file is also flagged when its AUC is at least :data:`AUC_SHIFTED` and the model is as confident on it as on
validation.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from loraclf.inference.calibration import calibrate, confidence, reliability_bins, scale
from loraclf.inference.estimate import estimate
from loraclf.inference.label_shift import em_priors, train_priors_of
from loraclf.toolbox import text_stats
from loraclf.toolbox.domain import MAX_ROWS, DomainResult, domain_classifier
from loraclf.utils.errors import UserError

AUC_SHIFTED = 0.7  # a file told apart from training this well is shifted (0.5: no difference)
TRAIN_QUANTILE = 0.95  # a row more atypical than this share of training rows is unlike training
UNLIKE_SHARE = 0.5  # a slice with at least this share of such rows is unlike training
CONFIDENCE_GAP = 0.03  # mean confidence within this of validation's: the model shows no sign of the shift
DISAGREE = 0.05  # ATC and DoC further apart than this: say so
MIN_VALIDATION = 200  # fewer validation rows: the threshold and the accuracy it rests on are noisy
EXAMPLES = 5  # rows shown at each end of the atypicality scale
EXAMPLE_CHARS = 300
HIST_BINS = 20


def slice_rows(scores: np.ndarray) -> list[np.ndarray]:
    """The file's rows split by atypicality into up to four equal groups (quarters), most typical first; fewer
    groups for small files (about ten rows a group at least)."""
    k = min(4, max(1, len(scores) // 10))
    return [part for part in np.array_split(np.argsort(scores, kind="stable"), k) if len(part)]


def _slice(name: str, rows, scores, probs, validation, temperature, unlike_above: float | None, seed) -> dict:
    est = estimate(probs[rows], validation, temperature, seed=seed)
    conf = float(confidence(scale(probs[rows], temperature)).mean())
    unlike = float(np.mean(scores[rows] > unlike_above)) if unlike_above is not None else None
    atypical = unlike is not None and unlike >= UNLIKE_SHARE
    confident = conf >= validation["after"]["mean_confidence"] - CONFIDENCE_GAP
    return {
        "name": name,
        "rows": len(rows),
        "atypicality": [float(scores[rows].min()), float(scores[rows].max())],
        "mean_atypicality": float(scores[rows].mean()),
        "share_unlike_training": unlike,
        "mean_confidence": conf,
        "before": est["before"],
        "after": est["after"],
        "trustworthy": not (atypical and confident),
    }


def _slice_names(k: int) -> list[str]:
    if k == 1:
        return ["all rows"]
    names = [f"{'quarter' if k == 4 else 'group'} {i + 1}" for i in range(k)]
    names[0] += " (most typical)"
    names[-1] += " (least typical)"
    return names


def _warnings(result: dict, validation: dict, record: dict, problem: str | None) -> list[str]:
    """Where the estimate cannot be trusted, and other caveats, as sentences."""
    out = []
    if problem:
        out.append(
            f"{problem}: no domain classifier, atypicality or text statistics, so nothing shows where the estimate "
            "fails"
        )
    if not problem and result["auc"] is None:
        out.append(
            f"{result['rows']:,} input row(s) are too few for a domain classifier (two a side at least): nothing "
            "shows where the estimate fails"
        )
    if not record.get("stored", True):
        out.append(
            "the run keeps no temperature (trained before loraclf kept one): it was fitted now on the re-derived "
            "validation rows for these estimates; predict still gives this run's raw softmax"
        )
    val_conf = validation["after"]["mean_confidence"]
    for s in result["slices"]:
        if not s["trustworthy"]:
            out.append(
                f"{s['name']}: {s['share_unlike_training']:.0%} of its {s['rows']:,} rows are more atypical than "
                f"{TRAIN_QUANTILE:.0%} of the training rows, yet the model is as confident on them as on validation "
                f"({s['mean_confidence']:.1%} vs {val_conf:.1%}); confidence cannot show errors the model is sure "
                f"of, so the estimate there ({s['after']['atc']:.1%}) is not trustworthy and likely too high"
            )
    est = result["estimated_accuracy"]
    if est["trustworthy"] is False:
        out.append(
            "overall: the estimate includes rows on which it is not trustworthy; label a few hundred rows of the "
            "file to measure accuracy there"
        )
    if abs(est["atc"] - est["doc"]) > DISAGREE:
        out.append(
            f"ATC ({est['atc']:.1%}) and DoC ({est['doc']:.1%}) disagree by more than {DISAGREE * 100:.0f} points: "
            "the model's confidence has changed shape on this file; neither is reliable"
        )
    n_val = validation.get("n") or 0
    if n_val < MIN_VALIDATION:
        out.append(
            f"the validation summary rests on {n_val:,} rows (one row is {1 / max(n_val, 1):.1%} of its accuracy): "
            "the estimates inherit its noise"
        )
    return out


def _histogram(values: np.ndarray) -> list[int]:
    return np.histogram(values, bins=HIST_BINS, range=(0.0, 1.0))[0].tolist()


def _json_id(value):
    """A row id as JSON holds it: numbers stay numbers (NumPy's become Python's), anything else a string."""
    if isinstance(value, np.integer):
        return int(value)
    return value if isinstance(value, int | str) else str(value)


def _examples(order, scores, texts, ids, labels, preds, conf) -> list[dict]:
    return [
        {
            "id": _json_id(ids[i]),
            "atypicality": float(scores[i]),
            "predicted": labels[preds[i]],
            "confidence": float(conf[i]),
            "text": texts[i][:EXAMPLE_CHARS] + ("…" if len(texts[i]) > EXAMPLE_CHARS else ""),
        }
        for i in order
    ]


def class_mix(labels: list, probs: np.ndarray, info_data: dict) -> dict:
    """Predicted shares per class, the training shares, and EM's estimate of the file's priors (label shift)."""
    names = [str(x) for x in labels]
    preds = probs.argmax(axis=1)
    predicted = np.bincount(preds, minlength=len(labels)) / max(len(preds), 1)
    train = train_priors_of(info_data, len(labels))
    out = {"class_mix": dict(zip(names, map(float, predicted)))}
    if train is not None:
        out["training_class_mix"] = dict(zip(names, map(float, train)))
        out["estimated_priors"] = dict(zip(names, map(float, em_priors(probs, train)[0])))
    return out


def analyse(
    texts: list[str],
    ids: list,
    probs: np.ndarray,
    labels: list,
    info,
    validation_record: dict,
    training: dict | None,
    problem: str | None = None,
    seed: int = 0,
) -> tuple[dict, dict]:
    """Everything ``loraclf shift`` reports: ``(result, per_row)``.

    ``result`` is ``shift.json``: ``auc``, ``estimated_accuracy`` (after temperature scaling; ``interval`` is
    ATC's, ``before_temperature`` the same without it, ``trustworthy``), ``slices``, ``class_mix``,
    ``training_class_mix``, ``estimated_priors``, ``text_stats``, ``examples``, ``calibration``, ``domain`` and
    ``warnings``. ``per_row`` holds arrays of shape (rows,): ``atypicality``, ``predicted``, ``confidence``.

    Args:
        texts: The file's texts after the run's cleaning, shape (rows,).
        ids: The file's row ids.
        probs: The run's uncalibrated probabilities of the rows, shape (rows, classes).
        labels: The run's label map.
        info: The run's :class:`~loraclf.runfolder.schema.RunInfo` (data summary, max length).
        validation_record: The run's calibration record (``temperature``, ``validation``, ``bins``).
        training: ``{"texts", "vocabulary_texts", "tokenizer", "unk_id"}`` from the run's training rows, or None
            when they cannot be read (no domain classifier, no text statistics then).
        problem: Why ``training`` is None (a warning says so).
        seed: Sampling, folds and bootstrap.
    """
    temperature = float(validation_record["temperature"])
    validation = validation_record["validation"]
    calibrated = scale(probs, temperature)
    conf, preds = confidence(calibrated), calibrated.argmax(axis=1)
    domain = _domain(training, texts, seed)
    scores = domain.target_scores
    unlike_above = float(np.quantile(domain.train_scores, TRAIN_QUANTILE)) if domain.auc is not None else None
    parts = slice_rows(scores)
    slices = [
        _slice(name, rows, scores, probs, validation, temperature, unlike_above, seed)
        for name, rows in zip(_slice_names(len(parts)), parts)
    ]
    order = np.argsort(scores, kind="stable")
    result = {
        "rows": len(texts),
        "auc": domain.auc,
        "domain": {
            "auc_folds": domain.fold_aucs,
            "rows_used": {"training": domain.n_train, "input": domain.n_target},
            "unlike_training_above": unlike_above,
            "features": "hashed word 1-2-grams + char 3-5-grams, TF-IDF, balanced logistic regression",
            "histogram": {"training": _histogram(domain.train_scores), "input": _histogram(scores)},
        },
        "estimated_accuracy": _overall(probs, validation, temperature, domain.auc, slices, seed),
        "slices": slices,
        **class_mix(labels, calibrated, info.data),
        "text_stats": _stats(training, texts, info.max_length),
        "examples": {
            "most_typical": _examples(order[:EXAMPLES], scores, texts, ids, labels, preds, conf),
            "least_typical": _examples(order[::-1][:EXAMPLES], scores, texts, ids, labels, preds, conf),
        },
        "calibration": _calibration(validation_record, probs, calibrated),
    }
    result["warnings"] = _warnings(result, validation, validation_record, problem)
    return result, {"atypicality": scores, "predicted": preds, "confidence": conf}


def _overall(
    probs, validation: dict, temperature: float, auc: float | None, slices: list[dict], seed: int
) -> dict:
    """The whole file's estimates (after temperature scaling; ``before_temperature`` without) and whether to trust
    them: not where a slice is flagged, nor where a clearly shifted file leaves the model as sure as on validation;
    None (cannot tell) without the domain classifier."""
    est = estimate(probs, validation, temperature, seed=seed)
    after = est["after"]
    shifted = auc is not None and auc >= AUC_SHIFTED
    unmoved = after["average_confidence"] >= validation["after"]["mean_confidence"] - CONFIDENCE_GAP
    trustworthy = None if auc is None else all(s["trustworthy"] for s in slices) and not (shifted and unmoved)
    return {
        "atc": after["atc"],
        "doc": after["doc"],
        "average_confidence": after["average_confidence"],
        "interval": after["intervals"]["atc"],
        "interval_of": "atc",
        "intervals": after["intervals"],
        "before_temperature": est["before"],
        "validation_accuracy": validation["accuracy"],
        "validation_standard_error": est["validation_standard_error"],
        "trustworthy": trustworthy,
    }


def _calibration(record: dict, probs: np.ndarray, calibrated: np.ndarray) -> dict:
    """The temperature, where it came from, and the validation and input confidence bins (for the figures)."""
    validation = record["validation"]
    return {
        "temperature": float(record["temperature"]),
        "stored": bool(record.get("stored", True)),
        "validation_rows": validation.get("n"),
        "validation_mean_confidence": {k: validation[k]["mean_confidence"] for k in ("before", "after")},
        "validation_bins": record.get("bins", {}),
        "input_bins": {
            "before": reliability_bins(probs, probs.argmax(axis=1)),
            "after": reliability_bins(calibrated, calibrated.argmax(axis=1)),
        },
    }


def _domain(training: dict | None, texts: list[str], seed: int) -> DomainResult:
    if training is None:
        return DomainResult(None, [], np.full(len(texts), 0.5), np.zeros(0), 0, len(texts))
    return domain_classifier(training["texts"], texts, seed=seed)


def _stats(training: dict | None, texts: list[str], max_length: int) -> dict | None:
    """Both sides' text statistics against the vocabulary of the training rows not measured (capped rows)."""
    if training is None:
        return None
    vocab = text_stats.vocabulary(training["vocabulary_texts"])
    tok, unk = training.get("tokenizer"), training.get("unk_id")
    sample = np.random.default_rng(0).permutation(len(texts))[:MAX_ROWS]
    return {
        "training": text_stats.describe(training["texts"], vocab, tok, unk, max_length),
        "input": text_stats.describe([texts[i] for i in sample], vocab, tok, unk, max_length),
        "vocabulary_rows": len(training["vocabulary_texts"]),
    }


def training_side(run: Path, info, recipe, seed: int = 0) -> tuple[dict | None, object | None, str | None]:
    """The run's training rows, re-derived as training derived them (files, split, filter, sample).

    Returns:
        ``(training, rows, problem)``: ``training`` as :func:`analyse` takes it (a sample of at most
        :data:`~loraclf.toolbox.domain.MAX_ROWS` training texts, at most half of them, to compare; the other
        rows' texts as the vocabulary; the run's tokenizer); ``rows`` the :class:`~loraclf.data.splits.Rows`
        (its ``eval`` are the validation rows); ``problem`` a sentence when the training file cannot be read
        (then ``training`` and ``rows`` are None).
    """
    from loraclf.data.splits import read_rows

    train_file, eval_file = info.data.get("train_file"), info.data.get("eval_file")
    if not train_file:
        return None, None, f"'{run / 'run.json'}' names no training file"
    try:
        with contextlib.redirect_stderr(
            io.StringIO()
        ):  # training's notes (dropped rows, leakage) are not news here
            rows = read_rows(recipe.data, recipe.train.seed, train_file, eval_file)
    except UserError as exc:
        return None, None, f"the run's training file cannot be read ({exc})"
    texts = rows.train.texts
    order = np.random.default_rng(seed).permutation(len(texts))
    k = min(MAX_ROWS, max(1, len(texts) // 2))
    rest = order[k:] if len(order) > k else order
    tokenizer, unk = text_stats.run_tokenizer(run)
    training = {
        "texts": [texts[i] for i in order[:k]],
        "vocabulary_texts": [texts[i] for i in rest],
        "tokenizer": tokenizer,
        "unk_id": unk,
    }
    return training, rows, None


def stored_record(info) -> dict | None:
    """The run's calibration record when it holds the validation summary estimates need (``stored``: True);
    None for runs trained before it was kept."""
    stored = info.calibration or {}
    val = stored.get("validation")
    if (
        isinstance(val, dict)
        and all(k in val for k in ("accuracy", "before", "after"))
        and "temperature" in stored
    ):
        return {**stored, "stored": True}
    return None


def check_estimable(info, rows) -> None:
    """Raise before any model loads when the estimates have nothing to rest on.

    Raises:
        UserError: the run keeps no validation summary and its training file (to re-derive one) cannot be read.
    """
    if stored_record(info) is None and rows is None:
        raise UserError(
            f"RUN: '{info.data.get('train_file')}' cannot be read and the run keeps no validation summary (it was "
            "trained before loraclf kept one); ATC and DoC need one: restore the training file or retrain the run"
        )


def fitted_record(rows, score) -> dict:
    """For a run trained before calibration was kept: the record fitted now on its re-derived validation rows
    (``stored``: False; not written to the run, so predict keeps T = 1 for it).

    Args:
        rows: :func:`training_side`'s rows.
        score: ``(texts, desc) → uncalibrated probabilities``.
    """
    probs = score(rows.eval.texts, "validation")
    return {**calibrate(probs, rows.eval.labels, announce=False), "stored": False}
