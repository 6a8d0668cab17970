"""Text statistics of two sets of texts side by side: what ``loraclf shift`` prints beside the domain classifier.

Per set: lengths in words (whitespace-separated) and in tokens of the run's tokenizer (special tokens left out) and
the share of rows longer than the run's ``max_length``; the **unknown-token rate** (the share of tokens the
tokenizer maps to its unknown token, ``[UNK]`` in WordPiece; byte-level BPE tokenizers have none, so it is 0 there);
the **non-word rate** (the share of word tokens, runs of letters lower-cased, that never occur in the reference
vocabulary); the **vocabulary overlap** (the share of a set's distinct words found in it); and the shares of
characters that are digits and punctuation.

The reference vocabulary is the run's other training rows, not a dictionary: what matters is what the model saw in
training (it learned AG News' names and jargon, which no dictionary lists), and a word outside it is new to the
classifier's training whether it is misspelt, machine-garbled or a name never seen. The training side is measured
on rows held out of that vocabulary, so its non-word rate is the rate of new words that ordinary training-like text
has, the baseline for the file's.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np

WORD = re.compile(r"[^\W\d_]+")  # letters only: numbers and punctuation are counted separately


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def vocabulary(texts: list[str]) -> set[str]:
    """The distinct lower-cased words of ``texts``."""
    vocab: set[str] = set()
    for t in texts:
        vocab.update(words(t))
    return vocab


def run_tokenizer(run: Path):
    """The run's fast tokenizer (``tokenizers`` library, no truncation) and its unknown token's id (or None);
    ``(None, None)`` when the run folder has no ``tokenizer.json``."""
    folder = Path(run) / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        return None, None
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception:  # the tokenizers library raises a bare Exception for a damaged file
        return None, None
    tok.no_truncation()
    tok.no_padding()
    unk = None
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        name = config.get("unk_token")
        name = name.get("content") if isinstance(name, dict) else name
        unk = tok.token_to_id(name) if isinstance(name, str) else None
    except (OSError, ValueError, AttributeError):
        pass
    return tok, unk


def _char_rates(texts: list[str]) -> tuple[float, float]:
    chars = Counter()
    for t in texts:
        for c in t:
            if not c.isspace():
                chars["all"] += 1
                if c.isdigit():
                    chars["digit"] += 1
                elif unicodedata.category(c).startswith("P"):
                    chars["punct"] += 1
    n = max(chars["all"], 1)
    return chars["digit"] / n, chars["punct"] / n


def describe(
    texts: list[str], vocab: set[str], tokenizer=None, unk_id: int | None = None, max_length=None
) -> dict:
    """The statistics of one set of texts (see the module docstring); rates and shares are fractions.

    Args:
        texts: The texts.
        vocab: The reference vocabulary (lower-cased words).
        tokenizer: A ``tokenizers.Tokenizer`` (token lengths and the unknown-token rate), or None to skip those.
        unk_id: The tokenizer's unknown-token id (None: the rate is 0).
        max_length: The run's max length in tokens, for the share of rows it truncates.
    """
    per_row = [words(t) for t in texts]
    n_words = np.array([len(t.split()) for t in texts]) if texts else np.zeros(0)
    all_words = [w for ws in per_row for w in ws]
    types = set(all_words)
    digit, punct = _char_rates(texts)
    out = {
        "rows": len(texts),
        "empty_rows": sum(1 for t in texts if not t.strip()),
        "words_mean": float(n_words.mean()) if len(n_words) else 0.0,
        "words_median": float(np.median(n_words)) if len(n_words) else 0.0,
        "non_word_rate": sum(w not in vocab for w in all_words) / max(len(all_words), 1),
        "vocabulary_overlap": len(types & vocab) / max(len(types), 1),
        "distinct_words": len(types),
        "digit_rate": digit,
        "punctuation_rate": punct,
    }
    if tokenizer is not None:
        ids = [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)] if texts else []
        lengths = np.array([len(x) for x in ids]) if ids else np.zeros(0)
        total = max(int(lengths.sum()), 1)
        special = tokenizer.num_special_tokens_to_add(False)  # [CLS] and [SEP] around each text, for BERT
        out.update(
            tokens_mean=float(lengths.mean()) if len(lengths) else 0.0,
            tokens_median=float(np.median(lengths)) if len(lengths) else 0.0,
            unknown_token_rate=(sum(x.count(unk_id) for x in ids) / total) if unk_id is not None else 0.0,
            over_max_length=float(np.mean(lengths + special > max_length))
            if max_length and len(lengths)
            else 0.0,
        )
    return out
