"""The ``tapt`` command: task-adaptive pretraining of a recipe's backbone (see :mod:`loraclf.toolbox.tapt`)."""

from __future__ import annotations

import argparse

from loraclf.cli.args import add_recipe_flags

EXAMPLES = """examples:
  loraclf tapt --config recipes/minilm-cpu.yaml --train train.csv --unlabelled kaggle_test.csv --out runs/tapt-minilm
  loraclf plan --config recipes/minilm-cpu.yaml --tapt              # what trains in the TAPT stage
  loraclf train --config recipes/minilm-cpu.yaml --train train.csv --out runs/minilm-tapt model.name=runs/tapt-minilm
"""


def add_command(sub) -> None:
    """Register ``tapt`` on an argparse subparsers object."""
    p = sub.add_parser(
        "tapt",
        help="masked-LM training with LoRA on the task's texts; writes an adapted backbone for model.name=",
        description="Task-adaptive pretraining (Gururangan et al., 2020): continue masked-LM training of the "
        "recipe's backbone on the training and unlabelled texts, merge the LoRA update and write a backbone "
        "folder that `model.name=DIR` trains a classifier from. The classifier's trainable count is unchanged.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_flags(p, "tapt")
    p.add_argument(
        "--train",
        action="append",
        required=True,
        metavar="FILE",
        help="training file (labels ignored; repeatable)",
    )
    p.add_argument(
        "--unlabelled",
        action="append",
        default=[],
        metavar="FILE",
        help="unlabelled texts to adapt to (repeatable)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="new folder for the adapted backbone")
    p.add_argument("--epochs", type=float, default=1.0, metavar="E", help="passes over the texts (1)")
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps; overrides --epochs")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="texts per step (32)")
    p.add_argument("--lr", type=float, default=5e-4, metavar="LR", help="peak AdamW learning rate (5e-4)")
    p.add_argument(
        "--head-lr", type=float, metavar="LR", help="learning rate of the masked-LM head (default: --lr)"
    )
    p.add_argument("--mask-prob", type=float, default=0.15, metavar="P", help="share of tokens masked (0.15)")
    p.add_argument("--max-length", type=int, default=128, metavar="N", help="tokens per text (128)")
    p.add_argument("--max-texts", type=int, metavar="N", help="a seeded sample of N texts (default: all)")
    p.add_argument(
        "--seed", type=int, default=42, metavar="N", help="seed of initialisation, order and masks (42)"
    )
    p.add_argument("--json", action="store_true", help="print the tapt.json record")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides (model.name=…, adapter.r=…)")
    p.set_defaults(model=None)


def cmd_tapt(args) -> int:
    import json

    from loraclf.cli.args import check_recipe, resolve_recipe
    from loraclf.toolbox.tapt import TaptOptions, run_tapt

    opts = TaptOptions(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        mask_prob=args.mask_prob,
        max_length=args.max_length,
        max_texts=args.max_texts,
        seed=args.seed,
    )
    opts.check()
    check_recipe(args)
    # Path mistakes are reported before the model libraries load (seconds saved on every typo).
    from loraclf.data.paths import check_data_path

    for flag, paths in (("--train", args.train), ("--unlabelled", args.unlabelled)):
        for path in paths:
            check_data_path(path, flag)
    recipe = resolve_recipe(args)
    record = run_tapt(recipe, args.train, args.unlabelled, args.out, opts, progress=not args.quiet)
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print(f"adapted backbone: {args.out} (train with model.name={args.out})")
    return 0


COMMANDS = {"tapt": cmd_tapt}
