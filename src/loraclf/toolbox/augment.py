"""Label-preserving data augmentation: WordNet synonym replacement, EDA, and the ``augment`` command's file handling.

Methods (``loraclf augment --method …``):

``synonym``
    In each text, ``rate`` × (eligible words), at least one, are replaced by a WordNet synonym chosen at random
    (:mod:`loraclf.toolbox.wordnet`). Eligible words are ASCII-alphabetic, at least three letters long, not stopwords, not
    acronyms, and not capitalised in mid-sentence: capitalised words there are mostly names, and "Bush" must not
    become "shrub". A replacement keeps the capital of the word it replaces.
``eda``
    Easy Data Augmentation (Wei & Zou, 2019, arXiv:1901.11196). Each copy applies one of four operations, chosen at
    random, with strength alpha = ``rate`` and n = max(1, ⌊alpha · words⌋): synonym replacement of n words; random
    insertion, n times, of a synonym of a random word at a random position; random swap, n times, of two words;
    random deletion of each word with probability alpha (never of every word).
``generate``
    Class-conditioned samples from an adapted causal LM: :mod:`loraclf.toolbox.generate`.
``noise``
    Seeded perturbations that imitate the machine-written rows of the competition's test file (dropped, swapped
    and repeated words, invented names, anachronistic dates, typos, run-on sentences, truncation) at a strength
    from 0 to 1: :mod:`loraclf.toolbox.noise`. Names are told from words by the whole input's vocabulary.

Every input row draws from its own ``random.Random`` seeded with (seed, row index), so a row's copies do not depend
on the other rows (except, for ``noise``, through the input's vocabulary that tells names from words) and one seed
always writes the same file. Augmentation works on texts after loraclf's default
cleaning (HTML entities decoded, whitespace collapsed), so that scraper remnants such as ``quot;`` or ``&lt;`` are
never taken for words; original rows are copied verbatim. Copies identical to their original or to an earlier copy
are dropped: they would only re-weight the row.

The output table has the columns ``text``, ``label``, ``source`` (``original``, ``synonym``, ``eda``, ``noise`` or
``generate``) and ``parent`` (0-based row of the original an augmented row was made from; originals come first, so
this is also its row in the output), plus ``prompt`` (and ``confidence`` with a filter) for generated rows. An input
that already has a ``source`` column, such as an earlier ``augment`` output, keeps its provenance columns.
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from loraclf.config import CleanConfig, DataConfig
from loraclf.data.clean import clean_texts
from loraclf.data.readers import read_table
from loraclf.data.tables import raw_labels, texts_of
from loraclf.utils.errors import UserError, did_you_mean
from loraclf.utils.files import atomic_path

METHODS = ("synonym", "eda", "noise", "generate")
EDA_OPERATIONS = ("replace", "insert", "swap", "delete")
OUTPUT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".ndjson", ".parquet", ".pq")
PROVENANCE = ("source", "parent", "prompt", "confidence")
SENTENCE_END = (".", "!", "?")
# Function words, pronouns, auxiliaries and reporting fillers: replacing them changes grammar, not content.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves
    says said say told according week year years today yesterday monday tuesday wednesday thursday friday saturday
    sunday new one two three first last
    """.split()  # noqa: SIM905
)
# A token is replaceable when it is one run of letters with optional punctuation around it ("said," "(Reuters)").
_WORD = re.compile(r"^([^A-Za-z]*)([A-Za-z]+)([^A-Za-z]*)$")

Lookup = Callable[[str], tuple[str, ...]]


def _wordnet_synonyms(word: str) -> tuple[str, ...]:
    from loraclf.toolbox.wordnet import synonyms

    return synonyms(word)


def eligible(tokens: list[str]) -> list[int]:
    """Positions of the tokens whose word may be replaced (see the module docstring for the rules)."""
    out = []
    for i, tok in enumerate(tokens):
        m = _WORD.match(tok)
        if m is None:
            continue
        core = m.group(2)
        if len(core) < 3 or core.lower() in STOPWORDS or core.isupper():
            continue
        if core[0].isupper() and i > 0 and not tokens[i - 1].endswith(SENTENCE_END):
            continue
        out.append(i)
    return out


