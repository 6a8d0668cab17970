"""Temperature scaling, calibration error and the validation summary a run keeps for label-free estimates.

A classifier's softmax is usually over-confident after fine-tuning. Temperature scaling (Guo et al., "On Calibration
of Modern Neural Networks", ICML 2017) divides the logits by one scalar T > 0 fitted on held-out rows by minimising
the negative log-likelihood (NLL) of ``softmax(logits / T)``. Dividing every logit of a row by the same positive
number keeps their order, so the predicted class (argmax) never changes: only the probabilities do.

At the end of training the final evaluation's probabilities of the validation rows are passed to :func:`calibrate`,
and the record it returns is kept in ``run.json`` as ``calibration``::

    temperature          the fitted T (1.0 for runs trained before calibration existed, and when the fit ran to
                         a bound of :data:`T_BOUNDS`: then ``note`` says why)
    n                    validation rows it was fitted on
    ece_before/after     expected calibration error, 15 equal-width bins of the top-class probability
    nll_before/after     mean negative log-likelihood of the true class
    bins                 reliability-diagram bins before and after: edges, rows, mean confidence, accuracy
    validation           what label-free accuracy estimates need (see :mod:`loraclf.inference.estimate`):
                         rows, accuracy, and before/after T the mean top-class probability and the ATC threshold

The probabilities passed in may come from any engine: ``softmax`` is shift-invariant, so ``log p`` differs from the
logits by one constant per row and ``softmax(log p / T) == softmax(logits / T)``. The bins are also the validation
rows' confidence histogram, which ``loraclf shift`` draws beside the target file's.
"""

from __future__ import annotations

import math

import numpy as np

N_BINS = 15  # the usual ECE setting (Guo et al. 2017)
# T is searched on log T within these bounds. An optimum at a bound means the validation rows say nothing usable:
# all correct pushes T towards 0 (hard 0/1 probabilities), a model at chance towards infinity; calibrate() then
# keeps T = 1 and says why.
T_BOUNDS = (0.05, 20.0)
EPS = 1e-12  # a probability floor before logarithms: float64 softmax underflows only past a 700-logit gap


def log_probs(probs: np.ndarray) -> np.ndarray:
    """``log p`` with a floor, shape (rows, classes): the logits up to one constant per row."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, None))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shape (rows, classes)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at temperature ``temperature``: ``softmax(log p / T)``, which equals ``softmax(logits / T)``.

    Args:
        probs: Class probabilities, shape (rows, classes).
        temperature: T > 0; 1.0 returns ``probs`` unchanged.
    """
    if temperature == 1.0:
        return np.asarray(probs, dtype=np.float64)
    return softmax(log_probs(probs) / temperature)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (nats per row)."""
    labels = np.asarray(labels)
    return float(-np.mean(log_probs(probs)[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of ``softmax(logits / T)`` on labelled rows.

    The NLL is convex in 1/T, so a bounded scalar search on log T (Brent's method) finds its one minimum.

    Args:
        logits: Logits or log-probabilities, shape (rows, classes).
        labels: True class indices, shape (rows,).

    Returns:
        T within :data:`T_BOUNDS` (1.0 for no rows).
    """
    from scipy.optimize import minimize_scalar

    z, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if len(labels) == 0:
        return 1.0
    z = z - z.max(axis=1, keepdims=True)  # the NLL is shift-invariant per row; this keeps exp() finite
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        s = z / math.exp(log_t)
        top = s.max(axis=1)
        lse = top + np.log(np.exp(s - top[:, None]).sum(axis=1))
        return float(np.mean(lse - s[rows, labels]))

    lo, hi = (math.log(b) for b in T_BOUNDS)
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
    return float(math.exp(res.x))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Rows by top-class probability in ``n_bins`` equal-width bins of [0, 1], with each bin's mean confidence and
    accuracy (None where a bin is empty). Bin k holds confidences in (edge_k, edge_k+1]; the first also holds 0."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    right = np.bincount(which, weights=correct.astype(float), minlength=n_bins)
    mean = lambda s: [None if c == 0 else float(v / c) for v, c in zip(s, count)]  # noqa: E731
    return {
        "edges": [round(float(e), 6) for e in edges],
        "count": count.tolist(),
        "confidence": mean(conf_sum),
        "accuracy": mean(right),
    }


