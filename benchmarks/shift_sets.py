"""Labelled shifted copies of AG News test.csv, to score a run under shifts its training data does not show.

    python benchmarks/shift_sets.py --data ../shared/data --out runs/shift-sets [--seed 0] [--strength 0.4]
    loraclf evaluate RUN --data runs/shift-sets/noised.csv

Reads ``ag_news/test.csv`` (label,title,description) and writes ``label,text`` files into ``--out``:

``clean.csv``
    title + " " + description, the layout of train.csv: the reference every other set is compared with.
``title_only.csv``
    the title alone (about 7 words instead of about 38).
``description_only_tokenised.csv``
    the format of ``ood_unlabeled.csv`` (the shift loraclf's earlier tools were built for), reproduced from what
    that file shows: description only; the markup AG News keeps escaped (``&lt;b&gt;`` … ``&lt;/b&gt;``) removed
    with what it wraps left; "#39;" dropped rather than decoded ("the company s movie division"), "quot;" kept
    and split ("quot ;"), "\\$" and "#36;" read as "$", "&" and backslashes removed; Penn-Treebank tokens
    ("did n't", "$ 3", "`` El Duque ''"); sentences split as NLTK's Punkt splits them (also after "No." before a
    number and after an unknown initialism such as "I.B.M.", never after "Corp.", "Sept." or "U.S.") and joined
    by a tab. test.csv's descriptions are already cut mid-sentence about as often as that file's rows (measured:
    printed when the script runs), so none is cut here.
``noised.csv``
    clean texts through :mod:`loraclf.toolbox.noise` at ``--strength`` (default 0.4, the strength whose
    countable statistics match the machine-written rows of kaggle_test.csv; see that module), one copy per row,
    seeded per row.
``prior_shift.csv``
    a class-prior shift by subsampling clean texts: ``--prior`` (default 55,15,15,15 for labels 1,2,3,4, World
    dominant) with as many rows as the prior allows without replacement, in test.csv's order.

Row counts, label mixes and the format statistics are printed. The script writes data only; accuracies come from
``loraclf evaluate`` on each file (benchmarks/README.md, "Shifted development sets").
"""

from __future__ import annotations

import argparse
import os
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
from nltk.tokenize import TreebankWordTokenizer

from loraclf.config import CleanConfig
from loraclf.data.clean import clean_texts
from loraclf.toolbox.noise import DEFAULT_STRENGTH, common_words, noise_augment

ROOT = Path(__file__).resolve().parents[1]
SETS = ("clean", "title_only", "description_only_tokenised", "noised", "prior_shift")
DEFAULT_PRIOR = (0.55, 0.15, 0.15, 0.15)

_ESCAPED_TAG = re.compile(r"&lt;.*?&gt;")
# Punkt does not end a sentence after these (its English model learnt them as abbreviations).
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr st jr sr sen rep gov gen lt col sgt prof rev corp inc co ltd cos bros vs v jan feb mar apr jun jul
    aug sep sept oct nov dec calif mich tenn fla ariz ga ill mass conn md pa va wash wis colo okla ky la ore
    u.s u.n u.k d.c p.m a.m
    """.split()  # noqa: SIM905
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]*\s+(?=\S)")


def ood_markup(text: str) -> str:
    """AG News' escaped markup and entities as ood_unlabeled.csv has them (see the module docstring)."""
    text = _ESCAPED_TAG.sub(" ", str(text))
    text = text.replace("&lt;", " ").replace("&gt;", " ").replace("#39;", "").replace("#36;", "$")
    text = text.replace("#151;", " -- ").replace("\\$", "$").replace("\\", " ").replace("&", " ")
    return " ".join(text.split())


def split_sentences(text: str) -> list[str]:
    """Sentences of one text, split after . ! ? and whitespace except after a known abbreviation, as Punkt splits
    news text: after "No." before a number and after unknown initialisms ("B.C.", "I.B.M."), as that file shows."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        word = text[start : m.start()].rsplit(None, 1)[-1] if text[start : m.start()].strip() else ""
        core = word.rstrip(".!?\"')").lstrip("(\"'`")
        if word.endswith(".") and core.lower() in ABBREVIATIONS:
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    return [*out, tail] if tail else out


def description_only_tokenised(description: str, tokenizer: TreebankWordTokenizer | None = None) -> str:
    """One description in ood_unlabeled.csv's format: tokenised sentences joined by tabs."""
    tokenizer = tokenizer or TreebankWordTokenizer()
    sentences = [" ".join(tokenizer.tokenize(s)) for s in split_sentences(ood_markup(description))]
    return "\t".join(s for s in sentences if s)


