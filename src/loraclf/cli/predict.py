"""``loraclf evaluate`` and ``loraclf predict``: score a labelled file, or write a Kaggle-style ``ID,Label`` file.

Several runs form an ensemble (their probabilities are averaged). The run folders, the data file and the output
path are checked from the folders' small files alone, and the data file is read, before the models load, so a
mistake is reported without waiting for torch. ``evaluate`` on one run records its result in
``RUN/evaluations/<file name>.json`` for the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from loraclf.cli.files import OVERRIDES_HELP, add_column_flags, file_config, split_runs
from loraclf.data.paths import check_data_path
from loraclf.runfolder.schema import check_run, read_labels, read_recipe, write_evaluation
from loraclf.utils.errors import UserError

PRECISION_HELP = "auto (int8 via ONNX Runtime on a CPU, else bf16/fp16) | int8 | bf16 | fp16 | fp32"


def _inference_flags(p) -> None:
    p.add_argument("--mc-dropout", type=int, default=0, metavar="N", help="average N passes with dropout on")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help=PRECISION_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-calibration",
        dest="calibration",
        action="store_false",
        help="raw softmax probabilities: skip the run's fitted temperature (labels are the same either way)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="score the rows in N processes on this machine (one per GPU; starts torchrun with the same flags)",
    )


def add_commands(sub) -> None:
    """Register ``evaluate`` and ``predict`` on an argparse subparsers object."""
    p = sub.add_parser(
        "evaluate",
        help="accuracy, macro-F1, per-class metrics and confusion matrix of a run (several runs: their ensemble)",
        epilog=OVERRIDES_HELP,
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--data", required=True, help="labelled data file")
    add_column_flags(p, label=True)
    p.add_argument("--json", action="store_true")
    _inference_flags(p)

    p = sub.add_parser(
        "predict",
        help="write a Kaggle-style ID,Label file; several runs form an ensemble",
        epilog=OVERRIDES_HELP,
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--input", required=True, help="data file (labels not needed)")
    add_column_flags(p, label=False)
    p.add_argument("--output", required=True, help="CSV to write")
    p.add_argument("--probabilities", action="store_true", help="add prob_<label> columns")
    p.add_argument(
        "--prior-correction",
        action="store_true",
        help="label shift: re-weight probabilities (and labels) to the file's class priors estimated by EM "
        "(Saerens et al. 2002); prints the estimated priors",
    )
    p.add_argument(
        "--match-priors",
        nargs="?",
        const="train",
        metavar="MIX",
        help="shifted text, known class mix: re-weight each class so the file's mean probability equals the mix: "
        "train (the default: the training file's), uniform (equal shares) or LABEL=SHARE,...; for a model that "
        "leans to some classes on unfamiliar text (docs/guides/kaggle-flow.md); prints the mix and logit offsets",
    )
    _inference_flags(p)


def _raw_data_config(run: Path, args):
    """The first run's data settings with cleaning off (each member cleans the raw texts its own way), then the
    file overrides and column flags (see :mod:`loraclf.cli.files`)."""
    from loraclf.config import CleanConfig

    off = CleanConfig(**{f.name: False for f in dataclasses.fields(CleanConfig)})
    return file_config(dataclasses.replace(read_recipe(run).data, clean=off), args)


def _relaunch(args) -> int | None:
    """``--nproc N``: run this command in N processes through torchrun and return their status (else None)."""
    if args.nproc is None or args.nproc == 1:
        return None
    from loraclf.cli.launch import relaunch

    return relaunch(args.nproc, args.argv)


@contextlib.contextmanager
def _ranks(args):
    """This process's place among the ranks of a launched job (a one-process ``Dist`` without a launcher) and the
    device its models load on; ranks other than 0 show no progress. The process group is left on exit."""
    from loraclf.training import distributed
    from loraclf.utils.devices import pick_device

    with distributed.joined(pick_device(args.device)) as (dist, device):
        if not dist.main:
            args.quiet = True
        yield dist, device


def _scored(dist, device, models, texts: list[str], args, desc: str):
    """The ensemble's class probabilities of ``texts`` (rows sharded over the ranks, gathered on every rank)."""
    from loraclf.inference.run import ensemble_proba

    def score(rows):
        return ensemble_proba(
            models, [texts[i] for i in rows], batch_size=args.batch_size, mc_dropout=args.mc_dropout,
            progress=not args.quiet, desc=desc,
        )  # fmt: skip

    return dist.map_rows(len(texts), len(models[0].labels), score, device)


