"""Pseudo-labelling (self-training) on unlabelled target-domain texts.

The course reports' largest gains on the shifted Kaggle set came from learning from the unlabelled test texts
themselves. Self-training does it with the classifier alone: a trained run (or an ensemble, whose averaged
probabilities are better calibrated) labels the unlabelled texts, the rows it is confident about (probability of
the top class at least ``threshold``) are kept with that label, and a second run trains on the labelled rows plus
these. A high threshold trades coverage for label noise; ``balance`` caps every class at the size of the smallest
so that a model's bias towards one class is not fed back into it.

The output is an ordinary labelled file (``text``, ``label`` in the run's label space, ``confidence``, ``source``)
to pass as a second ``--train`` file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from loraclf.utils.errors import UserError


def select_confident(probs: np.ndarray, threshold: float, balance: bool, seed: int) -> np.ndarray:
    """Indices of rows whose top probability reaches ``threshold``; with ``balance``, the most confident rows of
    each class up to the smallest class's count (ties broken by a seeded shuffle). Sorted, so rows keep file order."""
    top = probs.max(1)
    cls = probs.argmax(1)
    chosen = np.flatnonzero(top >= threshold)
    if balance and len(chosen):
        present = [c for c in range(probs.shape[1]) if (cls[chosen] == c).any()]
        cap = min(int((cls[chosen] == c).sum()) for c in present)
        rng = np.random.default_rng(seed)
        keep = []
        for c in present:
            rows = chosen[cls[chosen] == c]
            rows = rows[rng.permutation(len(rows))]
            rows = rows[np.argsort(-top[rows], kind="stable")][:cap]
            keep.extend(rows.tolist())
        chosen = np.array(keep, dtype=np.int64)
    return np.sort(chosen)


def pseudo_label(args) -> int:
    """``loraclf pseudo-label RUN [RUN ...] --input FILE --output FILE``."""
    from loraclf.data.tables import load_texts
    from loraclf.inference.run import ensemble_budget, ensemble_proba, load_many, raw_data_config
    from loraclf.toolbox.augment import write_table

    if not 0 < args.threshold <= 1:
        raise UserError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.mc_dropout < 0:
        raise UserError(f"--mc-dropout must be 0 or more passes, got {args.mc_dropout}")
    out = Path(args.output)
    if out.is_dir() or not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise UserError(
            f"--output: '{out}' is a folder or its folder does not exist; give a file in a folder"
        )
    runs = load_many(args.runs, device=args.device, precision=args.precision)
    ts, _ = load_texts(args.input, raw_data_config(runs[0]), "--input", labelled=False)
    if ensemble_budget(runs):
        print(ensemble_budget(runs), file=sys.stderr)
    probs = ensemble_proba(runs, ts.texts, mc_dropout=args.mc_dropout, progress=not args.quiet)
    chosen = select_confident(probs, args.threshold, args.balance, runs[0].recipe.train.seed)
    if len(chosen) == 0:
        raise UserError(
            f"--threshold {args.threshold}: no row of '{args.input}' is predicted that confidently "
            f"(highest probability {probs.max():.3f}); lower the threshold"
        )
    labels = runs[0].labels
    members = ",".join(r.path.name for r in runs)
    frame = pd.DataFrame(
        {
            "text": [ts.texts[i] for i in chosen],
            "label": [labels[i] for i in probs[chosen].argmax(1)],
            "confidence": np.round(probs[chosen].max(1), 6),
            "source": f"pseudo:{members}",
        }
    )
    write_table(frame, out)
    counts = frame["label"].value_counts().reindex(labels, fill_value=0)
    print(
        f"pseudo-label: kept {len(frame):,} of {len(ts):,} rows at confidence >= {args.threshold}"
        f"{' (balanced)' if args.balance else ''}; classes {dict(zip(map(str, labels), counts.tolist()))}; "
        f"wrote {out}"
    )
    return 0