def prior_shift(labels: np.ndarray, prior: dict, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of a subsample whose label shares are ``prior`` (label → share), as large as possible.

    Raises:
        ValueError: a label of ``prior`` has no rows, or the shares do not sum to 1.
    """
    if not np.isclose(sum(prior.values()), 1.0):
        raise ValueError(f"prior shares must sum to 1, got {sum(prior.values()):.3f}")
    counts = {k: int((labels == k).sum()) for k in prior}
    if min(counts.values()) == 0:
        raise ValueError(f"no rows with label {min(counts, key=counts.get)}")
    total = min(counts[k] / p for k, p in prior.items() if p > 0)
    picked = [
        rng.choice(np.flatnonzero(labels == k), int(total * p), replace=False) for k, p in prior.items()
    ]
    return np.sort(np.concatenate(picked))


def build_sets(test: pd.DataFrame, seed: int, strength: float, prior: dict) -> dict[str, pd.DataFrame]:
    """Every shifted set (:data:`SETS`) of a test.csv table (label,title,description) as ``label,text`` tables."""
    labels = test["label"].to_numpy()
    titles, descriptions = test["title"].fillna("").astype(str), test["description"].fillna("").astype(str)
    clean = (titles + " " + descriptions).tolist()
    tokenizer = TreebankWordTokenizer()
    cleaned = clean_texts(
        clean, CleanConfig()
    )  # noise works on decoded text, as `augment --method noise` does
    common = common_words(cleaned)
    noised = [noise_augment(t, strength, random.Random(f"{seed}:{i}"), common) for i, t in enumerate(cleaned)]
    keep = prior_shift(labels, prior, np.random.default_rng(seed))

    def frame(texts, rows=slice(None)):
        return pd.DataFrame({"label": labels[rows], "text": np.asarray(texts, dtype=object)[rows]})

    return {
        "clean": frame(clean),
        "title_only": frame(titles.tolist()),
        "description_only_tokenised": frame([description_only_tokenised(d, tokenizer) for d in descriptions]),
        "noised": frame(noised),
        "prior_shift": frame(clean, keep),
    }


def format_stats(texts: pd.Series) -> str:
    """Words per row, rows with several sentences, rows ending without closing punctuation."""
    t = texts.astype(str)
    ends = t.str.rstrip().str.contains(r"(?:[.!?]|'')$")
    return (
        f"{t.str.split().str.len().mean():.1f} words/row, {t.str.contains(chr(9)).mean():.0%} with a tab, "
        f"{1 - ends.mean():.0%} without closing punctuation"
    )


def parse_prior(text: str) -> dict:
    """'55,15,15,15' → {1: 0.55, 2: 0.15, 3: 0.15, 4: 0.15} (shares of labels 1, 2, …; rescaled to sum to 1)."""
    values = [float(v) for v in text.split(",")]
    if len(values) != 4 or min(values) < 0 or sum(values) <= 0:
        raise SystemExit(f"shift_sets: --prior needs four non-negative shares for labels 1-4, got {text!r}")
    return {k + 1: v / sum(values) for k, v in enumerate(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=Path(os.environ.get("LORACLF_DATA", ROOT.parent / "shared" / "data"))
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for the five label,text files")
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the noise and of the prior-shift subsample (0)"
    )
    ap.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, help="noise strength, 0-1 (0.4)")
    ap.add_argument("--prior", default="55,15,15,15", help="label shares of prior_shift.csv, labels 1-4")
    args = ap.parse_args()
    source = args.data / "ag_news" / "test.csv"
    if not source.is_file():
        raise SystemExit(f"shift_sets: {source} not found; pass --data DIR or set LORACLF_DATA")
    if not 0 <= args.strength <= 1:
        raise SystemExit(f"shift_sets: --strength must be in [0, 1], got {args.strength}")
    sets = build_sets(pd.read_csv(source), args.seed, args.strength, parse_prior(args.prior))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame in sets.items():
        frame.to_csv(args.out / f"{name}.csv", index=False)
        shares = frame["label"].value_counts(normalize=True).sort_index()
        mix = " ".join(f"{k}:{v:.0%}" for k, v in shares.items())
        print(f"{name + '.csv':32} {len(frame):6,} rows  labels {mix}  {format_stats(frame['text'])}")
    ood = args.data / "ag_news" / "ood_unlabeled.csv"
    if ood.is_file():
        print(f"{'(ood_unlabeled.csv)':32} {'':6}       {'':22}  {format_stats(pd.read_csv(ood)['text'])}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