def _load(dist, device, args):
    from loraclf.inference.run import load_many

    # Rank 0 exports the int8 graph first, the others open it; each rank loads on its own device (cuda:N).
    with dist.main_first():
        return load_many(
            args.runs,
            device=str(device) if dist.world > 1 else args.device,
            precision=args.precision,
            calibration=args.calibration,
        )


def _check_runs(args, data_flag: str, data: str) -> list[Path]:
    if args.mc_dropout < 0:
        raise UserError(f"--mc-dropout must be 0 or more passes, got {args.mc_dropout}")
    split_runs(args)  # trailing data.KEY=VALUE words that argparse took for run folders
    runs = [check_run(r) for r in args.runs]
    check_data_path(data, data_flag)
    return runs


def cmd_evaluate(args) -> int:
    runs = _check_runs(args, "--data", args.data)
    launched = _relaunch(args)
    if launched is not None:
        return launched
    # Reading the file needs pandas and scoring needs torch: loaded after the cheap checks.
    from loraclf.data.tables import COLUMN_FLAGS, load_texts

    labels = read_labels(runs[0])
    cfg = _raw_data_config(runs[0], args)
    ts, _ = load_texts(args.data, cfg, "--data", label_map=labels, fixes=COLUMN_FLAGS)
    cached = _cached_int8(args, runs)
    if cached is not None:
        probs = cached.predict_proba(ts.texts, args.batch_size, progress=not args.quiet, desc="evaluate")
        _report_evaluation(args, runs, ts, labels, [cached], probs)
        return 0
    with _ranks(args) as (dist, device):
        models = _load(dist, device, args)
        probs = _scored(dist, device, models, ts.texts, args, "evaluate")
    if dist.main:
        _report_evaluation(args, runs, ts, labels, models, probs)
    return 0


def _cached_int8(args, runs: list[Path]):
    """The one run as a PyTorch-free :class:`~loraclf.inference.int8_runtime.CachedRun` when its int8 graph is
    cached and nothing asks for PyTorch (one process, no Monte Carlo dropout, CPU); else None."""
    if len(runs) != 1 or args.mc_dropout or os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        return None  # several processes (or a WORLD_SIZE the distributed path will judge) go through PyTorch
    from loraclf.inference.int8_runtime import open_cached

    return open_cached(runs[0], device=args.device, precision=args.precision, calibration=args.calibration)


def _report_evaluation(args, runs, ts, labels, models, probs) -> None:
    from loraclf.inference.metrics import format_report, metrics, nll, summary_line

    loss = nll(probs, ts.labels)
    m = metrics(ts.labels, probs.argmax(1), labels, loss)
    if len(models) > 1:
        from loraclf.inference.run import ensemble_budget

        print(ensemble_budget(models), file=sys.stderr)
        m["ensemble"] = {
            "runs": [str(r.path) for r in models],
            "trainable_total": sum(r.trainable for r in models),
        }
    else:
        write_evaluation(runs[0], args.data, {**m, "rows": len(ts), "mc_dropout": args.mc_dropout})
    if args.json:
        print(json.dumps(m, indent=1))
    else:
        print(format_report(m))
        print(f"\n{summary_line(m)}")


def _check_output(args) -> Path:
    out = Path(args.output)
    if out.is_dir():
        raise UserError(f"--output: '{out}' is a folder; give a file name such as predictions.csv")
    if out.exists() and Path(args.input).exists() and out.resolve() == Path(args.input).resolve():
        raise UserError(
            f"--output: '{out}' is the --input file; writing there would destroy it, choose another"
        )
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise UserError(f"--output: folder '{out.parent}' does not exist; create it first")
    return out


