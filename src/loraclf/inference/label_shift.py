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

**Prior matching** (``--match-priors``) answers the opposite case: the file's class mix is *known* (by default the
training file's), but the text has shifted and the model's answers lean towards some classes. On the course
competition's test file the quick-start model sends machine-written World and Business items to Business and
Sci/Tech: it predicts Sci/Tech for 32% of the file where a balanced file would have 25%. EM reads that lean as a changed class
mix and reinforces it. Prior matching instead re-weights each class by a factor ``w_y`` (an offset ``log w_y`` on the
logits) chosen so that the file's mean re-weighted posterior equals the given mix:

    q(y | x) ∝ p(y | x) · w_y,      mean over rows of q(y | x) = π(y) for every class

found by iterative proportional scaling, ``w_y ← w_y · π(y) / mean q(y | x)``: the column step of the
Sinkhorn-Knopp algorithm (Sinkhorn & Knopp 1967; Cuturi, NeurIPS 2013), whose row step is the per-row
normalisation. Caron et al. (SwAV, NeurIPS 2020) use the same equal-partition constraint on unlabelled batches. The
mean of the posteriors is matched, not the count of arg-max labels, so the predicted counts come close to the mix
without equalling it. It needs the whole file (the mean of a few rows says little about the mix) and it is only as
right as the mix it is given.
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
    pi = _shares(train_priors, probs.shape[1], "train_priors")
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


def _shares(values, classes: int, name: str) -> np.ndarray:
    """``values`` as ``classes`` shares summing to 1; ValueError naming ``name`` unless all are positive."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (classes,) or not np.all(arr > 0):
        raise ValueError(f"{name} must be {classes} positive shares, got {arr.tolist()}")
    return arr / arr.sum()


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


def match_priors(
    probs: np.ndarray, priors: np.ndarray, max_iter: int = MAX_ITER, tol: float = TOL
) -> tuple[np.ndarray, np.ndarray]:
    """Re-weight the posteriors of a file so that their mean over its rows equals ``priors`` (prior matching).

    Args:
        probs: Posteriors of the file's rows, shape (rows, classes).
        priors: The class mix the file is known to have, shape (classes,); normalised here.
        max_iter: Scaling iterations at most.
        tol: Stop when no class's mean posterior is further than this from its prior.

    Returns:
        ``(offsets, matched)``: the per-class logit offsets ``log w_y``, shape (classes,), shifted to sum to 0;
        the re-weighted posteriors, shape (rows, classes), each row summing to 1, whose column means equal
        ``priors`` to within ``tol`` once the scaling has converged (it does for any posteriors with every class
        above 0, which the clipping below ensures; ``max_iter`` only bounds the work). For no rows, zeros and
        ``probs``.

    Raises:
        ValueError: ``priors`` does not match the number of classes or has a zero or negative share.
    """
    probs = np.asarray(probs, dtype=np.float64)
    target = _shares(priors, probs.shape[1], "priors")
    if len(probs) == 0:
        return np.zeros(len(target)), probs
    # Posteriors of exactly 0 (an int8 engine's underflow) would pin a class; keep every class reachable.
    base = np.clip(probs, 1e-30, None)
    log_w = np.zeros(len(target))
    for _ in range(max_iter):
        w = base * np.exp(log_w - log_w.max())
        matched = w / w.sum(axis=1, keepdims=True)
        mean = matched.mean(axis=0)
        if np.abs(mean - target).max() < tol:
            break
        log_w += np.log(target) - np.log(mean)
    w = base * np.exp(log_w - log_w.max())
    return log_w - log_w.mean(), w / w.sum(axis=1, keepdims=True)


def parse_mix(text: str, labels: list, flag: str) -> np.ndarray:
    """A class mix written ``uniform`` (equal shares) or ``LABEL=SHARE,...`` (shares or counts, normalised here), in
    the order of ``labels``.

    Raises:
        ValueError: a malformed pair, an unknown or repeated label, a label left out, or a share that is not a
            positive number (the message names the flag and the pair).
    """
    if text.strip() == "uniform":
        return np.full(len(labels), 1 / len(labels))
    names = {str(lab): i for i, lab in enumerate(labels)}
    shares = [None] * len(labels)
    for pair in (p.strip() for p in text.split(",")):
        label, sep, value = pair.rpartition("=")
        if not sep or label.strip() not in names:
            known = ", ".join(names)
            raise ValueError(
                f"{flag}: '{pair}' is not LABEL=SHARE with a label of the run ({known}); or give train or uniform"
            )
        i = names[label.strip()]
        if shares[i] is not None:
            raise ValueError(f"{flag}: label '{label.strip()}' is given twice")
        try:
            share = float(value)
        except ValueError:
            share = float("nan")
        if not share > 0 or share == float("inf"):
            raise ValueError(f"{flag}: '{pair}': the share must be a positive number")
        shares[i] = share
    missing = [str(lab) for lab, v in zip(labels, shares) if v is None]
    if missing:
        raise ValueError(f"{flag}: no share for {', '.join(missing)}; give every class as LABEL=SHARE")
    arr = np.asarray(shares, dtype=np.float64)
    return arr / arr.sum()
