"""``loraclf compare``: train several recipes on one split and print a leaderboard.

Comparisons are only fair when every entrant sees the same rows: all entries share the training files, the
validation split (same ``data.val_size`` and ``train.seed``, so the same stratified rows are held out) or the same
``--eval`` file, and the same ``--test`` file for the final score. An entry is a recipe file (named after the file,
or ``NAME=FILE``) or one of three built-in baselines of ``--model``: ``head`` (feature extraction: the backbone
frozen, only the head trains), ``lora`` (the model's default LoRA recipe) and ``full`` (every weight trains;
the budget does not apply and the learning rate drops to 5e-5, as full fine-tuning needs).

Every recipe is resolved and validated before the first one trains, so a typo in the last entry does not cost
the hours spent on the first. ``--seeds 42,1,2`` trains every entry once per seed (each seed its own split, shared
by all entries) and reports each metric as mean ± standard deviation: a technique beats another only when the gap
is larger than the seed-to-seed spread. Entries whose run folder already holds finished metrics are read, not retrained:
re-running the same command after an interruption finishes the comparison.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from loraclf.utils.errors import UserError


def presets() -> tuple[str, ...]:
    """Entries that name an adaptation method: the model's default recipe with that ``adapter.method``."""
    from loraclf.modeling.methods import METHODS

    return tuple(METHODS)


OVERRIDE = re.compile(r"^(model|adapter|data|train|distill)\.[\w.]+=|^(budget|description)=")


@dataclass
class Entry:
    name: str
    recipe: object


def parse_entries(specs: list[str], model: str, shared: list[str]) -> list[Entry]:
    """Resolve ``NAME=FILE``, ``FILE`` or a preset into named, validated recipes with the shared overrides."""
    from loraclf.config import apply_overrides, load_recipe
    from loraclf.modeling.defaults import default_recipe
    from loraclf.modeling.methods import get_method, validate_recipe

    entries, seen = [], set()
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        if path in presets():
            method = get_method(path)
            recipe = default_recipe(model, path)
            recipe.adapter.method = path
            recipe = apply_overrides(recipe, list(method.preset))
            recipe.description = f"{model}: {method.summary.split(':')[0]} baseline"
            name = name or path
        else:
            if not Path(path).is_file():
                raise UserError(
                    f"compare: entry '{spec}' is neither a recipe file nor one of {', '.join(presets())}"
                )
            recipe = load_recipe(path)
            name = name or Path(path).stem
        if not re.fullmatch(r"[\w.+-]+", name):
            raise UserError(f"compare: entry name '{name}' must use letters, digits, '.', '+', '-' or '_'")
        if name in seen:
            raise UserError(f"compare: two entries are named '{name}'; name them with NAME=FILE")
        seen.add(name)
        entries.append(Entry(name, validate_recipe(apply_overrides(recipe, shared))))
    return entries


METRICS = ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "train_seconds")


def _row_of(run: Path, name: str, seed: int, test: dict | None) -> dict:
    from loraclf.runfolder.schema import read_json, read_recipe, read_run_info

    m, info = read_json(run / "metrics.json"), read_run_info(run)
    recipe = read_recipe(run)
    row = {
        "name": name,
        "seed": seed,
        "model": recipe.model.name,
        "method": recipe.adapter.method,
        "trainable": info.trainable,
        "val_accuracy": m["accuracy"],
        "val_macro_f1": m["macro_f1"],
        "train_seconds": m["train_seconds"],
    }
    if test is not None:
        row["test_accuracy"], row["test_macro_f1"] = test["accuracy"], test["macro_f1"]
    return row


def leaderboard_rows(runs: list[tuple[str, int, Path]], test_scores: dict) -> list[dict]:
    """One row per entry, best first; with several seeds each metric is the mean, with its standard deviation."""
    import numpy as np

    by_name: dict[str, list[dict]] = {}
    for name, seed, run in runs:
        by_name.setdefault(name, []).append(_row_of(run, name, seed, test_scores.get((name, seed))))
    rows = []
    for per_seed in by_name.values():
        row = {k: per_seed[0][k] for k in ("name", "model", "method", "trainable")}
        row["seeds"] = [r["seed"] for r in per_seed]
        for key in METRICS:
            if key in per_seed[0]:
                values = np.array([r[key] for r in per_seed], dtype=float)
                row[key] = float(values.mean())
                if len(per_seed) > 1:
                    row[f"{key}_std"] = float(values.std(ddof=1))  # sample std: a handful of seeds
        rows.append(row)
    key = "test_accuracy" if test_scores else "val_accuracy"
    return sorted(rows, key=lambda r: -r[key])


def _pm(row: dict, key: str, width: int, percent: bool = True) -> str:
    value, std = row[key], row.get(f"{key}_std")
    text = f"{value:.2%}" if percent else f"{value:.1f}"
    if std is not None:
        text += f"±{std * 100:.2f}" if percent else f"±{std:.1f}"
    return f"{text:>{width}}"


