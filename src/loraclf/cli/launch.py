"""``loraclf train|evaluate|predict --nproc N``: the same command in N processes on this machine, through torchrun.

This is ``torchrun --standalone --nproc-per-node N -m loraclf train …`` without having to know torchrun: the
elastic launcher (``torch.distributed.launcher``) starts N copies of the command without ``--nproc``, each finds its
rank in the environment, and training joins them (training/distributed.py). When a worker fails, the launcher
stops the others; the workers have printed their one-line errors, so this process adds no launcher traceback and
exits with the workers' status (2 for a user mistake).
"""

from __future__ import annotations

import os
import sys
import uuid

from loraclf.utils.errors import UserError


def strip_nproc(argv: list[str]) -> list[str]:
    """The command line without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run ``loraclf`` with ``argv`` (minus ``--nproc``) in ``nproc`` (> 1) local processes; return their status.

    Raises:
        UserError: ``nproc`` is below 1, or already inside a launched job.
    """
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: give a number of processes of at least 1")
    if "RANK" in os.environ:
        raise UserError("--nproc: this command already runs under a launcher; drop --nproc")
    args = strip_nproc(argv)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:
        # CPU processes share the cores; GPU processes need few threads. torchrun itself defaults to 1.
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex[:8],
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone picks
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "loraclf", *args)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        return 2 if 2 in codes else max((c for c in codes if c > 0), default=1)
    return 0