def ece_of_bins(bins: dict) -> float:
    """Expected calibration error from :func:`reliability_bins`: the row-weighted mean |accuracy − confidence|."""
    n = sum(bins["count"])
    if n == 0:
        return 0.0
    gaps = [
        c * abs(a - f)
        for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"])
        if c  # empty bins weigh nothing
    ]
    return float(sum(gaps) / n)


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017) over equal-width confidence bins."""
    return ece_of_bins(reliability_bins(probs, labels, n_bins))


def confidence(probs: np.ndarray) -> np.ndarray:
    """Top-class probability per row, shape (rows,): the confidence of DoC and of the reliability diagram."""
    return np.asarray(probs, dtype=np.float64).max(axis=1)


def negative_entropy(probs: np.ndarray) -> np.ndarray:
    """``Σ p log p`` per row, shape (rows,), in (−log K, 0]: the score ATC thresholds (higher = surer)."""
    p = np.asarray(probs, dtype=np.float64)
    return np.sum(p * log_probs(p), axis=1)


def atc_threshold(scores: np.ndarray, accuracy: float) -> float:
    """The threshold t with the share of ``scores`` strictly above t equal to ``accuracy`` (Garg et al. 2022).

    With n scores sorted from the highest, k = round(accuracy · n) rows must lie above t: t is the midpoint between
    the k-th and the (k+1)-th highest score (below all scores for k = n, above all for k = 0). Ties at that point
    leave fewer or more rows above t than k; with continuous scores that does not happen.

    Args:
        scores: Validation scores, shape (rows,), higher = more confident.
        accuracy: Validation accuracy, a fraction.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = len(s)
    if n == 0:
        return 0.0
    k = round(float(accuracy) * n)
    if k <= 0:
        return float(s[0] + 1.0)
    if k >= n:
        return float(s[-1] - 1.0)
    return float((s[k - 1] + s[k]) / 2)


def summary(probs: np.ndarray, labels: np.ndarray) -> dict:
    """What label-free estimates need of one set of validation probabilities: mean top-class probability, the ATC
    threshold on negative entropy, and the reliability bins (also the confidence histogram)."""
    acc = float(np.mean(np.asarray(probs).argmax(axis=1) == labels)) if len(labels) else 0.0
    return {
        "mean_confidence": float(confidence(probs).mean()) if len(labels) else 0.0,
        "atc_threshold": atc_threshold(negative_entropy(probs), acc),
    }


def calibrate(probs: np.ndarray, labels: np.ndarray, announce: bool = True) -> dict:
    """Fit the temperature on the validation rows and describe calibration before and after it.

    Args:
        probs: Uncalibrated class probabilities of the validation rows, shape (rows, classes).
        labels: Their true class indices, shape (rows,).
        announce: Print one line (temperature and ECE before → after) on stderr.

    Returns:
        The ``calibration`` record of ``run.json`` (see the module docstring).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    t = fit_temperature(log_probs(probs), labels)
    note = None
    if any(math.isclose(t, b, rel_tol=0.01) for b in T_BOUNDS):
        note = (
            f"the fit ran to its bound ({t:.3g}): the validation rows are too few or too easy to calibrate on "
            "(e.g. every one correct); T = 1 kept"
        )
        t = 1.0
    after = scale(probs, t)
    bins = {"before": reliability_bins(probs, labels), "after": reliability_bins(after, labels)}
    record = {
        "temperature": round(t, 6),
        "method": "temperature scaling: one T fitted by NLL on the validation rows",
        "n": len(labels),
        "ece_before": ece_of_bins(bins["before"]),
        "ece_after": ece_of_bins(bins["after"]),
        "nll_before": nll(probs, labels),
        "nll_after": nll(after, labels),
        "bins": bins,
        "validation": {
            "n": len(labels),
            "accuracy": float(np.mean(probs.argmax(axis=1) == labels)) if len(labels) else 0.0,
            "before": summary(probs, labels),
            "after": summary(after, labels),
        },
    }
    if note:
        record["note"] = note
    if announce:
        from loraclf.utils.errors import say

        if note:
            say(f"calibration: {note}")

        say(
            f"calibration: temperature {t:.3f} fitted on {len(labels):,} validation rows; expected calibration "
            f"error {record['ece_before']:.2%} -> {record['ece_after']:.2%}, NLL {record['nll_before']:.4f} -> "
            f"{record['nll_after']:.4f}"
        )
    return record


def temperature_of(calibration: dict | None) -> float:
    """The temperature a run's ``calibration`` record holds; 1.0 for runs without one (trained before it existed)
    or with an unusable value (a hand-edited run.json: the raw probabilities are then the safe answer)."""
    t = (calibration or {}).get("temperature")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
        return 1.0
    return float(t)