def format_leaderboard(rows: list[dict]) -> str:
    test = "test_accuracy" in rows[0]
    spread = "val_accuracy_std" in rows[0]
    w = 15 if spread else 9
    head = f"{'#':>2}  {'name':<24}{'model':<14}{'method':<8}{'trainable':>12}{'val acc':>{w}}{'val F1':>{w}}"
    head += f"{'test acc':>{w}}{'test F1':>{w}}" if test else ""
    head += f"{'train s':>{w}}"
    lines = [head]
    for i, r in enumerate(rows, 1):
        model = Path(str(r["model"])).name[:13]  # a folder path would run into the next column
        line = f"{i:>2}  {r['name'][:23]:<24}{model:<14}{r['method']:<8}{r['trainable']:>12,}"
        line += _pm(r, "val_accuracy", w) + _pm(r, "val_macro_f1", w)
        if test:
            line += _pm(r, "test_accuracy", w) + _pm(r, "test_macro_f1", w)
        lines.append(line + _pm(r, "train_seconds", w, percent=False))
    if spread:
        lines.append(f"mean ± standard deviation over seeds {', '.join(map(str, rows[0]['seeds']))}")
    return "\n".join(lines)


def _seeds(args) -> list[int | None]:
    if args.seeds is None:
        return [args.seed]
    if args.seed is not None:
        raise UserError("compare: give --seed or --seeds, not both")
    try:
        seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"--seeds: '{args.seeds}' is not a comma-separated list of integers, e.g. 42,1,2"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: give distinct seeds, e.g. 42,1,2 (got '{args.seeds}')")
    return seeds


def run_compare(args) -> int:
    import copy

    import pandas as pd

    from loraclf.data.tables import load_texts

    specs = [e for e in args.entries if not OVERRIDE.match(e)]
    shared = [e for e in args.entries if OVERRIDE.match(e)] + list(args.overrides or [])
    if not specs:
        raise UserError("compare: name at least one recipe file or preset (head, lora, full)")
    seeds = _seeds(args)
    if args.val_size is not None:
        shared.append(f"data.val_size={args.val_size}")
    if args.epochs is not None:
        shared.append(f"train.epochs={args.epochs}")
    if args.max_train_samples is not None:
        shared.append(f"data.max_train_samples={args.max_train_samples}")
    if args.quiet:
        shared.append("train.progress=false")
    entries = parse_entries(specs, args.model, shared)
    # Without explicit --seed/--val-size, the first entry's split is everyone's split.
    first = entries[0].recipe
    for e in entries[1:]:
        e.recipe.train.seed, e.recipe.data.val_size = first.train.seed, first.data.val_size
    if args.test:  # a bad --test file must fail now, not after the first entry has trained
        load_texts(args.test, first.data, "--test")
    jobs = []
    for seed in seeds:
        for e in entries:
            recipe = copy.deepcopy(e.recipe)
            if seed is not None:
                recipe.train.seed = seed
            folder = (
                Path(args.out) / e.name if args.seeds is None else Path(args.out) / e.name / f"seed-{seed}"
            )
            jobs.append((e, recipe, recipe.train.seed, folder))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    test_scores: dict = {}
    # With --json, stdout carries only the JSON; progress and training summaries go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        _run_entries(jobs, args, test_scores)
    rows = leaderboard_rows([(e.name, seed, run) for e, _, seed, run in jobs], test_scores)
    pd.DataFrame(rows).drop(columns=["seeds"]).to_csv(Path(args.out) / "leaderboard.csv", index=False)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_leaderboard(rows))
        print(f"leaderboard: {Path(args.out) / 'leaderboard.csv'}")
    return 0


def _run_entries(jobs, args, test_scores: dict) -> None:
    """Train each (entry, seed) that has no finished run yet, and score it on --test when given."""
    from loraclf.data.tables import load_texts
    from loraclf.inference.metrics import metrics
    from loraclf.inference.run import load, raw_data_config
    from loraclf.training.loop import train
    from loraclf.training.prepare import prepare

    for e, recipe, seed, run in jobs:
        label = f"{e.name} (seed {seed})" if args.seeds is not None else e.name
        if (run / "metrics.json").is_file():
            print(f"compare: {label}: finished run found in {run}; not retrained")
        else:
            if run.exists() and any(run.iterdir()):
                raise UserError(
                    f"compare: '{run}' holds an unfinished run; finish it with `loraclf train --resume {run}` "
                    "or delete it"
                )
            print(f"compare: training {label}: {recipe.description or recipe.model.name}")
            train(prepare(recipe, args.train, args.eval), run)
        if args.test:
            r = load(run)
            ts, _ = load_texts(args.test, raw_data_config(r), "--test", label_map=r.labels)
            probs = r.predict_proba(ts.texts, progress=not args.quiet)
            test_scores[(e.name, seed)] = metrics(ts.labels, probs.argmax(1), r.labels)