def _check_priors(args, runs: list[Path]):
    """``--prior-correction`` and ``--match-priors train`` need every run's training class counts, and a
    ``--match-priors LABEL=SHARE,...`` mix must name the run's classes; checked before anything loads.

    Returns:
        The class mix ``--match-priors`` asks for (None: the training mix, or no matching).
    """
    from loraclf.inference.label_shift import parse_mix, train_priors_of
    from loraclf.runfolder.schema import read_run_info

    if args.prior_correction and args.match_priors is not None:
        raise UserError(
            "--prior-correction and --match-priors contradict each other (the first estimates a new class mix, "
            "the second keeps a known one); choose one"
        )
    flag = "--prior-correction" if args.prior_correction else "--match-priors"
    mix = None
    if args.match_priors not in (None, "train", "uniform") and args.match_priors.startswith("data."):
        # nargs="?" took the override that followed the flag for its mix
        raise UserError(
            f"--match-priors: '{args.match_priors}' is a recipe override, not a class mix; write the mix "
            "(--match-priors train, uniform or LABEL=SHARE,...) or put the overrides before --match-priors"
        )
    if args.match_priors not in (None, "train"):
        try:
            mix = parse_mix(args.match_priors, read_labels(runs[0]), "--match-priors")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    for run in runs if args.prior_correction or args.match_priors == "train" else []:
        info = read_run_info(run)
        if train_priors_of(info.data, info.num_labels) is None:
            raise UserError(
                f"{flag}: '{run / 'run.json'}' records no training count for every class "
                f"(data.train_label_counts); retrain the run, or predict without {flag}"
                + (" (or give the mix: --match-priors LABEL=SHARE,...)" if flag == "--match-priors" else "")
            )
    return mix


def _prior_correction(models, probs, labels):
    """``--prior-correction``: the probabilities re-weighted to the file's EM-estimated priors, said in one line."""
    from loraclf.inference.run import correct_priors

    priors, probs = correct_priors(models, probs)
    shares = ", ".join(f"{lab} {p:.1%}" for lab, p in zip(labels, priors))
    print(f"prior correction: estimated class priors of the input: {shares}", file=sys.stderr)
    return probs


def _prior_matching(models, probs, labels, mix):
    """``--match-priors``: the probabilities re-weighted so their mean is the mix, said in one line."""
    from loraclf.inference.run import MATCH_MIN_ROWS, match_run_priors

    mix, offsets, probs = match_run_priors(models, probs, mix)
    shares = ", ".join(f"{lab} {p:.1%} ({o:+.2f})" for lab, p, o in zip(labels, mix, offsets))
    few = f"; only {len(probs):,} rows, whose mean says little" if len(probs) < MATCH_MIN_ROWS else ""
    print(f"prior matching: class mix (logit offset): {shares}{few}", file=sys.stderr)
    return probs


def cmd_predict(args) -> int:
    out = _check_output(args)
    runs = _check_runs(args, "--input", args.input)
    mix = _check_priors(args, runs)
    launched = _relaunch(args)
    if launched is not None:
        return launched
    from loraclf.data.tables import COLUMN_FLAGS, check_unique_ids, load_texts
    from loraclf.inference.submission import write_submission

    cfg = _raw_data_config(runs[0], args)
    ts, _ = load_texts(args.input, cfg, "--input", labelled=False, fixes=COLUMN_FLAGS)
    check_unique_ids(ts, cfg, "--input")
    cached = _cached_int8(args, runs)
    if cached is not None:
        models, world = [cached], 1
        start = time.perf_counter()
        probs = cached.predict_proba(ts.texts, args.batch_size, progress=not args.quiet)
        seconds = time.perf_counter() - start
    else:
        with _ranks(args) as (dist, device):
            models = _load(dist, device, args)
            start = time.perf_counter()
            probs = _scored(dist, device, models, ts.texts, args, "predict")
            seconds = time.perf_counter() - start
        if not dist.main:
            return 0  # rank 0 writes the file
        world = dist.world
    labels = models[0].labels
    if args.prior_correction:
        probs = _prior_correction(models, probs, labels)
    if args.match_priors is not None:
        probs = _prior_matching(models, probs, labels, mix)
    ranks = f" × {world} processes" if world > 1 else ""
    print(
        f"predict: {len(ts):,} rows in {seconds:.2f} s ({len(ts) / max(seconds, 1e-9):.1f} rows/s, "
        f"{_engine(models[0], args.mc_dropout)}{ranks})",
        file=sys.stderr,
    )
    preds = [labels[i] for i in probs.argmax(1)]
    write_submission(out, ts.ids, preds, probs if args.probabilities else None, labels)
    if len(models) > 1:
        from loraclf.inference.run import ensemble_budget

        print(ensemble_budget(models), file=sys.stderr)
    counts = {str(lab): preds.count(lab) for lab in labels}
    print(f"wrote {len(preds):,} predictions to {out}; predicted classes: {counts}")
    return 0


def _engine(run, mc_dropout: int) -> str:
    """How predictions were computed, for the throughput line."""
    if run.engine is not None and not mc_dropout:  # a Run with its int8 session, or a CachedRun
        return "int8, ONNX Runtime"
    return f"{run.torch_precision}, PyTorch on {run.device}"


COMMANDS = {"evaluate": cmd_evaluate, "predict": cmd_predict}
