"""The ``loraclf`` command line: the top-level parser, argument checks and dispatch to one module per command group.

``plan`` (cli/plan.py), ``train`` (cli/train.py), ``evaluate`` and ``predict`` (cli/predict.py), ``report`` and
``runs``, ``augment``, ``pseudo-label`` and ``compare``, ``shift``, ``export``, ``sweep`` and ``serve`` each
register their parser and their handler. Recipe flags are shortcuts for recipe keys (``--rank`` is ``adapter.r``),
derived from the recipe dataclasses in cli/args.py; any key can also be set with a trailing ``key.sub=value`` override.

Flags are never abbreviated: argparse's prefix matching would take ``--epoch 1`` for ``--epochs``, so every parser
is built with ``allow_abbrev=False`` and an unknown flag gets the closest real one as a suggestion. Parsing imports
nothing heavy (torch, transformers, peft, pandas, scikit-learn load inside the command handlers, after the cheap
checks), so a mistake costs well under two seconds. Every user mistake ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import time

from loraclf.cli import augment, export, plan, predict, report, serve, shift, sweep, tapt, toolbox, train
from loraclf.utils.errors import UserError

GROUPS = (plan, train, predict, report, augment, toolbox, tapt, shift, export, sweep, serve)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, exit status 2 and no flag prefixes (``--epoch`` is not ``--epochs``)."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        # main() prints "loraclf: error: …"; name the subcommand only when there is one.
        where = self.prog.removeprefix("loraclf").strip()
        raise UserError(f"{where + ': ' if where else ''}{message}; see `{self.prog} --help`")


def build_parser() -> Parser:
    """The ``loraclf`` parser with every command group's subcommands."""
    parser = Parser(
        prog="loraclf", description="Budget-exact LoRA text classifiers: plan, train, evaluate, predict."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for group in GROUPS:
        (getattr(group, "add_commands", None) or group.add_command)(sub)
    parser.commands = sub.choices  # name → subparser, for "did you mean" on unknown flags
    return parser


def _commands() -> dict:
    return {name: fn for group in GROUPS for name, fn in group.COMMANDS.items()}


def _unknown_flag(parser: Parser, command: str | None, stray: list[str]) -> UserError:
    """'unrecognized arguments: --epoch; did you mean --epochs?' with the closest flag of the command."""
    where, prog = (f"{command}: ", f"loraclf {command}") if command else ("", "loraclf")
    target = parser.commands.get(command, parser) if command else parser
    flags = [s for s in target._option_string_actions if s.startswith("--")]
    hints = []
    for arg in stray:
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            # A prefix names the flags it abbreviates; otherwise the closest spelling.
            close = sorted(f for f in flags if f.startswith(name)) or difflib.get_close_matches(
                name, flags, n=1
            )
            hints += [f"did you mean {' or '.join(close)}?"] if close else []
    hint = f"; {' '.join(hints)}" if hints else ""
    return UserError(f"{where}unrecognized arguments: {' '.join(stray)}{hint}; see `{prog} --help`")


def _parse(parser: Parser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``key.sub=value`` overrides sit between flags (argparse alone stops at the first flag)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
        if stray:
            raise _unknown_flag(parser, getattr(args, "command", None), stray)
        args.overrides = list(args.overrides or []) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one ``loraclf`` command; returns the exit status (0, 2 for a user error, 128 + the signal when
    interrupted: 130 for Ctrl-C, 143 for SIGTERM)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        parser = build_parser()
        args = _parse(parser, argv)
        args.argv = list(
            sys.argv[1:] if argv is None else argv
        )  # `train --nproc` relaunches the same command
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
        rank = os.environ.get("RANK", "0")
        if rank != "0":
            # Ranks usually hit the same mistake together; give rank 0 the moment to say it once (the launcher
            # then stops this rank), and speak only if the mistake was this rank's alone.
            time.sleep(5)
        print(f"loraclf: error: {'' if rank == '0' else f'rank {rank}: '}{exc}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt as exc:
        print("loraclf: interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)


def _quiet_libraries() -> None:
    """Library chatter (download hints, 'newly initialized weights' notices) is noise for CLI users."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # transformers reads its verbosity from the environment when it loads: not imported here just to silence it.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # already loaded (an in-process caller): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    logging.getLogger("peft").setLevel(logging.ERROR)
