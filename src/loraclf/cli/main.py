"""The ``loraclf`` command line: plan, train, evaluate, predict.

Flags are shortcuts for recipe keys (``--rank`` is ``adapter.r``); any key can also be set with a trailing
``key.sub=value`` override. Every user mistake ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from loraclf.utils.errors import UserError

# flag dest → recipe key path
FLAG_KEYS = {
    "model": "model.name",
    "head": "model.head",
    "targets": "adapter.targets",
    "rank": "adapter.r",
    "alpha": "adapter.alpha",
    "bias": "adapter.bias",
    "layer_ranks": "adapter.layer_ranks",
    "method": "adapter.method",
    "virtual_tokens": "adapter.virtual_tokens",
    "epochs": "train.epochs",
    "max_train_samples": "data.max_train_samples",
    "seed": "train.seed",
    "save_every": "train.save_every",
    "budget": "budget",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str):
        # main() prints "loraclf: error: …"; name the subcommand only when there is one.
        where = self.prog.removeprefix("loraclf").strip()
        raise UserError(f"{where + ': ' if where else ''}{message}; see `{self.prog} --help`")


def _recipe_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="recipe YAML (see recipes/)")
    p.add_argument("--model", help="alias (minilm, mpnet-base), hub id or local folder")
    p.add_argument("--head", help="default | mlp | linear")
    p.add_argument(
        "--method",
        help="lora | dora | vera | adalora | ia3 | loha | lokr | bitfit | prompt | prefix | head | full",
    )
    p.add_argument(
        "--targets",
        help="module names, comma separated (query,value; q,v; c_attn) or attention/mlp/all-linear",
    )
    p.add_argument("--rank", type=int, help="rank of rank-based methods (AdaLoRA: initial rank)")
    p.add_argument("--virtual-tokens", type=int, help="prompt/prefix tuning: number of virtual tokens")
    p.add_argument("--alpha", type=float, help="LoRA alpha (default 2r)")
    p.add_argument("--bias", help="none | all | lora_only")
    p.add_argument(
        "--layer-ranks", help="per-layer ranks: 8,8,16,… or an expression in i such as '8*2**(i//4)'"
    )
    p.add_argument("--budget", type=int, help="refuse recipes with more trainable parameters than this")


def _column_flags(p: argparse.ArgumentParser, label: bool) -> None:
    """Column names of the file to score, when they differ from the training file's."""
    p.add_argument("--text-column", metavar="NAME", help="text column (default: the run's, e.g. text)")
    if label:
        p.add_argument("--label-column", metavar="NAME", help="label column (default: the run's, e.g. label)")
    else:
        p.add_argument("--id-column", metavar="NAME", help="id column (default: id; absent = row numbers)")


def _columns(cfg, args):
    """The run's data settings with the column flags applied."""
    from dataclasses import replace

    names = {
        f"{k}_column": getattr(args, f"{k}_column", None)
        for k in ("text", "label", "id")
        if getattr(args, f"{k}_column", None)
    }
    return replace(cfg, **names)


def _recipe_keys() -> str:
    from loraclf.config.recipe import describe

    rows = describe()
    width = max(len(k) + len(d) for k, d, _ in rows) + 3
    lines = [
        "recipe keys (set in --config YAML or as key.sub=value overrides). The defaults shown are the generic",
        "ones; without --config, the model's default recipe applies first (minilm and mpnet-base: LoRA on every",
        "linear layer, an MLP head over mean pooling, base dropout off; see recipes/minilm-cpu.yaml), and its",
        "resolved values are written to RUN/recipe.yaml.",
    ]
    lines += [f"  {k}={d}".ljust(width + 2) + f"  {h}" for k, d, h in rows]
    return "\n".join(lines)


