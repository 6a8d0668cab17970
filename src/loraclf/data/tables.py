"""Loading, cleaning, splitting and measuring labelled text sets.

A data file is CSV, TSV, JSONL, Parquet, a saved Hugging Face dataset folder, a hub dataset id (``ag_news`` or
``ag_news:test``), or a pickle read through the restricted loader (reading is :mod:`loraclf.data.readers`; a CSV
read with the wrong ``data.header`` is caught by :mod:`loraclf.data.headers`). Each row gives a text, from ``text``
or from ``title`` + ``description`` joined as the Hugging Face AG News does, a label (int or string) and optionally
an id. Labels are mapped to class indices through a label map fixed by the training file and saved with the run,
so predictions come back in the training file's label space whatever layout the prediction file uses.

Labels keep the training file's spelling (``01`` stays ``01``; numbers are unified only in columns of numbers, see
:mod:`loraclf.data.labels`) and compare exactly, after surrounding whitespace is stripped from string labels
(``" World "`` is ``World``). Case is kept: ``world`` in an evaluation file is not the training label ``World``,
and the error names the training label it resembles rather than guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loraclf.config import DataConfig
from loraclf.data.clean import clean_texts
from loraclf.data.headers import check_header
from loraclf.data.labels import build_label_map, column_labels, encode_labels
from loraclf.data.readers import read_table
from loraclf.utils.errors import UserError, did_you_mean, short_list


@dataclass
class TextSet:
    """Cleaned texts with class indices (``None`` when unlabelled) and row ids."""

    texts: list[str]
    labels: np.ndarray | None
    ids: list
    source: str
    # Which file of a multi-file training set each row came from (0 = the first); None for one file.
    part: np.ndarray | None = None
    # With several files: a first-file row's own row number, or for a later file's row the first-file row it was
    # derived from (the `parent` column `loraclf augment` writes), else -1.
    parent: np.ndarray | None = None
    # The texts as the file has them, before cleaning: what another run (a distillation teacher) cleans its own way.
    raw: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> TextSet:
        idx = np.asarray(idx, dtype=np.int64)
        return TextSet(
            [self.texts[i] for i in idx],
            None if self.labels is None else self.labels[idx],
            [self.ids[i] for i in idx],
            self.source,
            None if self.part is None else self.part[idx],
            None if self.parent is None else self.parent[idx],
            None if self.raw is None else [self.raw[i] for i in idx],
        )


def texts_of(
    df: pd.DataFrame, cfg: DataConfig, source: str, flag: str, fix: str = "set data.text_column=NAME"
) -> list[str]:
    """The text of every row: the text column, else title + join + description."""
    cols = [str(c) for c in df.columns]
    if cfg.text_column in df.columns:
        col = df[cfg.text_column]
        return ["" if _missing(v) else str(v) for v in col]
    if cfg.title_column in df.columns and cfg.description_column in df.columns:
        titles = ["" if _missing(v) else str(v) for v in df[cfg.title_column]]
        descs = ["" if _missing(v) else str(v) for v in df[cfg.description_column]]
        return [(t + cfg.join + d).strip() if t and d else (t or d) for t, d in zip(titles, descs)]
    hint = did_you_mean(cfg.text_column, cols)
    raise UserError(
        f"{flag}: '{source}' has no column '{cfg.text_column}' (nor '{cfg.title_column}' + "
        f"'{cfg.description_column}'){hint}; its columns are {short_list(cols)}; {fix}"
    )


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def raw_labels(
    df: pd.DataFrame, cfg: DataConfig, source: str, flag: str, fix: str = "set data.label_column=NAME"
) -> list:
    if df.attrs.get("text_folder") == "unlabelled":
        raise UserError(
            f"{flag}: folder '{source}' holds texts but no class folders; put each class's files in a folder "
            "named by the class (e.g. train/World/1.txt)"
        )
    if cfg.label_column not in df.columns:
        cols = [str(c) for c in df.columns]
        raise UserError(
            f"{flag}: '{source}' has no label column '{cfg.label_column}'{did_you_mean(cfg.label_column, cols)}; "
            f"its columns are {short_list(cols)}; {fix}"
        )
    out = []
    for row, v in enumerate(df[cfg.label_column], 1):
        if _missing(v) or (isinstance(v, str) and not v.strip()):
            raise UserError(
                f"{flag}: '{source}' row {row}, column '{cfg.label_column}': label is empty; fill it in or remove the row"
            )
        out.append(v)
    return column_labels(out)


def ids_of(df: pd.DataFrame, cfg: DataConfig) -> list:
    if cfg.id_column in df.columns:
        # IDs go back into the submission verbatim: "007" must stay "007".
        return [i if _missing(v) else v for i, v in enumerate(df[cfg.id_column])]
    return list(range(len(df)))


COLUMN_KEYS = ("set data.text_column=NAME", "set data.label_column=NAME")
COLUMN_FLAGS = ("name it with --text-column NAME", "name it with --label-column NAME")


def load_texts(
    path: str,
    cfg: DataConfig,
    flag: str,
    *,
    label_map: list | None = None,
    labelled: bool = True,
    fixes: tuple[str, str] = COLUMN_KEYS,
):
    """Read, clean and label a file. Returns (TextSet, label_map); the label map is built when not given.

    ``fixes`` are the hints a missing text or label column gets: recipe keys in ``train``, flags elsewhere.
    """
    df = read_table(path, flag, cfg)
    if len(df) == 0:
        raise UserError(f"{flag}: '{path}' has a header but no data rows; add rows")
    check_header(df, cfg, path, flag, label_map=label_map, labelled=labelled)
    raw_texts = texts_of(df, cfg, path, flag, fixes[0])
    texts = clean_texts(raw_texts, cfg.clean)
    labels = None
    if labelled:
        raw = raw_labels(df, cfg, path, flag, fixes[1])
        if label_map is None:
            label_map = build_label_map(raw, path, flag)
        labels = encode_labels(raw, label_map, path, flag)
    return TextSet(texts, labels, ids_of(df, cfg), path, raw=raw_texts), label_map


def load_train_texts(paths: list[str], cfg: DataConfig, flag: str) -> tuple[TextSet, list]:
    """Read one or several labelled files as one training set (e.g. the original rows plus augmented or
    pseudo-labelled ones); the label map is built over all of them so a class missing from one file is kept."""
    if len(paths) == 1:
        return load_texts(paths[0], cfg, flag)
    frames = []
    for path in paths:
        df = read_table(path, flag, cfg)
        if len(df) == 0:
            raise UserError(f"{flag}: '{path}' has a header but no data rows; add rows or leave the file out")
        check_header(df, cfg, path, flag)
        frames.append((path, df, raw_labels(df, cfg, path, flag)))
    source = " + ".join(paths)
    label_map = build_label_map([x for _, _, raw in frames for x in raw], source, flag)
    texts, labels, ids, part, parent, raw_texts = [], [], [], [], [], []
    for k, (path, df, raw) in enumerate(frames):
        raw_texts += texts_of(df, cfg, path, flag)
        texts += clean_texts(raw_texts[len(texts) :], cfg.clean)
        labels.append(encode_labels(raw, label_map, path, flag))
        ids += [f"{Path(path).name}:{i}" for i in ids_of(df, cfg)]
        part.append(np.full(len(df), k, dtype=np.int64))
        if k == 0:
            parent.append(np.arange(len(df), dtype=np.int64))
        elif "parent" in df.columns:
            parent.append(pd.to_numeric(df["parent"], errors="coerce").fillna(-1).to_numpy(np.int64))
        else:
            parent.append(np.full(len(df), -1, dtype=np.int64))
    ts = TextSet(
        texts, np.concatenate(labels), ids, source, np.concatenate(part), np.concatenate(parent), raw_texts
    )
    return ts, label_map


def richness_filter(ts: TextSet, f) -> tuple[TextSet, int]:
    """Keep rows whose word count lies in [min_words, max_words] and whose vocabulary richness (distinct words /
    words, lower-cased) is at least min_unique_ratio: one report's domain-shift filter, which makes the training
    rows look like a test set of longer, less repetitive texts. Returns the kept rows and how many were dropped."""
    if f.min_words is None and f.max_words is None and f.min_unique_ratio is None:
        return ts, 0
    keep = []
    for i, text in enumerate(ts.texts):
        words = text.lower().split()
        n = len(words)
        if f.min_words is not None and n < f.min_words:
            continue
        if f.max_words is not None and n > f.max_words:
            continue
        if f.min_unique_ratio is not None and (n == 0 or len(set(words)) / n < f.min_unique_ratio):
            continue
        keep.append(i)
    if not keep:
        raise UserError(
            f"data.filter: no training row of '{ts.source}' passes (min_words={f.min_words}, "
            f"max_words={f.max_words}, min_unique_ratio={f.min_unique_ratio}); loosen the filter"
        )
    return ts.subset(keep), len(ts) - len(keep)


def check_unique_ids(ts: TextSet, cfg: DataConfig, flag: str) -> None:
    """A submission keyed by a repeated ID is ambiguous: name the first repeated value and its rows."""
    first: dict = {}
    for row, rid in enumerate(ts.ids, 1):
        if isinstance(rid, str) and not rid.strip():
            raise UserError(
                f"{flag}: '{ts.source}' row {row}, column '{cfg.id_column}': the id is empty; fill it in, or drop "
                "the column to number rows from 0"
            )
        if rid in first:
            raise UserError(
                f"{flag}: '{ts.source}' column '{cfg.id_column}' repeats id {rid!r} (rows {first[rid]} and {row}); "
                "ids must be unique in a prediction file"
            )
        first[rid] = row


def drop_empty(ts: TextSet, flag: str) -> tuple[TextSet, int]:
    keep = [i for i, t in enumerate(ts.texts) if t.strip()]
    if not keep:
        raise UserError(
            f"{flag}: every text in '{ts.source}' is empty after cleaning; check data.text_column"
        )
    return (ts.subset(keep), len(ts) - len(keep)) if len(keep) < len(ts) else (ts, 0)


def stratified_indices(labels: np.ndarray, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (kept, held) with ``size`` rows held (a fraction below 1 or a count), per class."""
    n = len(labels)
    n_held = round(size * n) if size < 1 else int(size)
    if not 1 <= n_held < n:
        raise UserError(
            f"data.val_size: {size} leaves {n - n_held} of {n} rows for training; choose a smaller split"
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder allocation keeps every class's share exact to one row.
    quota = counts * n_held / n
    take = np.floor(quota).astype(int)
    for j in np.argsort(-(quota - take))[: n_held - take.sum()]:
        take[j] += 1
    held = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        held.extend(rng.permutation(idx)[:k])
    held = np.sort(np.array(held, dtype=np.int64))
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask), held


def length_stats(lengths: np.ndarray) -> dict:
    q = np.percentile(lengths, [50, 90, 95, 99, 99.5]) if len(lengths) else [0] * 5
    return {
        "count": len(lengths),
        "mean": float(np.mean(lengths)) if len(lengths) else 0.0,
        "median": float(q[0]),
        "p90": float(q[1]),
        "p95": float(q[2]),
        "p99": float(q[3]),
        "p99_5": float(q[4]),
        "max": int(np.max(lengths)) if len(lengths) else 0,
    }


def choose_max_length(lengths: np.ndarray, quantile: float, model_limit: int) -> int:
    """The smallest multiple of 8 covering ``quantile`` of the texts, capped by the model's position limit."""
    need = float(np.quantile(lengths, quantile)) if len(lengths) else 8
    return int(min(model_limit, max(8, math.ceil(need / 8) * 8)))
