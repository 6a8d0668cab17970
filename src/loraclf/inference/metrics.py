"""Classification metrics: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

Computed with scikit-learn over the class indices of the run's label map, so a class absent from an evaluation file
still has its row (zeros) and matrices from different files line up.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def metrics(labels: np.ndarray, preds: np.ndarray, label_names: list, loss: float | None = None) -> dict:
    """All metrics of one evaluation as plain JSON-ready values."""
    classes = list(range(len(label_names)))
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    out = {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=classes, average="macro", zero_division=0)),
        "n": len(labels),
        "per_class": {
            str(name): {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(labels, preds, labels=classes).tolist(),
        "labels": [str(x) for x in label_names],
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes: ``probs`` ``(rows, classes)``, ``labels`` ``(rows,)`` class
    indices; probabilities are clipped at 1e-12 so that one confident mistake cannot make it infinite."""
    picked = np.asarray(probs)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def summary_line(m: dict) -> str:
    loss = f"  loss {m['loss']:.4f}" if "loss" in m else ""
    return f"accuracy {m['accuracy'] * 100:.2f}%  macro-F1 {m['macro_f1'] * 100:.2f}%{loss}  (n={m['n']:,})"


def format_report(m: dict) -> str:
    """A plain-text per-class table and confusion matrix for the terminal."""
    names = m["labels"]
    width = max(8, *(len(n) for n in names))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for n in names:
        c = m["per_class"][n]
        lines.append(
            f"{n:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}"
        )
    lines.append("")
    lines.append("confusion matrix (rows = true, columns = predicted)")
    lines.append(" " * (width + 2) + " ".join(f"{n[:8]:>8}" for n in names))
    for n, row in zip(names, m["confusion_matrix"]):
        lines.append(f"{n:<{width}}  " + " ".join(f"{v:8d}" for v in row))
    return "\n".join(lines)


def probabilities_to_preds(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs).argmax(axis=1)