def build_parser() -> Parser:
    parser = Parser(
        prog="loraclf", description="Budget-exact LoRA text classifiers: plan, train, evaluate, predict."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    p = sub.add_parser("plan", help="exact trainable-parameter plan from the config alone (no weights)")
    _recipe_flags(p)
    p.add_argument("--num-labels", type=int, help="classes (default: from --train, else the config's)")
    p.add_argument("--train", help="data file whose label count sets --num-labels")
    p.add_argument(
        "--search", action="store_true", help="list the strongest configurations that fit --budget"
    )
    p.add_argument("--top", type=int, default=12, help="rows of --search")
    p.add_argument(
        "--methods",
        help="with --search: adaptation methods to compare, comma separated (lora,dora,vera,ia3,…)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides")

    p = sub.add_parser(
        "train",
        help="train a classifier into a run folder",
        epilog=_recipe_keys(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _recipe_flags(p)
    p.add_argument(
        "--train",
        action="append",
        help="training data file; repeat to train on several (e.g. the original rows plus augmented ones)",
    )
    p.add_argument("--eval", help="evaluation data file (default: a stratified split of --train)")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--epochs", type=float, help="passes over the training rows (train.epochs)")
    p.add_argument("--max-train-samples", type=int, help="stratified random sample of N training rows")
    p.add_argument(
        "--seed", type=int, help="seed of initialisation, data order, split and sampling (train.seed)"
    )
    p.add_argument("--save-every", type=int, help="optimizer steps between resumable checkpoints")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides, e.g. train.lr=1e-4")

    p = sub.add_parser(
        "evaluate",
        help="accuracy, macro-F1, per-class metrics and confusion matrix of a run (several runs: their ensemble)",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--mc-dropout", type=int, default=0, metavar="N", help="average N passes with dropout on")
    p.add_argument("--data", required=True, help="labelled data file")
    _column_flags(p, label=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        default="auto",
        help="auto (int8 via ONNX Runtime on a CPU, else bf16/fp16) | int8 | bf16 | fp16 | fp32",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("predict", help="write a Kaggle-style ID,Label file; several runs form an ensemble")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--input", required=True, help="data file (labels not needed)")
    _column_flags(p, label=False)
    p.add_argument("--output", required=True, help="CSV to write")
    p.add_argument("--mc-dropout", type=int, default=0, metavar="N", help="average N passes with dropout on")
    p.add_argument("--probabilities", action="store_true", help="add prob_<label> columns")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        default="auto",
        help="auto (int8 via ONNX Runtime on a CPU, else bf16/fp16) | int8 | bf16 | fp16 | fp32",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    from loraclf.cli.augment import add_command as add_augment
    from loraclf.cli.export import add_command as add_export
    from loraclf.cli.report import add_commands as add_report
    from loraclf.cli.toolbox import add_commands as add_toolbox

    add_report(sub)
    add_augment(sub)
    add_toolbox(sub)
    add_export(sub)
    return parser


def resolve_recipe(args) -> object:
    """Recipe file (or the model's default recipe), then flags, then dotted overrides; validated."""
    from loraclf.config.recipe import apply_overrides, load_recipe
    from loraclf.modeling.defaults import default_recipe
    from loraclf.modeling.methods import validate_recipe

    recipe = (
        load_recipe(args.config)
        if args.config
        else default_recipe(args.model or "minilm", getattr(args, "method", None))
    )
    pairs = []
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "targets":
            value = "[" + ",".join(v.strip() for v in value.split(",") if v.strip()) + "]"
        elif dest == "layer_ranks":
            value = f"[{value}]" if all(c.isdigit() or c in ", " for c in value) else json.dumps(value)
        pairs.append(f"{key}={value}")
    recipe = apply_overrides(recipe, pairs + list(getattr(args, "overrides", []) or []))
    return validate_recipe(recipe)


def cmd_plan(args) -> int:
    from loraclf.data.tables import load_texts
    from loraclf.modeling.backbones import load_config
    from loraclf.modeling.plan import check_budget, plan, search

    recipe = resolve_recipe(args)
    num_labels = args.num_labels
    if num_labels is None and args.train:
        _, label_map = load_texts(args.train, recipe.data, "--train")
        num_labels = len(label_map)
    if num_labels is None:
        num_labels = load_config(recipe.model.name, prefer_shipped=True).num_labels
    if num_labels < 2:
        raise UserError(f"--num-labels must be at least 2, got {num_labels}")
    if args.search:
        if not recipe.budget:
            raise UserError("--search needs --budget N (the trainable-parameter limit to search under)")
        if args.top < 1:
            raise UserError(f"--top must be at least 1 (rows of --search), got {args.top}")
        if args.methods:
            return _search_methods(recipe, num_labels, args)
        found = search(recipe, num_labels, recipe.budget, top=args.top)
        if args.json:
            print(
                json.dumps(
                    [{"flags": c.flags(), "trainable": c.trainable, "adapters": c.adapters} for c in found],
                    indent=1,
                )
            )
            return 0
        print(
            f"Configurations of {recipe.model.name} ({num_labels} labels, head {recipe.model.head}) within "
            f"{recipe.budget:,} trainable parameters, ranked by parameters spent on adapters "
            "(more coverage and rank first):"
        )
        head = f" --head {recipe.model.head}" if recipe.model.head != "default" else ""
        for c in found:
            print(
                f"  {c.trainable:>10,}  adapters {c.adapters:>9,}   "
                f"loraclf train --model {recipe.model.name}{head} {c.flags()}"
            )
        if not found:
            print("  (none: the head alone exceeds the budget; use --head linear or a larger budget)")
        return 0
    p = plan(recipe, num_labels)
    if args.json:
        print(json.dumps(p.to_json(), indent=1))
    else:
        print(format_plan(p, recipe))
    check_budget(p)
    return 0


def _search_methods(recipe, num_labels: int, args) -> int:
    from loraclf.modeling.method_search import search_methods

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    found = search_methods(recipe, num_labels, recipe.budget, methods, top=args.top)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in found], indent=1))
        return 0
    print(
        f"Configurations of {recipe.model.name} ({num_labels} labels, head {recipe.model.head}) within "
        f"{recipe.budget:,} trainable parameters, by method, ranked by parameters spent on the method:"
    )
    head = f" --head {recipe.model.head}" if recipe.model.head != "default" else ""
    for c in found:
        print(
            f"  {c.method:<8}{c.trainable:>10,}  method params {c.adapters:>9,}   "
            f"loraclf train --model {recipe.model.name}{head} {c.flags}"
        )
    if not found:
        print("  (none fits: the head alone may exceed the budget; use --head linear or a larger budget)")
    return 0


def format_plan(p, recipe) -> str:
    a = recipe.adapter
    lines = [f"model    {p.model}   labels {p.num_labels}   head {recipe.model.head}   method {a.method}"]
    targets = ",".join(a.targets) if a.targets is not None else "default"
    if a.method in ("lora", "dora"):
        ranks = a.layer_ranks if a.layer_ranks is not None else a.r
        lines.append(
            f"{a.method:<9}targets {targets}   r {ranks}   alpha {a.alpha if a.alpha else '2r'}   "
            f"bias {a.bias}{'   rslora' if a.rslora else ''}{'' if a.init is True else f'   init {a.init}'}"
        )
    elif a.method in ("vera", "adalora", "ia3", "loha", "lokr"):
        lines.append(f"{a.method:<9}targets {targets}   r {a.r}   bias {a.bias}")
    elif a.method in ("prompt", "prefix"):
        lines.append(f"{a.method:<9}virtual tokens {a.virtual_tokens}")
    lines.append("")
    lines.append(f"{'part':<24}{'trainable':>14}")
    for layer, n in sorted(p.adapters_per_layer.items()):
        kinds = p.kinds_per_layer.get(layer, {})
        named = ", ".join(
            f"{k} {v:,}" for k, v in sorted(kinds.items()) if k not in ("head", "bias", "other")
        )
        label = "  adapters layer " + str(layer) if layer >= 0 else "  adapters (no layer)"
        lines.append(f"{label:<24}{n:>14,}   {named}")
    if p.adapters_per_layer:
        lines.append(f"{'adapters':<24}{p.adapters:>14,}")
    lines.append(f"{'biases':<24}{p.biases:>14,}")
    lines.append(f"{'head':<24}{p.head:>14,}")
    if p.other:
        lines.append(f"{'other (full fine-tune)':<24}{p.other:>14,}")
    lines.append(f"{'trainable':<24}{p.trainable:>14,}")
    lines.append(f"{'total':<24}{p.total:>14,}")
    lines.append(f"{'ratio':<24}{p.ratio:>14.4%}")
    if p.budget is not None:
        verdict = "fits" if p.trainable <= p.budget else "OVER BUDGET"
        lines.append(f"{'budget':<24}{p.budget:>14,}   {verdict} ({p.budget - p.trainable:+,})")
    return "\n".join(lines)


def cmd_train(args) -> int:
    from loraclf.inference.metrics import format_report, summary_line
    from loraclf.training.loop import train
    from loraclf.training.prepare import prepare, resume_run

    if args.resume:
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
        p, out = resume_run(Path(args.resume))
        if args.quiet:
            p.recipe.train.progress = False
        m = train(p, out, resume=True)
    else:
        if not args.train:
            raise UserError("train: --train FILE is required (or --resume RUN)")
        if not args.out:
            raise UserError("train: --out DIR is required (the run folder to create)")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out: '{out}' is a file; give a folder name for the run")
        if out.exists() and any(out.iterdir()):
            raise UserError(
                f"--out: '{out}' already exists and is not an empty folder; choose a new folder or "
                f"resume it with `loraclf train --resume {out}`"
            )
        _check_writable(out)
        recipe = resolve_recipe(args)
        if args.quiet:
            recipe.train.progress = False
        p = prepare(recipe, args.train, args.eval)
        m = train(p, out)
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


def cmd_evaluate(args) -> int:
    import numpy as np

    from loraclf.data.tables import COLUMN_FLAGS, load_texts
    from loraclf.inference.metrics import format_report, metrics, summary_line
    from loraclf.inference.run import ensemble_budget, ensemble_proba, load_many, raw_data_config

    if args.mc_dropout < 0:
        raise UserError(f"--mc-dropout must be 0 or more passes, got {args.mc_dropout}")
    runs = load_many(args.runs, device=args.device, precision=args.precision)
    ts, _ = load_texts(
        args.data,
        _columns(raw_data_config(runs[0]), args),
        "--data",
        label_map=runs[0].labels,
        fixes=COLUMN_FLAGS,
    )
    probs = ensemble_proba(
        runs,
        ts.texts,
        batch_size=args.batch_size,
        mc_dropout=args.mc_dropout,
        progress=not args.quiet,
        desc="evaluate",
    )
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(ts)), ts.labels], 1e-12, None))))
    m = metrics(ts.labels, probs.argmax(1), runs[0].labels, loss)
    if ensemble_budget(runs):
        print(ensemble_budget(runs), file=sys.stderr)
        m["ensemble"] = {
            "runs": [str(r.path) for r in runs],
            "trainable_total": sum(r.trainable for r in runs),
        }
    if args.json:
        print(json.dumps(m, indent=1))
    else:
        print(format_report(m))
        print(f"\n{summary_line(m)}")
    return 0


