"""The rows of a run: training files read and labelled, the validation split, the filter and the sample.

``read_rows`` reads the training files (one or several, sharing one label map), drops empty texts (saying how
many), carves the stratified validation split (from the first file only; augmented rows derived from validation
rows are left out), applies the richness filter (after the split, so validation keeps the distribution it
measures) and the stratified ``--max-train-samples`` sample, and counts texts shared by training and evaluation (a
leakage check). It needs pandas and numpy but no model library, so the command line runs it before torch and
transformers load: a data mistake is reported without waiting for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loraclf.config import DataConfig
from loraclf.data.labels import same_number_labels
from loraclf.data.tables import (
    TextSet,
    drop_empty,
    load_texts,
    load_train_texts,
    richness_filter,
    stratified_indices,
)
from loraclf.utils.errors import UserError, say, short_list


@dataclass
class Rows:
    """The training and evaluation rows of a run, its label map, and notes for run.json's data summary."""

    train: TextSet
    eval: TextSet
    label_map: list
    notes: dict = field(default_factory=dict)


def read_rows(d: DataConfig, seed: int, train_path: str | list[str], eval_path: str | None) -> Rows:
    """Training and evaluation rows, the label map and the data notes recorded in run.json.

    Args:
        d: The recipe's data section.
        seed: The recipe's seed (split and sample).
        train_path: One training file or several (the first holds the real labelled rows).
        eval_path: The evaluation file, or None for a stratified split of the first training file.

    Raises:
        UserError: a file is missing or malformed, the label names do not fit, or too few rows or classes remain.
    """
    train_paths = [train_path] if isinstance(train_path, str) else list(train_path)
    train_set, label_map = load_train_texts(train_paths, d, "--train")
    if d.label_names is not None and len(d.label_names) != len(label_map):
        raise UserError(
            f"data.label_names has {len(d.label_names)} names but the training file has {len(label_map)} classes "
            f"({short_list(map(str, label_map))}); give one name per class, in that order"
        )
    train_set, dropped = drop_empty(train_set, "--train")
    notes = {
        "train_file": absolute(train_paths[0])
        if len(train_paths) == 1
        else [absolute(x) for x in train_paths],
        "eval_file": absolute(eval_path),
        "dropped_empty_train": dropped,
    }
    _note_number_spellings(label_map, notes)
    if dropped:
        say(f"--train: dropped {dropped:,} rows with empty text")
    if eval_path:
        eval_set, _ = load_texts(eval_path, d, "--eval", label_map=label_map)
        eval_set, dropped_eval = drop_empty(eval_set, "--eval")
        notes["dropped_empty_eval"] = dropped_eval
        if dropped_eval:
            say(f"--eval: dropped {dropped_eval:,} rows with empty text")
    else:
        train_set, eval_set = _split(train_set, d.val_size, seed, notes)
    train_set = _filter_and_sample(train_set, d, seed, notes)
    notes["eval_texts_seen_in_train"] = overlap_count(train_set.texts, eval_set.texts)
    if notes["eval_texts_seen_in_train"]:
        say(
            f"leakage check: {notes['eval_texts_seen_in_train']:,} of {len(eval_set):,} evaluation texts also occur "
            "in the training rows (ignoring case and punctuation); evaluation scores will be optimistic"
        )
    return Rows(train_set, eval_set, label_map, notes)


def _note_number_spellings(label_map: list, notes: dict) -> None:
    """Say (and record in the data summary) which classes spell one number differently, e.g. ``01`` and ``1``.

    Labels keep the file's spelling, so such classes train apart; the note lets a user who meant one class see it.
    """
    groups = same_number_labels(label_map)
    if not groups:
        return
    notes["labels_spelling_one_number"] = groups
    shown = "; ".join(" and ".join(repr(x) for x in g) for g in groups[:3])
    more = f" (and {len(groups) - 3} more groups)" if len(groups) > 3 else ""
    say(
        f"--train: labels {shown}{more} spell one number differently; they are trained as separate classes, as "
        "the file writes them (make the spellings agree if each group is one class)"
    )


def _split(train_set: TextSet, val_size: float, seed: int, notes: dict) -> tuple[TextSet, TextSet]:
    """A stratified validation split of the first training file's rows."""
    # With several training files the validation rows come from the first (the real labelled data), so
    # augmented or pseudo-labelled rows never decide which checkpoint is kept.
    first = np.arange(len(train_set)) if train_set.part is None else np.flatnonzero(train_set.part == 0)
    _, held = stratified_indices(train_set.labels[first], val_size, seed)
    held = first[held]
    keep = np.setdiff1d(np.arange(len(train_set)), held)
    if train_set.part is not None:
        # Augmented copies of validation rows would leak them into training: drop them too.
        derived = np.isin(train_set.parent[keep], train_set.parent[held]) & (train_set.part[keep] > 0)
        if derived.any():
            say(f"--train: left out {int(derived.sum()):,} augmented rows derived from validation rows")
            notes["dropped_derived_from_validation"] = int(derived.sum())
        keep = keep[~derived]
    notes["validation"] = f"stratified split of {len(held):,} training rows (seed {seed})"
    return train_set.subset(keep), train_set.subset(held)


def _filter_and_sample(train_set: TextSet, d: DataConfig, seed: int, notes: dict) -> TextSet:
    """The richness filter, then ``--max-train-samples`` (stratified); at least two classes must remain."""
    # The filter runs after the split so that validation keeps the full distribution it is meant to measure.
    train_set, filtered = richness_filter(train_set, d.filter)
    if filtered:
        notes["filtered_train"] = filtered
        say(f"data.filter: dropped {filtered:,} training rows; {len(train_set):,} remain")
    n_classes = len(set(train_set.labels.tolist()))
    if d.max_train_samples is not None and d.max_train_samples < n_classes:
        raise UserError(
            f"--max-train-samples {d.max_train_samples} is fewer than the {n_classes} classes of the training "
            "rows; sample at least one row per class"
        )
    if d.max_train_samples is not None and d.max_train_samples < len(train_set):
        _, sample = stratified_indices(train_set.labels, d.max_train_samples, seed)
        train_set = train_set.subset(sample)
    if len(set(train_set.labels.tolist())) < 2:
        raise UserError("--train: fewer than two classes remain after splitting/sampling; give more rows")
    return train_set


def absolute(path: str | None) -> str | None:
    """Files are recorded by absolute path so that `--resume` works from any working directory."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def overlap_count(train_texts: list[str], eval_texts: list[str]) -> int:
    """Evaluation texts that also occur in training, after case and punctuation are ignored (a leakage check)."""

    def norm(t: str) -> str:
        return " ".join("".join(c.lower() if c.isalnum() else " " for c in t).split())

    seen = {norm(t) for t in train_texts}
    return sum(norm(t) in seen for t in eval_texts)