def _with_synonym(token: str, synonym: str) -> str:
    prefix, core, suffix = _WORD.match(token).groups()
    if core[0].isupper():
        synonym = synonym[0].upper() + synonym[1:]
    return prefix + synonym + suffix


def synonym_replacement(tokens: list[str], n: int, rng: random.Random, lookup: Lookup) -> list[str]:
    """Replace up to ``n`` eligible words, in random order, by a random synonym; words without one are skipped."""
    out = list(tokens)
    candidates = eligible(out)
    rng.shuffle(candidates)
    done = 0
    for i in candidates:
        if done >= n:
            break
        choices = lookup(_WORD.match(out[i]).group(2))
        if choices:
            out[i] = _with_synonym(out[i], rng.choice(choices))
            done += 1
    return out


def random_insertion(tokens: list[str], n: int, rng: random.Random, lookup: Lookup) -> list[str]:
    """Insert, ``n`` times, a synonym of a random eligible word at a random position."""
    out = list(tokens)
    for _ in range(n):
        candidates = eligible(out)
        # As in the EDA code: a few tries to find a word that has synonyms, then give up.
        for _try in range(10):
            if not candidates:
                break
            choices = lookup(_WORD.match(out[rng.choice(candidates)]).group(2))
            if choices:
                out.insert(rng.randint(0, len(out)), rng.choice(choices))
                break
    return out


def random_swap(tokens: list[str], n: int, rng: random.Random) -> list[str]:
    """Swap two random positions, ``n`` times; the multiset of tokens is unchanged."""
    out = list(tokens)
    for _ in range(n if len(out) > 1 else 0):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(tokens: list[str], p: float, rng: random.Random) -> list[str]:
    """Delete each token with probability ``p``; keeps one random token rather than return nothing."""
    if len(tokens) <= 1:
        return list(tokens)
    kept = [t for t in tokens if rng.random() >= p]
    return kept or [rng.choice(tokens)]


def synonym_augment(text: str, rate: float, rng: random.Random, lookup: Lookup | None = None) -> str:
    """One synonym-replaced copy of ``text``: ``max(1, round(rate · eligible words))`` replacements, 0 if rate is 0."""
    tokens = text.split()
    if rate <= 0 or not tokens:
        return text
    n = max(1, round(rate * len(eligible(tokens))))
    out = synonym_replacement(tokens, n, rng, lookup or _wordnet_synonyms)
    return " ".join(out) if out != tokens else text


def eda_augment(
    text: str, alpha: float, rng: random.Random, lookup: Lookup | None = None, operation: str | None = None
) -> str:
    """One EDA copy of ``text``: a random operation (or ``operation``) of strength ``alpha``."""
    tokens = text.split()
    if alpha <= 0 or not tokens:
        return text
    lookup = lookup or _wordnet_synonyms
    operation = operation or rng.choice(EDA_OPERATIONS)
    n = max(1, int(alpha * len(tokens)))
    if operation == "replace":
        out = synonym_replacement(tokens, n, rng, lookup)
    elif operation == "insert":
        out = random_insertion(tokens, n, rng, lookup)
    elif operation == "swap":
        out = random_swap(tokens, n, rng)
    elif operation == "delete":
        out = random_deletion(tokens, alpha, rng)
    else:
        raise ValueError(f"unknown EDA operation {operation!r}")
    return " ".join(out) if out != tokens else text


def augment_rows(texts: list[str], method: str, copies: int, rate: float, seed: int) -> tuple[list, int]:
    """(parent row, new text) pairs for ``copies`` copies of every text, and the number of dropped copies.

    ``rate`` is the synonym rate, EDA's alpha, or the noise strength. Copies equal to their original or to an
    earlier copy of the same row are dropped.
    """
    if method == "noise":
        from loraclf.toolbox.noise import common_words, noise_augment

        fn = partial(noise_augment, common=common_words(texts))
    else:
        fn = synonym_augment if method == "synonym" else eda_augment
    pairs, dropped = [], 0
    for row, text in enumerate(texts):
        rng = random.Random(f"{seed}:{row}")  # a str seed is hashed with SHA-512: stable across processes
        seen = {text}
        for _ in range(copies):
            new = fn(text, rate, rng)
            if new in seen:
                dropped += 1
                continue
            seen.add(new)
            pairs.append((row, new))
    return pairs, dropped


