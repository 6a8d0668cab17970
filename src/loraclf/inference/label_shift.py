"""Prior correction for label shift: ``loraclf predict … --prior-correction``.

When a file's class mix differs from training's but each class still looks the same (label shift: p(y) changes,
p(x | y) does not), the model's posteriors are off by the ratio of the priors. Saerens, Latinne & Decaestecker
("Adjusting the Outputs of a Classifier to New a Priori Probabilities: A Simple Procedure", Neural Computation
2002) estimate the file's priors by expectation-maximisation on its rows' posteriors alone:

    E step:  p'(y | x) ∝ p(y | x) · π'(y) / π(y)        (π: training priors, π': current estimate)
    M step:  π'(y) = mean over rows of p'(y | x)

starting from π' = π, until the priors stop moving. The corrected posteriors are the last E step's. The procedure
assumes calibrated posteriors, so it runs after temperature scaling (Alexandari et al., ICML 2020, found
calibration first makes it markedly more accurate). Under a shift that is not label shift (new kinds of text, say)
its assumption fails, and it can move the priors the wrong way: use it when the class mix is what changed.
"""

from __future__ import annotations

import numpy as np

MAX_ITER = 1000
TOL = 1e-8  # largest change of any prior between two iterations at which EM stops


def em_priors(
    probs: np.ndarray, train_priors: np.ndarray, max_iter: int = MAX_ITER, tol: float = TOL
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate the target's class priors by EM (Saerens et al. 2002) and re-weight the posteriors to them.

    Args:
        probs: Posteriors of the target rows under the training priors, shape (rows, classes).
        train_priors: The class shares the model was trained on, shape (classes,); normalised here.
        max_iter: EM iterations at most.
        tol: Stop when no prior moves by more than this.

    Returns:
        ``(priors, corrected)``: the estimated priors, shape (classes,), summing to 1; the re-weighted posteriors,
        shape (rows, classes), each row summing to 1. For no rows, the training priors and ``probs``.

    Raises:
        ValueError: ``train_priors`` does not match the number of classes or has a zero or negative share.
    """
    probs = np.asarray(probs, dtype=np.float64)
    pi = np.asarray(train_priors, dtype=np.float64)
    if pi.shape != (probs.shape[1],) or not np.all(pi > 0):
        raise ValueError(f"train_priors must be {probs.shape[1]} positive shares, got {pi.tolist()}")
    pi = pi / pi.sum()
    if len(probs) == 0:
        return pi, probs
    est, corrected = pi.copy(), probs
    for _ in range(max_iter):
        w = probs * (est / pi)
        corrected = w / np.clip(w.sum(axis=1, keepdims=True), 1e-300, None)
        new = corrected.mean(axis=0)
        done = np.abs(new - est).max() < tol
        est = new
        if done:
            break
    w = probs * (est / pi)  # the posteriors under the final priors
    return est, w / np.clip(w.sum(axis=1, keepdims=True), 1e-300, None)


def train_priors_of(info_data: dict, num_labels: int) -> np.ndarray | None:
    """The training rows' class shares from run.json's ``data.train_label_counts``; None when not recorded or a
    class has no row (EM cannot divide by a zero prior)."""
    counts = info_data.get("train_label_counts")
    if not isinstance(counts, list) or len(counts) != num_labels:
        return None
    arr = np.asarray(counts, dtype=np.float64)
    if not np.all(arr > 0):
        return None
    return arr / arr.sum()
