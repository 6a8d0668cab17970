"""The ``pseudo-label`` and ``compare`` commands (see :mod:`loraclf.toolbox.pseudo_label` and :mod:`loraclf.toolbox.compare`)."""

from __future__ import annotations

import argparse

PSEUDO_EXAMPLES = """examples:
  loraclf pseudo-label runs/minilm --input ood_unlabeled.csv --output ood_pseudo.csv --threshold 0.9
  loraclf train --config recipes/minilm-cpu.yaml --train train.csv --train ood_pseudo.csv --out runs/minilm-st
"""

COMPARE_EXAMPLES = """examples:
  loraclf compare head lora full --model minilm --train train.csv --test test.csv --out runs/cmp --epochs 1
  loraclf compare base=recipes/minilm-cpu.yaml qv=recipes/minilm-qv.yaml --train train.csv --out runs/cmp2
"""


def add_commands(sub) -> None:
    """Register ``pseudo-label`` and ``compare`` on an argparse subparsers object."""
    _add_pseudo_label(sub)
    _add_compare(sub)


def _add_pseudo_label(sub) -> None:
    p = sub.add_parser(
        "pseudo-label",
        help="label unlabelled target texts with a run (or ensemble) and keep the confident rows",
        description="Self-training: write the rows a run labels with high confidence, to train on next.",
        epilog=PSEUDO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folder(s); several average their probabilities"
    )
    p.add_argument(
        "--input", required=True, metavar="FILE", help="unlabelled texts (labels ignored if present)"
    )
    p.add_argument(
        "--output", required=True, metavar="FILE", help="labelled file to write (csv, jsonl, parquet)"
    )
    p.add_argument(
        "--threshold", type=float, default=0.9, metavar="P", help="minimum top-class probability (0.9)"
    )
    p.add_argument(
        "--balance",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cap every class at the smallest class's count (default: yes)",
    )
    p.add_argument("--mc-dropout", type=int, default=0, metavar="N", help="average N passes with dropout on")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        default="auto",
        help="auto (int8 via ONNX Runtime on a CPU, else bf16/fp16) | int8 | bf16 | fp16 | fp32",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="train several recipes on the same split and print a leaderboard",
        description="Train recipes (files or the presets head, lora, full) on one split; rank them.",
        epilog=COMPARE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "entries", nargs="*", metavar="ENTRY", help="recipe file, NAME=FILE, or head | lora | full"
    )
    p.add_argument("--model", default="minilm", help="backbone of the presets (default minilm)")
    p.add_argument(
        "--train", action="append", required=True, metavar="FILE", help="training file (repeatable)"
    )
    p.add_argument("--eval", metavar="FILE", help="validation file (default: a stratified split of --train)")
    p.add_argument("--test", metavar="FILE", help="labelled file every finished entry is scored on")
    p.add_argument("--out", required=True, metavar="DIR", help="folder holding one run per entry")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--seeds", metavar="S,S,…", help="train every entry once per seed; report mean ± std (e.g. 42,1,2)"
    )
    p.add_argument("--val-size", type=float)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    # key.sub=value overrides for every entry are told apart from NAME=FILE entries by their recipe section.
    p.set_defaults(overrides=[])


def cmd_pseudo_label(args) -> int:
    from loraclf.toolbox.pseudo_label import pseudo_label

    return pseudo_label(args)


def cmd_compare(args) -> int:
    from loraclf.toolbox.compare import run_compare

    return run_compare(args)


COMMANDS = {"pseudo-label": cmd_pseudo_label, "compare": cmd_compare}
