"""Preparing a run: every check and every expensive input step, before anything is written.

``prepare`` reads the rows (:func:`loraclf.data.splits.read_rows`: files, empty texts, the validation split, the
richness filter, the ``--max-train-samples`` sample and a leakage check), plans the exact trainable-parameter count against the budget,
measures token lengths to choose ``max_length``, tokenises once (cached on disk) and, for distillation, computes
the teachers' probabilities. Any problem is a ``UserError`` raised while the run folder does not exist yet.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loraclf.config import Recipe, validate
from loraclf.data.batching import PAD_MULTIPLE, hash_texts, token_lengths, tokenize
from loraclf.data.splits import Rows, absolute, read_rows
from loraclf.data.tables import TextSet, choose_max_length, length_stats
from loraclf.modeling.backbones import load_config, load_tokenizer, position_limit
from loraclf.modeling.methods import get_method
from loraclf.modeling.plan import Plan, check_budget, plan
from loraclf.runfolder.schema import read_recipe, read_run_info
from loraclf.training.losses import teacher_log_probs
from loraclf.utils.cache import cache_dir
from loraclf.utils.errors import PointError, UserError, say


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


def prepare(
    recipe: Recipe, train_path: str | list[str], eval_path: str | None, rows: Rows | None = None
) -> Prepared:
    """Load, clean, split, sample, plan and tokenise; raise UserError on any problem, write nothing.

    Args:
        recipe: The resolved recipe.
        train_path: One training file or several (the first holds the real labelled rows).
        eval_path: The evaluation file, or None for a stratified split of the first training file.
        rows: :func:`loraclf.data.splits.read_rows` of the same files and ``recipe.data``, when the caller read
            them already (the CLI does, before the model libraries load).

    Raises:
        UserError: any problem with the files, the recipe, the budget or the environment, before a folder exists.
    """
    validate(recipe)
    if recipe.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError(
            "train.tensorboard needs the tensorboard package: pip install tensorboard (or set it false)"
        )
    if rows is None:
        rows = read_rows(recipe.data, recipe.train.seed, train_path, eval_path)
    train_set, eval_set, label_map, notes = rows.train, rows.eval, rows.label_map, rows.notes
    the_plan = plan(recipe, len(label_map))
    check_budget(the_plan)
    tokenizer = load_tokenizer(recipe.model.name, recipe.model, recipe.data.truncation_side)
    max_length, stats, train_ids, eval_ids = _tokens(recipe, tokenizer, train_set, eval_set)
    teachers = None
    if recipe.distill.teachers:
        # Each teacher cleans the raw texts its own way (its recipe's data.clean), as ensemble members do.
        raw = train_set.raw if train_set.raw is not None else train_set.texts
        teachers = teacher_log_probs(recipe.distill.teachers, raw, label_map, say)
        notes["teachers"] = [absolute(t) for t in recipe.distill.teachers]
    notes["rows_digest"] = rows_digest(train_set, eval_set, label_map)
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


def _tokens(recipe: Recipe, tokenizer, train_set: TextSet, eval_set: TextSet):
    """The max length (given, or the ``length_quantile`` of training lengths), length statistics, token ids."""
    d = recipe.data
    lengths = token_lengths(tokenizer, train_set.texts, progress=recipe.train.progress)
    # Tokenizers without a saved limit report a huge model_max_length; the position table is the real bound.
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 4096)
    limit = min(limit, position_limit(load_config(recipe.model.name, model_cfg=recipe.model)) or limit)
    # Prompt and prefix tuning's virtual tokens take position slots before the text.
    virtual = recipe.adapter.virtual_tokens if get_method(recipe.adapter.method).virtual_tokens else 0
    # Batches are padded up to a multiple of PAD_MULTIPLE (data/batching.py): a limit that is not one would let a
    # padded batch overrun the position table (512 positions - 20 virtual tokens = 492, padded to 496).
    # Both limits depend on the configuration (a sweep may search them): a PointError fails only that trial.
    positions, limit = limit, (limit - virtual) // PAD_MULTIPLE * PAD_MULTIPLE
    if limit < 8:
        raise PointError(
            f"adapter.virtual_tokens={virtual} leaves {max(positions - virtual, 0)} of {recipe.model.name}'s "
            f"{positions} positions for the text; use fewer virtual tokens (--virtual-tokens)"
        )
    if d.max_length is not None and d.max_length > limit:
        spent = f" after adapter.virtual_tokens={virtual}" if virtual else ""
        raise PointError(
            f"data.max_length={d.max_length} is longer than {recipe.model.name} can read ({limit} tokens{spent}); "
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


def rows_digest(train_set: TextSet, eval_set: TextSet, label_map: list) -> str:
    """A digest of the rows a run trains and evaluates on: texts (as cleaned), labels as written, in order.

    ``--resume`` compares it with the one in run.json: the saved data position (epoch, batch) and class indices
    mean something only for the same rows with the same labels.
    """
    h = hashlib.sha256()
    for ts in (train_set, eval_set):
        hash_texts(h, ts.texts)
        hash_texts(h, [str(label_map[i]) for i in ts.labels])
        h.update(b"\1")
    return h.hexdigest()[:32]


def resume_run(out: Path) -> tuple[Prepared, Path]:
    """Rebuild the prepared state of an interrupted run from its folder alone.

    Raises:
        UserError: not a run folder, already complete, or its training or evaluation rows changed since it started.
    """
    run = Path(out)
    if not (run / "run.json").is_file() or not (run / "recipe.yaml").is_file():
        raise UserError(f"--resume: '{run}' is not a loraclf run folder (no run.json/recipe.yaml)")
    try:
        info = read_run_info(run)
        recipe = read_recipe(run)
    except UserError as exc:
        raise UserError(f"--resume: {exc}") from None
    if (
        info.complete and "finishing" not in info.extra
    ):  # a complete run may still lack its report and clean-up
        raise UserError(f"--resume: run '{run}' is already complete; evaluate or predict with it")
    data = info.data
    if "train_file" not in data:
        raise UserError(f"--resume: '{run / 'run.json'}' does not name its training file; start a new run")
    if recipe.data.max_length is None:
        recipe.data.max_length = info.max_length
    p = prepare(recipe, data["train_file"], data.get("eval_file"))
    if data.get("rows_digest") not in (None, p.notes["rows_digest"]):
        files = " and ".join(str(f) for f in (data["train_file"], data.get("eval_file")) if f)
        raise UserError(
            f"--resume: the rows of {files} changed since run '{run}' started (now {len(p.train):,} training / "
            f"{len(p.eval):,} evaluation rows, then {data.get('n_train')} / {data.get('n_eval')}, or "
            "their texts or labels differ); restore the files as they were, or start a new run with --out"
        )
    return p, run