def cmd_predict(args) -> int:
    from loraclf.data.tables import COLUMN_FLAGS, check_unique_ids, load_texts
    from loraclf.inference.predict import write_submission
    from loraclf.inference.run import ensemble_budget, ensemble_proba, load_many, raw_data_config

    out = Path(args.output)
    if out.is_dir():
        raise UserError(f"--output: '{out}' is a folder; give a file name such as predictions.csv")
    if out.exists() and Path(args.input).exists() and out.resolve() == Path(args.input).resolve():
        raise UserError(
            f"--output: '{out}' is the --input file; writing there would destroy it, choose another"
        )
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise UserError(f"--output: folder '{out.parent}' does not exist; create it first")
    if args.mc_dropout < 0:
        raise UserError(f"--mc-dropout must be 0 or more passes, got {args.mc_dropout}")
    runs = load_many(args.runs, device=args.device, precision=args.precision)
    labels = runs[0].labels
    cfg = _columns(raw_data_config(runs[0]), args)
    ts, _ = load_texts(args.input, cfg, "--input", labelled=False, fixes=COLUMN_FLAGS)
    check_unique_ids(ts, cfg, "--input")
    start = time.perf_counter()
    probs = ensemble_proba(
        runs, ts.texts, batch_size=args.batch_size, mc_dropout=args.mc_dropout, progress=not args.quiet
    )
    seconds = time.perf_counter() - start
    print(
        f"predict: {len(ts):,} rows in {seconds:.2f} s ({len(ts) / max(seconds, 1e-9):.1f} rows/s, "
        f"{_engine(runs[0], args.mc_dropout)})",
        file=sys.stderr,
    )
    preds = [labels[i] for i in probs.argmax(1)]
    write_submission(out, ts.ids, preds, probs if args.probabilities else None, labels)
    if ensemble_budget(runs):
        print(ensemble_budget(runs), file=sys.stderr)
    counts = {str(lab): preds.count(lab) for lab in labels}
    print(f"wrote {len(preds):,} predictions to {out}; predicted classes: {counts}")
    return 0


