"""``loraclf serve``: finished runs behind one HTTP endpoint, many adapters over one copy of each backbone.

``loraclf serve RUN [RUN …]`` or ``loraclf serve --runs DIR`` (every finished run in DIR, and runs added to it
later); a run is named by its folder's name. The flags, the run folders, the serving libraries and the port are
checked before torch loads, so a mistake (a missing run, a folder without runs, a port in use) is one line and exit
status 2 at once. The server itself is :mod:`loraclf.serving`.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import socket
import threading
from pathlib import Path

from loraclf.utils.errors import UserError

API_KEY_ENV = "LORACLF_API_KEY"
PRECISIONS = ("auto", "int8", "bf16", "fp16", "fp32")
NEEDS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client"}


def add_command(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve runs over HTTP: TEI- and Hugging Face-style /predict, many adapters over one backbone",
        description="Serve finished runs over HTTP; each run is named by its folder's name.",
    )
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders written by `loraclf train`")
    p.add_argument(
        "--runs",
        dest="runs_dir",
        metavar="DIR",
        help="serve every finished run in DIR, and runs added to it later",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free one; the log names it)")
    p.add_argument(
        "--api-key", metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on every route but /health (default: ${API_KEY_ENV}, which keeps "
        "the key out of the process list)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="auto: one RUN on a CPU runs its int8 ONNX graph as predict does, several share a PyTorch backbone; "
        "int8: every run its own int8 graph (nothing shared)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, help="CPU threads for the model (default: one per core)")
    p.add_argument("--max-batch-tokens", type=int, default=16_384, help="token budget of one batch")
    p.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="longest a request waits for others to batch with"
    )
    p.add_argument(
        "--queue-size", type=int, default=1024, help="texts that may wait; beyond: 429 with Retry-After"
    )
    p.add_argument("--max-inputs", type=int, default=64, help="texts one request may send")
    p.add_argument("--max-body-bytes", type=int, default=2_000_000, help="largest request body")
    p.add_argument(
        "--rescan", type=float, default=10.0, metavar="SECONDS",
        help="look for new runs in --runs DIR this often (0: only when a request names a run not loaded)",
    )  # fmt: skip
    p.add_argument(
        "--drain-seconds", type=float, default=30.0, help="on SIGTERM, how long requests in flight may take"
    )
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    p.add_argument(
        "--no-calibration",
        dest="calibration",
        action="store_false",
        help="serve raw logits and their softmax (default: each run's fitted temperature, as predict applies it)",
    )


def _api_key(args) -> str | None:
    if args.api_key is not None:
        if not args.api_key.strip():
            raise UserError("--api-key is empty; give a key, or leave the flag out to serve without one")
        return args.api_key
    key = os.environ.get(API_KEY_ENV)
    if key is not None and not key.strip():
        raise UserError(f"${API_KEY_ENV} is set but empty; give it a key or unset it")
    return key


def _limits(args):
    """The server settings from the flags, each checked."""
    positive = ("max_batch_tokens", "queue_size", "max_inputs", "max_body_bytes")
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("max_wait_ms", "rescan", "drain_seconds"):
        if not getattr(args, name) >= 0:
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.max_inputs > args.queue_size:
        raise UserError(
            f"--max-inputs ({args.max_inputs}) is over --queue-size ({args.queue_size}): such a request could never "
            "be queued; lower --max-inputs or raise --queue-size"
        )
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {args.port}")
    return dict(
        api_key=_api_key(args), max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs,
        max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
        rescan_seconds=args.rescan,
    )  # fmt: skip


def _check_runs(args) -> tuple[list[Path], Path | None]:
    """The RUN folders (checked) and the --runs folder (holding at least one run folder)."""
    from loraclf.runfolder.schema import check_run

    if not args.runs and not args.runs_dir:
        raise UserError("give the runs to serve: `loraclf serve RUN [RUN …]` or `loraclf serve --runs DIR`")
    runs = [check_run(r) for r in args.runs]
    names = [r.resolve().name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(
            f"RUN: two run folders are named '{twice[0]}'; a run is served under its folder's name"
        )
    folder = None
    if args.runs_dir:
        folder = Path(args.runs_dir)
        if not folder.is_dir():
            raise UserError(
                f"--runs: folder '{folder}' not found; give the folder that holds your run folders"
            )
        if not runs and not any((p / "run.json").is_file() for p in folder.iterdir() if p.is_dir()):
            raise UserError(
                f"--runs: '{folder}' holds no run folder (none of its folders has a run.json); train into it first "
                f"(`loraclf train … --out {folder}/NAME`)"
            )
    return runs, folder


def _check_installed() -> None:
    missing = [package for module, package in NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(f"loraclf serve needs {', '.join(missing)}: pip install 'loraclf[serve]'")


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (connections wait in its backlog until the server starts)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(
            f"--host: cannot resolve '{host}' ({exc}); give an address such as 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
    )  # a restart may bind while old connections linger
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = "stop the other server or pick another --port" if port else "check --host"
        raise UserError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); {hint}") from None
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_serve(args) -> int:
    limits = _limits(args)
    runs, folder = _check_runs(args)
    _check_installed()
    sock = _bind(args.host, args.port)
    try:
        return _serve(args, limits, runs, folder, sock)
    finally:
        sock.close()


def _serve(args, limits: dict, runs: list[Path], folder: Path | None, sock: socket.socket) -> int:
    import torch

    from loraclf.serving.app import Limits, Service, run
    from loraclf.serving.registry import Registry, note

    if args.threads:
        torch.set_num_threads(args.threads)
    alone = args.precision == "int8" or (args.precision == "auto" and len(runs) == 1 and folder is None)
    registry = Registry(args.device, args.precision, share=not alone, calibration=args.calibration)
    for path in runs:
        registry.add(path)
    if folder is not None:
        registry.watch(folder)
        registry.scan()
    if not registry.members:
        raise UserError(
            f"--runs: no run in '{folder}' could be loaded (each refusal is logged above); fix or retrain them"
        )
    if limits["api_key"] is None and not _is_loopback(args.host):
        note(
            f"serving on {args.host} without an API key: anyone who reaches this address can use it (--api-key)"
        )
    host, port = sock.getsockname()[:2]
    key = "API key required" if limits["api_key"] else "no API key"
    ready = (
        f"listening on http://{host}:{port} ({len(registry.members)} run(s); {key}; SIGTERM drains and stops)"
    )
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the SIGTERM it drained on; handled here, the command then ends with status 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
    run(Service(registry, Limits(**limits)), sock, args.drain_seconds, args.access_log, lambda: note(ready))
    note("stopped")
    return 0


COMMANDS = {"serve": cmd_serve}
