"""``loraclf compare``: train several recipes on one split and print a leaderboard.

Comparisons are only fair when every entrant sees the same rows: all entries share the training files, the
validation split (same ``data.val_size`` and ``train.seed``, so the same stratified rows are held out) or the same
``--eval`` file, and the same ``--test`` file for the final score. An entry is a recipe file (named after the file,
or ``NAME=FILE``) or one of three built-in baselines of ``--model``: ``head`` (feature extraction: the backbone
frozen, only the head trains), ``lora`` (the model's default LoRA recipe) and ``full`` (every weight trains;
the budget does not apply and the learning rate drops to 5e-5, as full fine-tuning needs).

Every recipe is resolved and validated before the first one trains, so a typo in the last entry does not cost
the hours spent on the first. Entries whose run folder already holds finished metrics are read, not retrained:
re-running the same command after an interruption finishes the comparison.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

PRESETS = ("head", "lora", "full")
OVERRIDE = re.compile(r"^(model|adapter|data|train|distill)\.[\w.]+=|^(budget|description)=")


@dataclass
class Entry:
    name: str
    recipe: object


def parse_entries(specs: list[str], model: str, shared: list[str]) -> list[Entry]:
    """Resolve ``NAME=FILE``, ``FILE`` or a preset into named, validated recipes with the shared overrides."""
    from .config import apply_overrides, load_recipe, validate
    from .defaults import default_recipe

    entries, seen = [], set()
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        if path in PRESETS:
            recipe = default_recipe(model)
            recipe.adapter.method = path
            if path == "full":
                recipe.budget = None
                recipe.train.lr = 5e-5
            recipe.description = f"{model}: {'feature extraction' if path == 'head' else path} baseline"
            name = name or path
        else:
            if not Path(path).is_file():
                raise UserError(
                    f"compare: entry '{spec}' is neither a recipe file nor one of {', '.join(PRESETS)}"
                )
            recipe = load_recipe(path)
            name = name or Path(path).stem
        if not re.fullmatch(r"[\w.+-]+", name):
            raise UserError(f"compare: entry name '{name}' must use letters, digits, '.', '+', '-' or '_'")
        if name in seen:
            raise UserError(f"compare: two entries are named '{name}'; name them with NAME=FILE")
        seen.add(name)
        entries.append(Entry(name, validate(apply_overrides(recipe, shared))))
    return entries


def leaderboard_rows(out: Path, names: list[str], test_scores: dict) -> list[dict]:
    from .runs import load_recipe_of, read_json

    rows = []
    for name in names:
        run = out / name
        m, info = read_json(run / "metrics.json"), read_json(run / "run.json")
        recipe = load_recipe_of(run)
        row = {
            "name": name,
            "model": recipe.model.name,
            "method": recipe.adapter.method,
            "trainable": int(info["plan"]["trainable"]),
            "val_accuracy": m["accuracy"],
            "val_macro_f1": m["macro_f1"],
            "train_seconds": m["train_seconds"],
        }
        if name in test_scores:
            row["test_accuracy"] = test_scores[name]["accuracy"]
            row["test_macro_f1"] = test_scores[name]["macro_f1"]
        rows.append(row)
    key = "test_accuracy" if test_scores else "val_accuracy"
    return sorted(rows, key=lambda r: -r[key])


def format_leaderboard(rows: list[dict]) -> str:
    test = "test_accuracy" in rows[0]
    head = f"{'#':>2}  {'name':<24}{'model':<14}{'method':<8}{'trainable':>12}{'val acc':>9}{'val F1':>8}"
    head += f"{'test acc':>10}{'test F1':>9}" if test else ""
    head += f"{'train s':>9}"
    lines = [head]
    for i, r in enumerate(rows, 1):
        line = (
            f"{i:>2}  {r['name']:<24}{r['model']:<14}{r['method']:<8}{r['trainable']:>12,}"
            f"{r['val_accuracy']:>9.2%}{r['val_macro_f1']:>8.2%}"
        )
        if test:
            line += f"{r['test_accuracy']:>10.2%}{r['test_macro_f1']:>9.2%}"
        lines.append(line + f"{r['train_seconds']:>9.0f}")
    return "\n".join(lines)


def run_compare(args) -> int:
    import pandas as pd

    specs = [e for e in args.entries if not OVERRIDE.match(e)]
    shared = [e for e in args.entries if OVERRIDE.match(e)] + list(args.overrides or [])
    if not specs:
        raise UserError("compare: name at least one recipe file or preset (head, lora, full)")
    if args.seed is not None:
        shared.append(f"train.seed={args.seed}")
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test_scores = {}
    # With --json, stdout carries only the JSON; progress and training summaries go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        _run_entries(entries, out, args, test_scores)
    rows = leaderboard_rows(out, [e.name for e in entries], test_scores)
    pd.DataFrame(rows).to_csv(out / "leaderboard.csv", index=False)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_leaderboard(rows))
        print(f"leaderboard: {out / 'leaderboard.csv'}")
    return 0


def _run_entries(entries, out: Path, args, test_scores: dict) -> None:
    """Train each entry that has no finished run in `out`, and score it on --test when given."""
    from .data import load_texts
    from .evaluate import metrics
    from .runs import load, raw_data_config
    from .train import prepare, train

    for e in entries:
        run = out / e.name
        if (run / "metrics.json").is_file():
            print(f"compare: {e.name}: finished run found in {run}; not retrained")
        else:
            if run.exists() and any(run.iterdir()):
                raise UserError(
                    f"compare: '{run}' holds an unfinished run; finish it with `loraclf train --resume {run}` "
                    "or delete it"
                )
            print(f"compare: training {e.name} ({e.recipe.description or e.recipe.model.name})")
            train(prepare(e.recipe, args.train, args.eval), run)
        if args.test:
            r = load(run)
            ts, _ = load_texts(args.test, raw_data_config(r), "--test", label_map=r.labels)
            probs = r.predict_proba(ts.texts, progress=not args.quiet)
            test_scores[e.name] = metrics(ts.labels, probs.argmax(1), r.labels)
