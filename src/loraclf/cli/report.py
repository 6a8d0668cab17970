"""The ``report`` and ``runs`` commands, registered on the main ``loraclf`` parser by :func:`add_commands`.

``loraclf report RUN [--predictions FILE]`` writes ``RUN/report.html`` (self-contained, figures embedded) and
``RUN/figures/*.png`` from the run folder alone; ``loraclf runs [DIR]`` lists every run folder under ``DIR`` with
its model, method, trainable parameters, accuracy, macro-F1, wall time and status.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from loraclf.reporting.listing import SORT_KEYS
from loraclf.reporting.run_files import check_report_folder


def add_commands(sub) -> None:
    """Register the ``report`` and ``runs`` subcommands on an argparse subparsers object."""
    p = sub.add_parser("report", help="write RUN/report.html and RUN/figures/*.png from a run folder")
    p.add_argument("run", metavar="RUN", help="run folder written by `loraclf train`")
    p.add_argument(
        "--predictions",
        metavar="FILE",
        help="ID,Label CSV from `loraclf predict`; adds its class distribution",
    )

    p = sub.add_parser("runs", help="table of the run folders under DIR")
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="folder to search (default: runs)")
    p.add_argument(
        "--sort",
        default="name",
        choices=list(SORT_KEYS),
        help="order of rows; accuracy and macro_f1 list the best first (default: name)",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def cmd_report(args) -> int:
    check_report_folder(Path(args.run))
    # Figures need numpy and matplotlib: loaded once the folder is known to be a run.
    from loraclf.reporting.report import write_report

    path = write_report(Path(args.run), Path(args.predictions) if args.predictions else None)
    print(path)
    return 0


def cmd_runs(args) -> int:
    from loraclf.reporting.listing import format_runs_table, runs_table, sort_rows

    rows = runs_table(Path(args.dir))
    if args.json:
        print(json.dumps(sort_rows(rows, args.sort), indent=1))
    else:
        print(format_runs_table(rows, args.sort))
    # The table lists a damaged run as "unreadable"; the exit status and one line each keep scripts from missing it.
    damaged = [r for r in rows if r.get("error")]
    for r in damaged:
        print(f"loraclf: error: runs: {r['error']}", file=sys.stderr)
    return 2 if damaged else 0


COMMANDS = {"report": cmd_report, "runs": cmd_runs}
