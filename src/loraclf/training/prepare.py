"""Preparing a run: every check and every expensive input step, before anything is written.

``prepare`` reads the training files (one or several, sharing one label map), drops empty texts (saying how
many), carves the stratified validation split (from the first file only; augmented rows derived from validation
rows are left out), applies the richness filter and the stratified ``--max-train-samples`` sample, checks for texts
shared by training and evaluation (a leakage check), plans the exact trainable-parameter count against the budget,
measures token lengths to choose ``max_length``, tokenises once (cached on disk) and, for distillation, computes
the teachers' probabilities. Any problem is a ``UserError`` raised while the run folder does not exist yet.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loraclf.config.recipe import Recipe, validate
from loraclf.data.batching import token_lengths, tokenize
from loraclf.data.tables import (
    TextSet,
    choose_max_length,
    drop_empty,
    length_stats,
    load_texts,
    load_train_texts,
    richness_filter,
    stratified_indices,
)
from loraclf.modeling.backbones import cache_dir, load_config, load_tokenizer, position_limit
from loraclf.modeling.plan import Plan, check_budget, plan
from loraclf.runfolder.schema import read_recipe, read_run_info
from loraclf.training.losses import teacher_log_probs
from loraclf.utils.errors import UserError, say


@dataclass
class Prepared:
    """Everything a run needs, checked and tokenised, before anything is written."""

    recipe: Recipe
    label_map: list
    train: TextSet
    eval: TextSet
    train_ids: list
    eval_ids: list
    max_length: int
    lengths: dict
    plan: Plan
    tokenizer: object
    notes: dict = field(default_factory=dict)
    teacher_log_probs: np.ndarray | None = None


def prepare(recipe: Recipe, train_path: str | list[str], eval_path: str | None) -> Prepared:
    """Load, clean, split, sample, plan and tokenise; raise UserError on any problem, write nothing.

    Args:
        recipe: The resolved recipe.
        train_path: One training file or several (the first holds the real labelled rows).
        eval_path: The evaluation file, or None for a stratified split of the first training file.

    Raises:
        UserError: any problem with the files, the recipe, the budget or the environment, before a folder exists.
    """
    validate(recipe)
    if recipe.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError(
            "train.tensorboard needs the tensorboard package: pip install tensorboard (or set it false)"
        )
    train_paths = [train_path] if isinstance(train_path, str) else list(train_path)
    train_set, eval_set, label_map, notes = _rows(recipe, train_paths, eval_path)
    the_plan = plan(recipe, len(label_map))
    check_budget(the_plan)
    tokenizer = load_tokenizer(recipe.model.name, recipe.model, recipe.data.truncation_side)
    max_length, stats, train_ids, eval_ids = _tokens(recipe, tokenizer, train_set, eval_set)
    teachers = None
    if recipe.distill.teachers:
        teachers = teacher_log_probs(recipe.distill.teachers, train_set.texts, label_map, say)
        notes["teachers"] = [_absolute(t) for t in recipe.distill.teachers]
    return Prepared(
        recipe,
        label_map,
        train_set,
        eval_set,
        train_ids,
        eval_ids,
        max_length,
        stats,
        the_plan,
        tokenizer,
        notes,
        teachers,
    )


def _rows(recipe: Recipe, train_paths: list[str], eval_path: str | None):
    """Training and evaluation rows, the label map and the data notes recorded in run.json."""
    d, seed = recipe.data, recipe.train.seed
    train_set, label_map = load_train_texts(train_paths, d, "--train")
    train_set, dropped = drop_empty(train_set, "--train")
    notes = {
        "train_file": _absolute(train_paths[0])
        if len(train_paths) == 1
        else [_absolute(x) for x in train_paths],
        "eval_file": _absolute(eval_path),
        "dropped_empty_train": dropped,
    }
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
    return train_set, eval_set, label_map, notes


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


def _filter_and_sample(train_set: TextSet, d, seed: int, notes: dict) -> TextSet:
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


def _tokens(recipe: Recipe, tokenizer, train_set: TextSet, eval_set: TextSet):
    """The max length (given, or the ``length_quantile`` of training lengths), length statistics, token ids."""
    d = recipe.data
    lengths = token_lengths(tokenizer, train_set.texts, progress=recipe.train.progress)
    # Tokenizers without a saved limit report a huge model_max_length; the position table is the real bound.
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 4096)
    limit = min(limit, position_limit(load_config(recipe.model.name, model_cfg=recipe.model)) or limit)
    if d.max_length is not None and d.max_length > limit:
        raise UserError(
            f"data.max_length={d.max_length} is longer than {recipe.model.name} can read ({limit} tokens); "
            f"set data.max_length to at most {limit}"
        )
    max_length = d.max_length or choose_max_length(lengths, d.length_quantile, limit)
    stats = length_stats(lengths)
    stats.update(
        {
            "max_length": max_length,
            "quantile": d.length_quantile,
            "truncated": int((lengths > max_length).sum()),
            "histogram": np.bincount(lengths).tolist(),
        }
    )
    cache = cache_dir() / "tokens"
    train_ids = tokenize(tokenizer, train_set.texts, max_length, cache, progress=recipe.train.progress)
    eval_ids = tokenize(tokenizer, eval_set.texts, max_length, cache, progress=recipe.train.progress)
    return max_length, stats, train_ids, eval_ids


def _absolute(path: str | None) -> str | None:
    """Files are recorded by absolute path so that `--resume` works from any working directory."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def overlap_count(train_texts: list[str], eval_texts: list[str]) -> int:
    """Evaluation texts that also occur in training, after case and punctuation are ignored (a leakage check)."""

    def norm(t: str) -> str:
        return " ".join("".join(c.lower() if c.isalnum() else " " for c in t).split())

    seen = {norm(t) for t in train_texts}
    return sum(norm(t) in seen for t in eval_texts)


def resume_run(out: Path) -> tuple[Prepared, Path]:
    """Rebuild the prepared state of an interrupted run from its folder alone."""
    run = Path(out)
    if not (run / "run.json").is_file() or not (run / "recipe.yaml").is_file():
        raise UserError(f"--resume: '{run}' is not a loraclf run folder (no run.json/recipe.yaml)")
    try:
        info = read_run_info(run)
        recipe = read_recipe(run)
    except UserError as exc:
        raise UserError(f"--resume: {exc}") from None
    if info.complete:
        raise UserError(f"--resume: run '{run}' is already complete; evaluate or predict with it")
    data = info.data
    if "train_file" not in data:
        raise UserError(f"--resume: '{run / 'run.json'}' does not name its training file; start a new run")
    if recipe.data.max_length is None:
        recipe.data.max_length = info.max_length
    p = prepare(recipe, data["train_file"], data.get("eval_file"))
    return p, run
