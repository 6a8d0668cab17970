"""``loraclf train``: train a classifier into a run folder, or continue an interrupted one (``--resume RUN``).

Every check that needs no model (flags, recipe keys and values, data paths, the output folder) runs before torch
and transformers load, so a mistake is reported in well under two seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from loraclf.cli.args import add_recipe_flags, check_recipe, recipe_keys_help, resolve_recipe
from loraclf.config import FLAG_KEYS
from loraclf.data.paths import check_data_path
from loraclf.utils.errors import UserError


def add_command(sub) -> None:
    """Register ``train`` on an argparse subparsers object."""
    p = sub.add_parser(
        "train",
        help="train a classifier into a run folder",
        epilog=recipe_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_flags(p, "train")
    p.add_argument(
        "--train",
        action="append",
        help="training data file; repeat to train on several (e.g. the original rows plus augmented ones)",
    )
    p.add_argument("--eval", help="evaluation data file (default: a stratified split of --train)")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run folder")
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train in N processes on this machine (one per GPU; starts torchrun with the same flags)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides, e.g. train.lr=1e-4")


def _check_resume(args) -> None:
    # A resumed run continues exactly as recorded; a changed setting would silently mix two recipes.
    given = [
        f"--{k.replace('_', '-')}"
        for k in (*FLAG_KEYS, "config", "train", "eval", "out")
        if getattr(args, k, None)
    ]
    given += list(args.overrides or [])
    if given:
        raise UserError(
            f"--resume continues the run with its recorded recipe and data; drop {', '.join(given)} "
            "(or start a new run with --out)"
        )
    if not Path(args.resume).is_dir():
        raise UserError(
            f"--resume: run folder '{args.resume}' not found; pass the --out folder of a training run"
        )


def _check_new_run(args) -> Path:
    """Paths and recipe of a new run, checked without loading a model; returns the run folder."""
    if not args.train:
        raise UserError("train: --train FILE is required (or --resume RUN)")
    if not args.out:
        raise UserError("train: --out DIR is required (the run folder to create)")
    for flag, path in [*(("--train", t) for t in args.train), ("--eval", args.eval)]:
        if path:
            check_data_path(path, flag)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: '{out}' is a file; give a folder name for the run")
    if out.exists() and any(out.iterdir()):
        raise UserError(
            f"--out: '{out}' already exists and is not an empty folder; choose a new folder or "
            f"resume it with `loraclf train --resume {out}`"
        )
    _check_writable(out)
    return out


def _read_rows(args):
    """The data files read, labelled and split with the checked recipe: pandas, but no model library yet."""
    checked = check_recipe(args)
    from loraclf.data.splits import read_rows  # pandas: loaded once flags and recipe are known to be right

    return checked, read_rows(checked.data, checked.train.seed, args.train, args.eval)


def cmd_train(args) -> int:
    started = time.monotonic()  # a --time-budget counts the whole command from here
    if args.nproc is not None and args.nproc != 1:
        if args.time_budget is not None:  # a plan is one process's measurement (training/budget.py)
            raise UserError("--time-budget plans one process; drop --nproc or --time-budget")
        from loraclf.cli.launch import relaunch  # torch's launcher: only when several processes are asked for

        return relaunch(args.nproc, args.argv)
    if os.environ.get("RANK", "0") != "0":
        args.quiet = True  # rank 0 alone shows progress (training/distributed.py)
    if args.resume:
        _check_resume(args)
    else:
        out = _check_new_run(args)
        checked, rows = _read_rows(args)
    # Training needs torch, transformers and peft: imported only after every cheap check passed.
    from loraclf.inference.metrics import format_report, summary_line
    from loraclf.training.loop import train
    from loraclf.training.prepare import prepare, resume_run

    if args.resume:
        p, out = resume_run(Path(args.resume))
        if args.quiet:
            p.recipe.train.progress = False
        m = train(p, out, resume=True)
    else:
        recipe = resolve_recipe(args)
        if args.quiet:
            recipe.train.progress = False
        same = recipe.data == checked.data and recipe.train.seed == checked.train.seed
        p = prepare(recipe, args.train, args.eval, rows if same else None)  # rows of other settings: reread
        m = train(p, out, started=started)
    if not m:
        return 0  # a rank other than 0: rank 0 reports
    print(format_report(m))
    print(f"\n{summary_line(m)}")
    print(
        f"train time {m['train_seconds']:.1f} s ({m.get('eval_seconds', 0):.1f} s of it evaluating and saving), "
        f"{m['train_samples_per_s']:.1f} samples/s while optimising; run folder: {out}"
    )
    return 0


def _check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out: cannot create '{out}': '{parent}' is not writable; choose another folder")


COMMANDS = {"train": cmd_train}
