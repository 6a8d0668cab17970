"""``loraclf export``: a finished run as a model folder that loads without loraclf (see :mod:`loraclf.inference.export`)."""

from __future__ import annotations


def add_command(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a run as a plain model folder (merged Hugging Face weights, or the int8 ONNX graph)",
        description="Write a finished run as a model folder that loads without loraclf.",
    )
    p.add_argument("run", metavar="RUN", help="run folder written by `loraclf train`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--format", default="hf", help="hf (merged weights, save_pretrained) | onnx (int8 graph)")
    p.add_argument(
        "--no-calibration",
        dest="calibration",
        action="store_false",
        help="export the raw logits (default: the run's fitted temperature is folded into the head, so the "
        "softmax of the exported logits equals predict's probabilities)",
    )


def cmd_export(args) -> int:
    from loraclf.inference.export import export_run

    out = export_run(args.run, args.out, args.format, calibration=args.calibration)
    print(f"exported {args.run} ({args.format}) to {out}")
    return 0


COMMANDS = {"export": cmd_export}