# --- files -------------------------------------------------------------------------------------------------------


def check_output(output: str, input_path: str) -> Path:
    """Fail before any work when ``--output`` cannot be written."""
    out = Path(output).expanduser()
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(
            f"--output: '{out}' has an unknown format '{out.suffix}'; use .csv, .tsv, .jsonl or .parquet"
        )
    if out.is_dir():
        raise UserError(f"--output: '{out}' is a folder; give a file name such as augmented.csv")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"--output: folder '{parent}' does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise UserError(f"--output: cannot write into '{parent}' (permission denied); choose another folder")
    if Path(input_path).exists() and out.resolve() == Path(input_path).resolve():
        raise UserError(f"--output: '{out}' is the --input file; write the augmented table to a new file")
    return out


def write_table(df: pd.DataFrame, path: Path, flag: str = "--output") -> None:
    """Write CSV/TSV/JSONL/Parquet by extension, atomically: a crash never leaves half a file at ``path``."""
    suffix = path.suffix.lower()
    try:
        with atomic_path(path) as tmp:
            if suffix in (".csv", ".tsv"):
                df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
            elif suffix in (".jsonl", ".json", ".ndjson"):
                df.to_json(tmp, orient="records", lines=True, force_ascii=False)
            else:
                df.to_parquet(tmp, index=False)
    except OSError as exc:
        raise UserError(f"{flag}: cannot write '{path}' ({exc.strerror or exc}); check the folder") from None
    except (ValueError, TypeError) as exc:  # pyarrow refuses columns of mixed types
        raise UserError(
            f"{flag}: cannot write '{path}' ({exc}); write a .csv or .jsonl file instead"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)  # after a failure or an interrupt; gone already after success


def output_frame(df: pd.DataFrame, texts: list[str], labels: list, new_rows: list[dict], keep: bool):
    """The output table: the input rows (when ``keep``) followed by the new rows, with provenance columns."""
    originals = pd.DataFrame({"text": texts, "label": labels})
    for col in PROVENANCE:
        if col in df.columns:  # an earlier augment output: keep its provenance
            originals[col] = df[col].to_numpy()
    if "source" not in df.columns:
        originals["source"] = "original"
    parts = ([originals] if keep else []) + ([pd.DataFrame.from_records(new_rows)] if new_rows else [])
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["text", "label"])
    if "parent" not in out.columns:
        out["parent"] = None
    # Nullable integers: original rows get blanks, not "nan", and parents stay integers.
    out["parent"] = pd.to_numeric(out["parent"], errors="coerce").astype("Int64")
    if "confidence" in out.columns:  # read back from a CSV, blanks are strings
        out["confidence"] = pd.to_numeric(out["confidence"], errors="coerce")
    first = ["text", "label", "source", "parent"]
    return out[first + [c for c in out.columns if c not in first]]


# --- the command -------------------------------------------------------------------------------------------------


def check_args(args) -> str:
    """Validate the options of ``args.method`` before any work; returns the method."""
    method = str(args.method).strip().lower()
    if method not in METHODS:
        raise UserError(
            f"--method: '{args.method}' is not one of {', '.join(METHODS)}{did_you_mean(method, METHODS)}"
        )
    if not 0 <= args.rate <= 1:
        raise UserError(f"--rate must be a fraction in [0, 1], got {args.rate}")
    if args.strength is not None and method != "noise":
        raise UserError(f"--strength applies to --method noise only; {method} takes --rate")
    if args.strength is not None and not 0 <= args.strength <= 1:
        raise UserError(f"--strength must be in [0, 1] (0 leaves texts unchanged), got {args.strength}")
    if args.copies < 1:
        raise UserError(f"--copies must be at least 1, got {args.copies}")
    if method == "generate":
        _check_generate_args(args)
    return method


