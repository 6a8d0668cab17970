"""Label-free accuracy estimates on a new file, from the model's confidence alone.

Three estimates of a classifier's accuracy on unlabelled target rows, each resting on the validation rows' summary
that training keeps in ``run.json`` (``calibration.validation``, see :mod:`loraclf.inference.calibration`):

- **Average confidence** (AC): the mean top-class probability on the target. Right only for a calibrated model
  whose calibration survives the shift.
- **DoC**, difference of confidences (Guillory et al., "Predicting with Confidence on Unseen Distributions", ICCV
  2021): validation accuracy minus the drop in mean top-class probability from validation to target.
- **ATC**, average thresholded confidence (Garg et al., "Leveraging Unlabeled Data to Predict Out-of-Distribution
  Performance", ICLR 2022): a threshold t on a confidence score is chosen on validation so that the share of rows
  scoring above t equals validation accuracy; the estimate is the share of target rows above t. loraclf scores
  rows by **negative entropy** ``Σ p log p`` (ATC-NE), the variant Garg et al. found best on most shifts; the top-class
  probability is what DoC and AC use.

Each estimate comes before and after temperature scaling, with a 95% percentile bootstrap interval over the target
rows (1,000 resamples). The validation rows are not resampled (only their summary is kept): the interval covers the
target's sampling error, not validation's, whose standard error is reported beside it.

They fail differently. When a shift leaves the model calibrated (p(x) changes, p(y | x) does not), the average
confidence is the accuracy and DoC with it, while ATC can miss: a synthetic task whose rows crowd the class
boundaries (tests/toolbox/test_shift.py) loses 11.7 points of accuracy, AC and DoC find it within 0.2 points, ATC reads
12.6 points too low (with the top-class probability as its score too). ATC did better than AC and DoC on most of the
natural shifts Garg et al. measured, where calibration itself degrades. So loraclf reports all three.

All three assume that the model's confidence falls where its accuracy falls. They cannot see errors the model is
sure of: on rows unlike anything in training on which the model stays as confident as on validation, they
overestimate, and ``loraclf shift`` says so instead of trusting the number (see :mod:`loraclf.toolbox.shift`).
"""

from __future__ import annotations

import math

import numpy as np

from loraclf.inference.calibration import confidence, negative_entropy, scale

BOOTSTRAP = 1000  # resamples of the target rows
LEVEL = 0.95  # the interval's coverage
STAGES = ("before", "after")  # probabilities before and after temperature scaling


def average_confidence(target_conf: np.ndarray) -> float:
    """AC: the mean top-class probability of the target rows."""
    return float(np.mean(target_conf)) if len(target_conf) else 0.0


def doc(val_accuracy: float, val_mean_conf: float, target_conf: np.ndarray) -> float:
    """DoC: validation accuracy − (mean validation confidence − mean target confidence), clipped to [0, 1]."""
    return float(np.clip(val_accuracy - (val_mean_conf - average_confidence(target_conf)), 0.0, 1.0))


def atc(threshold: float, target_scores: np.ndarray) -> float:
    """ATC: the share of target rows whose score is strictly above the validation threshold."""
    return float(np.mean(np.asarray(target_scores) > threshold)) if len(target_scores) else 0.0


def _stage(validation: dict, stage: dict, conf: np.ndarray, scores: np.ndarray, draws: np.ndarray) -> dict:
    """The three estimates of one stage and their bootstrap intervals (``draws``: resampled row indices)."""
    point = {
        "atc": atc(stage["atc_threshold"], scores),
        "doc": doc(validation["accuracy"], stage["mean_confidence"], conf),
        "average_confidence": average_confidence(conf),
    }
    if len(conf) == 0:
        return {**point, "intervals": {k: [v, v] for k, v in point.items()}}
    ac, above = [], []
    for chunk in np.array_split(draws, max(1, len(draws) * len(conf) // 2_000_000)):  # bounded memory
        ac.append(conf[chunk].mean(axis=1))
        above.append((scores[chunk] > stage["atc_threshold"]).mean(axis=1))
    ac, above = np.concatenate(ac), np.concatenate(above)
    doc_b = np.clip(validation["accuracy"] - (stage["mean_confidence"] - ac), 0.0, 1.0)
    samples = {"atc": above, "doc": doc_b, "average_confidence": ac}
    return {**point, "intervals": {k: _interval(v) for k, v in samples.items()}}


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def estimate(probs: np.ndarray, validation: dict, temperature: float, seed: int = 0) -> dict:
    """ATC, DoC and average confidence of target rows, before and after temperature scaling, with intervals.

    Args:
        probs: Uncalibrated class probabilities of the target rows, shape (rows, classes).
        validation: ``calibration.validation`` of the run: ``accuracy``, ``n`` and, per stage (``before`` and
            ``after``), ``mean_confidence`` and ``atc_threshold``.
        temperature: The run's T (the ``after`` stage uses ``softmax(log p / T)``).
        seed: The bootstrap's seed (the same seed resamples the same rows in both stages).

    Returns:
        ``{"rows": n, "before": {...}, "after": {...}, "validation_standard_error": se}``; each stage holds
        ``atc``, ``doc``, ``average_confidence`` (fractions) and ``intervals`` (the same keys, each ``[lo, hi]``);
        ``se`` is the binomial standard error of validation accuracy (None without a row count).
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    draws = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n)) if n else np.zeros((0, 0), int)
    out: dict = {"rows": n}
    for name in STAGES:
        p = scale(probs, temperature) if name == "after" and n else probs
        conf = confidence(p) if n else np.zeros(0)
        scores = negative_entropy(p) if n else np.zeros(0)
        out[name] = _stage(validation, validation[name], conf, scores, draws)
    n_val, acc = validation.get("n"), validation["accuracy"]
    out["validation_standard_error"] = math.sqrt(acc * (1 - acc) / n_val) if n_val else None
    return out
