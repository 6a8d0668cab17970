"""The Optuna side of a sweep: storage, study, sampler, pruner, and the trials of workers that died.

The study lives in an RDB storage: ``DIR/study.db`` (SQLite) by default, or any SQLAlchemy URL given with
``--storage`` (PostgreSQL or MySQL, so that workers on several machines share one study). Every trial is written to
the database as it happens, so stopping a worker loses at most its running trial:

* Ctrl-C: Optuna marks the running trial FAIL before the interrupt goes on.
* ``kill -9``: the trial stays RUNNING. Each trial records its worker (``host:pid``); on start, a worker marks
  failed the RUNNING trials of processes on its own host that no longer exist. Trials of dead workers on other
  machines fail through Optuna's heartbeat: none for ``GRACE_SECONDS`` and the next worker to start a trial fails
  them.

Samplers are TPE, seeded by ``--seed`` and the study's size (a resumed sweep does not redraw its first random
points) and, when workers share a database, by host and process (two workers starting together do not draw the
same points); TPE's constant liar treats running trials as bad so that concurrent workers spread out. A URL that
cannot be opened is a one-line error that never shows the password.
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
import zlib

from loraclf.utils.errors import UserError
from loraclf.utils.processes import process_alive

HEARTBEAT_SECONDS, GRACE_SECONDS = 60, 180


def worker() -> str:
    """This process as trials record it: host and process id (read at call time, so forked workers differ)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def shown_url(url: str) -> str:
    """The storage URL with its password hidden, for messages and sweep.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL is reported by the caller; hide a password-looking part anyway
        return url.split("@")[-1] if "@" in url else url


def with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3, while the
    ``sweep-postgres`` extra installs psycopg2 (``postgres://`` is accepted as an alias, as many services write it).
    """
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return url


def open_storage(url: str):
    """Optuna's RDB storage with heartbeats; a URL that cannot be opened is a one-line error."""
    import optuna  # pulls in sqlalchemy and alembic: loaded only once the inputs are known to be good
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own line per trial
    kwargs = {}
    if url.startswith("postgres"):  # an unreachable host fails in seconds, not minutes
        kwargs = {"connect_args": {"connect_timeout": 10}}
    elif url.startswith("sqlite"):  # several local workers wait for the write lock
        kwargs = {"connect_args": {"timeout": 60}}
    errors = (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        ValueError,
        RuntimeError,
    )
    try:
        return _rdb_storage(optuna, with_driver(url), kwargs, sqlalchemy.exc.IntegrityError)
    except ImportError:
        raise UserError(
            f"--storage: no database driver for '{shown_url(url)}'; for PostgreSQL install "
            "'loraclf[sweep-postgres]' (psycopg2-binary)"
        ) from None
    except errors as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"--storage: cannot open '{shown_url(url)}' ({why}); check the URL and that the database server runs "
            "and is reachable"
        ) from None


def _rdb_storage(optuna, url: str, engine_kwargs: dict, race, attempts: int = 5):
    """``RDBStorage``, retried when another worker is creating the same tables at this moment.

    Two workers that start together on an empty PostgreSQL database both run ``CREATE TABLE``; the loser fails on
    PostgreSQL's catalogue constraint (a duplicate type name) although the tables now exist. Opening again finds
    them; any other error, or the same one after ``attempts`` tries, is the caller's to report.
    """
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat_interval is marked experimental
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                )
        except race:
            if attempt == attempts - 1:
                raise
            time.sleep(
                0.5 * (attempt + 1) + random.random()
            )  # apart, so that the next try does not race again
    raise AssertionError("unreachable")


def open_study(storage, name: str, metric: str, seed: int, shared: bool, pruner):
    import optuna

    direction = "minimize" if metric == "loss" else "maximize"
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, pruner=pruner, load_if_exists=True
    )
    have = study.user_attrs.get("metric")
    if have is None:
        study.set_user_attr("metric", metric)
    elif have != metric:
        raise UserError(
            f"--metric {metric}: study '{name}' optimises {have}; pass --metric {have} or a new --study"
        )
    # Seeded by the study's size (a resumed sweep does not redraw its first points) and, when workers share a
    # database, by host and process (two workers starting together do not draw the same points).
    salt = f"{seed}:{len(study.get_trials(deepcopy=False))}:{worker() if shared else ''}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant_liar is marked experimental
        study.sampler = optuna.samplers.TPESampler(seed=zlib.crc32(salt.encode()), constant_liar=True)
    return study


def make_pruner(name: str):
    import optuna

    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5)


def fail_lost_trials(study) -> int:
    """Mark failed the RUNNING trials whose worker process on this host is gone (killed with -9)."""
    from optuna.trial import TrialState

    host, lost = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        h, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if h == host and pid.isdigit() and not process_alive(int(pid)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            lost += 1
    return lost