def _engine(run, mc_dropout: int) -> str:
    """How predictions were computed, for the throughput line."""
    if run.engine is not None and not mc_dropout:
        return "int8, ONNX Runtime"
    return f"{run.torch_precision}, PyTorch on {run.device}"


def _commands() -> dict:
    from loraclf.cli.augment import COMMANDS as AUGMENT
    from loraclf.cli.export import COMMANDS as EXPORT
    from loraclf.cli.report import COMMANDS as REPORT
    from loraclf.cli.toolbox import COMMANDS as TOOLBOX

    return {
        "plan": cmd_plan,
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "predict": cmd_predict,
        **REPORT,
        **AUGMENT,
        **TOOLBOX,
        **EXPORT,
    }


def _parse(parser: Parser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``key.sub=value`` overrides sit between flags (argparse alone stops at the first flag)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
        if stray:
            command = getattr(args, "command", None)
            where, prog = (f"{command}: ", f"loraclf {command}") if command else ("", "loraclf")
            raise UserError(f"{where}unrecognized arguments: {' '.join(stray)}; see `{prog} --help`")
        args.overrides = list(args.overrides or []) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        parser = build_parser()
        args = _parse(parser, argv)
        if args.version:
            from loraclf.utils.version import __version__

            print(f"loraclf {__version__}")
            return 0
        if not args.command:
            parser.print_help()
            return 2
        _quiet_libraries()
        if os.environ.get("LORACLF_QUIET") and hasattr(args, "quiet"):
            args.quiet = True
        return _commands()[args.command](args)
    except UserError as exc:
        print(f"loraclf: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("loraclf: interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Library chatter (download hints, 'newly initialized weights' notices) is noise for CLI users."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*rank_pattern.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    logging.getLogger("peft").setLevel(logging.ERROR)
