"""``loraclf shift RUN --input FILE [--json] [--out DIR]``: what a run faces on a new file, before any label.

The run folder and the file are checked and the file is read before any model loads; the run scores the file on
its fast path (the cached int8 graph without PyTorch when there is one), then :mod:`loraclf.toolbox.shift` compares
the file with the run's training texts and estimates the accuracy to expect. ``--json`` prints ``shift.json``
(at least ``auc``, ``estimated_accuracy.atc``/``doc``/``interval`` and ``class_mix``, accuracies as fractions);
``--out DIR`` (default ``RUN/shift-<input stem>/``) receives ``shift.json``, ``shift.html`` with its figures, and
``rows.csv`` (each row's id, atypicality, predicted label and confidence).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from loraclf.cli.files import OVERRIDES_HELP, add_column_flags, file_config
from loraclf.cli.predict import PRECISION_HELP
from loraclf.data.paths import check_data_path
from loraclf.runfolder.schema import check_run, read_recipe
from loraclf.utils.errors import UserError, say

EXAMPLES = """examples:
  loraclf shift runs/minilm --input kaggle_test.csv
  loraclf shift runs/minilm --input kaggle_test.csv --json > shift.json
"""


def add_command(sub) -> None:
    """Register ``shift`` on an argparse subparsers object."""
    p = sub.add_parser(
        "shift",
        help="how a new file differs from a run's training data, and the accuracy to expect there without labels",
        description="Domain classifier, text statistics, class mix and label-free accuracy estimates (ATC, DoC) "
        "of a run on an unlabelled file; writes shift.json and shift.html.",
        epilog=EXAMPLES + "\n" + OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run folder written by `loraclf train`")
    p.add_argument("--input", required=True, metavar="FILE", help="the file to examine (labels not needed)")
    add_column_flags(p, label=False)
    p.add_argument("--json", action="store_true", help="print shift.json instead of the summary")
    p.add_argument(
        "--out", metavar="DIR", help="folder for shift.json, shift.html, rows.csv (RUN/shift-<stem>/)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling, folds and bootstrap seed (0)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help=PRECISION_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _out_dir(args, run: Path) -> Path:
    """The output folder, checked; created only when the results are ready (a failure leaves nothing)."""
    out = Path(args.out) if args.out else run / f"shift-{Path(args.input).name.split('.')[0] or 'input'}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: '{out}' is a file; give a folder")
    return out


def _scorer(run: Path, args):
    """``(texts, desc) → uncalibrated probabilities`` on the run's fast path, and how it computes them."""
    from loraclf.inference.int8_runtime import open_cached

    model = open_cached(run, device=args.device, precision=args.precision, calibration=False)
    if model is None:
        from loraclf.inference.run import load

        model = load(run, device=args.device, precision=args.precision, calibration=False)

    def score(texts: list[str], desc: str = "predict"):
        return model.predict_proba(texts, batch_size=args.batch_size, progress=not args.quiet, desc=desc)

    engine = "int8, ONNX Runtime" if model.engine is not None else f"{model.torch_precision}, PyTorch"
    return score, engine


def cmd_shift(args) -> int:
    run = check_run(args.run)
    check_data_path(args.input, "--input")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    from loraclf.config import CleanConfig
    from loraclf.data.clean import clean_texts
    from loraclf.data.tables import COLUMN_FLAGS, load_texts
    from loraclf.runfolder.schema import read_labels, read_run_info

    recipe, info, labels = read_recipe(run), read_run_info(run), read_labels(run)
    off = CleanConfig(**{f.name: False for f in dataclasses.fields(CleanConfig)})
    cfg = file_config(dataclasses.replace(recipe.data, clean=off), args)
    ts, _ = load_texts(args.input, cfg, "--input", labelled=False, fixes=COLUMN_FLAGS)
    out = _out_dir(args, run)
    from loraclf.toolbox import shift

    training, rows, problem = shift.training_side(run, info, recipe, seed=args.seed)
    shift.check_estimable(info, rows)
    if problem:
        say(f"shift: {problem}; no domain classifier or text statistics")
    score, engine = _scorer(run, args)
    record = shift.stored_record(info) or shift.fitted_record(rows, score)
    probs = score(ts.texts, "predict")
    texts = clean_texts(ts.texts, recipe.data.clean)  # compared as training's texts were read: cleaned
    result, per_row = shift.analyse(texts, ts.ids, probs, labels, info, record, training, problem, args.seed)
    result = {"run": str(run), "input": str(args.input), "engine": engine, **result}
    _write(out, result, per_row, ts.ids, labels)
    from loraclf.reporting.shift_report import summary_text, write_page

    page = write_page(result, out)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(summary_text(result))
    print(
        f"wrote {out / 'shift.json'}, {page} and {out / 'rows.csv'}",
        file=sys.stderr if args.json else sys.stdout,
    )
    return 0


def _write(out: Path, result: dict, per_row: dict, ids: list, labels: list) -> None:
    """``shift.json`` and ``rows.csv`` (id, atypicality, predicted label, confidence), each written atomically."""
    import pandas as pd

    from loraclf.runfolder.atomic import atomic_write_text

    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "shift.json", json.dumps(result, indent=1))
    except OSError as exc:
        raise UserError(
            f"--out: cannot write to '{out}' ({exc.strerror}); choose a writable folder"
        ) from None
    table = pd.DataFrame(
        {
            "ID": ids,
            "atypicality": per_row["atypicality"].round(6),
            "Label": [labels[i] for i in per_row["predicted"]],
            "confidence": per_row["confidence"].round(6),
        }
    )
    atomic_write_text(out / "rows.csv", table.to_csv(index=False))


COMMANDS = {"shift": cmd_shift}