def _check_generate_args(args) -> None:
    checks = [
        (args.per_class >= 1, "--per-class", f"must be at least 1, got {args.per_class}"),
        (1 <= args.min_words <= args.max_words, "--min-words/--max-words",
         f"need 1 <= min <= max, got {args.min_words} and {args.max_words}"),
        (args.repetition_penalty > 0, "--repetition-penalty", f"must be positive, got {args.repetition_penalty}"),
        (0 < args.top_p <= 1, "--top-p", f"must be in (0, 1], got {args.top_p}"),
        (args.temperature > 0, "--temperature", f"must be positive, got {args.temperature}"),
        (0 <= args.min_confidence <= 1, "--min-confidence", f"must be in [0, 1], got {args.min_confidence}"),
        (args.lm_epochs >= 0, "--lm-epochs", f"must be 0 (no adaptation) or more, got {args.lm_epochs}"),
        (args.lm_lr is None or args.lm_lr > 0, "--lm-lr", f"must be positive, got {args.lm_lr}"),
        (args.lm_batch_size >= 1, "--lm-batch-size", f"must be at least 1, got {args.lm_batch_size}"),
        (args.gen_batch_size >= 1, "--gen-batch-size", f"must be at least 1, got {args.gen_batch_size}"),
    ]  # fmt: skip
    for ok, flag, msg in checks:
        if not ok:
            raise UserError(f"{flag} {msg}")
    lm_out = Path(args.lm_out) if args.lm_out else None
    if lm_out is not None and lm_out.exists() and (not lm_out.is_dir() or any(lm_out.iterdir())):
        raise UserError(
            f"--lm-out: '{lm_out}' already exists and is not an empty folder; choose a new folder"
        )


def target_texts(args, texts: list[str]) -> list[str]:
    """The cleaned, non-empty texts the LM adapts on: ``--target`` (labels not needed), else ``texts``."""
    if not args.target:
        return [t for t in texts if t.strip()]
    df = read_table(args.target, "--target")
    raw = texts_of(
        df,
        DataConfig(text_column=args.text_column),
        args.target,
        "--target",
        "name it with --text-column NAME",
    )
    target = [t for t in clean_texts(raw, CleanConfig()) if t.strip()]
    if not target:
        raise UserError(
            f"--target: '{args.target}' has no non-empty texts; pass unlabelled target-domain texts"
        )
    return target


def _noise_strength(args) -> float:
    from loraclf.toolbox.noise import DEFAULT_STRENGTH

    return DEFAULT_STRENGTH if args.strength is None else args.strength


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_augment(args) -> int:
    """Read ``--input``, add augmented rows by ``--method``, write ``--output`` and print a one-line summary."""
    method = check_args(args)
    out = check_output(args.output, args.input)
    cfg = DataConfig(text_column=args.text_column, label_column=args.label_column)
    df = read_table(args.input, "--input")
    if len(df) == 0:
        raise UserError(f"--input: '{args.input}' has a header but no data rows; add rows")
    raw = texts_of(df, cfg, args.input, "--input", "name it with --text-column NAME")
    labels = raw_labels(df, cfg, args.input, "--input", "name it with --label-column NAME")
    texts = clean_texts(raw, CleanConfig())
    if method == "generate":
        from loraclf.toolbox.generate import run_generate

        target = target_texts(args, texts) if args.lm_epochs > 0 else []
        new_rows, note = run_generate(args, texts, labels, target, log=None if args.quiet else log)
    else:
        rate = args.rate if method != "noise" else _noise_strength(args)
        pairs, dropped = augment_rows(texts, method, args.copies, rate, args.seed)
        new_rows = [{"text": t, "label": labels[p], "source": method, "parent": p} for p, t in pairs]
        note = f"{dropped:,} unchanged or repeated copies dropped"
    frame = output_frame(df, raw, labels, new_rows, args.keep_original)
    write_table(frame, out)
    print(
        f"augment {method}: {len(df):,} rows in, {len(new_rows):,} rows added, {len(frame):,} rows out "
        f"({note}); wrote {out}"
    )
    return 0
