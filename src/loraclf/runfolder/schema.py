"""The run folder's files and the one typed schema of ``run.json``, read and written only here.

A run folder is self-describing; ``evaluate``, ``predict``, ``export`` and ``report`` need nothing else::

    run.json             format version, model record, data summary, token lengths, plan, environment, timings
    recipe.yaml          the resolved recipe (every default filled in)
    labels.json          the label map: class index → the training file's label value
    model.safetensors    trainable weights of the best evaluation (adapters + head, or more)
    tokenizer/           the tokenizer files
    metrics.jsonl        training history: one JSON object per logging step and per evaluation
    metrics.json         final metrics of the best weights on the evaluation rows
    confusion_matrix.csv rows = true class, columns = predicted class
    evaluations/*.json   one per `loraclf evaluate RUN --data FILE`, named by the file's name (the report shows them)

The folder also holds ``checkpoints/`` while training (removed when the run completes) and a ``.lock`` while a
process writes it. Every reader goes through :func:`read_run_info`, :func:`read_labels` and :func:`read_recipe`, so a
damaged or missing file is one error message (naming the file and what to do), whichever command meets it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraclf.config import FORMAT_VERSION, Recipe, from_dict
from loraclf.runfolder.atomic import atomic_write_text
from loraclf.utils.errors import UserError

RUN_FILES = (
    "run.json",
    "recipe.yaml",
    "labels.json",
    "model.safetensors",
    "tokenizer",
    "metrics.jsonl",
    "metrics.json",
    "confusion_matrix.csv",
)
REQUIRED = ("run.json", "recipe.yaml", "labels.json", "model.safetensors")
STATUSES = ("training", "complete")


@dataclass
class RunInfo:
    """``run.json``: what a run is and how it went.

    ``plan`` is :meth:`loraclf.modeling.plan.Plan.to_json` (``trainable``, ``total``, the breakdown); ``data`` the
    data summary (files, row counts, label counts, notes); ``environment`` the libraries, hardware, precision and
    threads; ``calibration`` the fitted temperature and the validation summary label-free estimates use. Keys written by newer code that this version does not know are kept in ``extra`` and written back.
    """

    format_version: int
    status: str
    model: dict
    num_labels: int
    max_length: int
    plan: dict
    data: dict = field(default_factory=dict)
    loraclf_version: str = ""
    token_lengths: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    train_seconds: float | None = None
    train_samples_per_s: float | None = None
    best_step: int | None = None
    method_state: dict = field(default_factory=dict)  # method-specific results (e.g. AdaLoRA's final ranks)
    # Temperature scaling fitted on the validation rows (loraclf.inference.calibration.calibrate); runs trained
    # before it existed have none and predict with T = 1.
    calibration: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def trainable(self) -> int:
        return int(self.plan["trainable"])

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Any, source: Path) -> RunInfo:
        """Check types and required keys; raise UserError naming ``source`` and the key."""
        damaged = f"the run folder is damaged; retrain it (or restore {source.name} from a copy)"
        if not isinstance(data, dict):
            raise UserError(f"'{source}' is not a JSON object; {damaged}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kinds = {"format_version": int, "status": str, "model": dict, "num_labels": int, "max_length": int}
        kinds["plan"] = dict
        for key, kind in kinds.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise UserError(f"'{source}': key '{key}' is missing or not {kind.__name__}; {damaged}")
        if not isinstance(data["plan"].get("trainable"), int):
            raise UserError(f"'{source}': key 'plan.trainable' is missing; {damaged}")
        if data["format_version"] > FORMAT_VERSION:
            raise UserError(
                f"'{source}' was written by a newer loraclf (format {data['format_version']}, this one reads "
                f"{FORMAT_VERSION}); upgrade loraclf"
            )
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"'{path}' is missing; {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "msg", None) or type(exc).__name__
        raise UserError(f"'{path}' cannot be read ({reason}); {what}") from None


def read_json(path: Path) -> Any:
    """A JSON file of a run folder; a missing or damaged one is a one-line UserError naming it."""
    return _read_json(Path(path), "the run folder is damaged; retrain it")


def read_run_info(run: Path) -> RunInfo:
    """``run.json`` of a run folder, typed (see :class:`RunInfo`).

    Raises:
        UserError: the file is missing, not JSON, lacks a required key or comes from a newer format.
    """
    path = Path(run) / "run.json"
    return RunInfo.from_json(_read_json(path, "is this a `loraclf train` run folder?"), path)


def write_run_info(run: Path, info: RunInfo) -> None:
    """Write ``run.json`` atomically (a crash leaves the old file or the new one, never half of one)."""
    atomic_write_text(Path(run) / "run.json", json.dumps(info.to_json(), indent=1))


def read_labels(run: Path) -> list:
    """The label map (class index → label value) from ``labels.json``."""
    path = Path(run) / "labels.json"
    data = _read_json(path, "the run folder is damaged; retrain it")
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list) or len(data["labels"]) < 2:
        raise UserError(f"'{path}' has no list of at least two labels; the run folder is damaged, retrain it")
    return data["labels"]


def write_labels(run: Path, labels: list) -> None:
    atomic_write_text(Path(run) / "labels.json", json.dumps({"labels": labels}, indent=1))


def read_recipe(run: Path) -> Recipe:
    """The resolved recipe saved with the run (``recipe.yaml``)."""
    import yaml

    path = Path(run) / "recipe.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"'{path}' is missing; the run folder is damaged, retrain it") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise UserError(
            f"'{path}' is not a readable YAML recipe; the run folder is damaged, retrain it"
        ) from None
    return from_dict(Recipe, data, source=str(path))


def hash_run_content(h, run: Path) -> None:
    """Feed a hash with what a finished run's predictions depend on: its weights, recipe and label map."""
    for name in ("model.safetensors", "recipe.yaml", "labels.json"):
        h.update((run / name).read_bytes())


def check_run(path: str | Path, flag: str = "RUN", finished: bool = True) -> Path:
    """The run folder, checked: its files are there, its format is known, and (``finished``) it completed.

    Raises:
        UserError: not a folder, a required file missing or damaged, or the run unfinished (names the resume
            command).
    """
    run = Path(path)
    if not run.is_dir():
        raise UserError(
            f"{flag}: run folder '{run}' not found; pass the --out folder of a `loraclf train` run"
        )
    missing = [f for f in REQUIRED if not (run / f).exists()]
    if missing and (run / "run.json").is_file() and "recipe.yaml" not in missing:
        status = None
        with contextlib.suppress(UserError):
            status = read_run_info(run).status
        if status == "training":
            raise UserError(
                f"{flag}: run '{run}' is unfinished ({', '.join(missing)} not written yet; "
                f"{_checkpoint_note(run)}); finish it with `loraclf train --resume {run}`"
            )
    if missing:
        raise UserError(
            f"{flag}: '{run}' is not a finished run folder: {', '.join(missing)} missing; "
            "retrain it, or pass the --out folder of a `loraclf train` run"
        )
    try:
        info = read_run_info(run)
    except UserError as exc:
        raise UserError(f"{flag}: {exc}") from None
    if finished and not info.complete:
        # Weights of an interrupted run are its best so far, not its result: resuming finishes it properly.
        raise UserError(
            f"{flag}: run '{run}' is unfinished (status {info.status}; {_checkpoint_note(run)}); finish it with "
            f"`loraclf train --resume {run}`"
        )
    return run


def _checkpoint_note(run: Path) -> str:
    """Where a resume would start: the newest checkpoint's step, or step 0."""
    steps = (
        sorted(p.name for p in (run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
    )
    return f"newest checkpoint {steps[-1]}" if steps else "no checkpoint yet, a resume starts from step 0"


EVALUATIONS = "evaluations"


def evaluation_name(data_file: str | Path) -> str:
    """The name an evaluation of ``data_file`` is recorded under: the whole file name, so ``test.csv``,
    ``test.jsonl`` and ``test.v2.csv`` are three records (a folder or a hub id: its name)."""
    return Path(str(data_file)).name or "data"


def write_evaluation(run: Path, data_file: str | Path, result: dict) -> Path:
    """Record ``loraclf evaluate RUN --data FILE`` as ``RUN/evaluations/<file name>.json`` (atomically).

    The report shows each recorded file's scores and confusion matrix beside the validation split's. A later
    evaluation of a file with the same name replaces the earlier one, also one recorded under the name older
    versions used (the text before the first dot), when that record names the same file name.
    """
    folder = Path(run) / EVALUATIONS
    folder.mkdir(exist_ok=True)
    name = evaluation_name(data_file)
    path = folder / f"{name}.json"
    atomic_write_text(path, json.dumps({"data": str(data_file), **result}, indent=1))
    old = folder / f"{name.split('.')[0] or 'data'}.json"
    if old != path and old.is_file():
        with contextlib.suppress(UserError, OSError, AttributeError):
            if evaluation_name(read_json(old).get("data", "")) == name:
                old.unlink()  # superseded by the record just written
    return path


def read_evaluations(run: Path) -> dict[str, dict]:
    """The recorded evaluations of a run by file name (see :func:`write_evaluation`; records of older versions
    by the text before the file name's first dot); damaged files are skipped."""
    folder = Path(run) / EVALUATIONS
    found = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(UserError):
            data = read_json(path)
            if isinstance(data, dict) and "confusion_matrix" in data and "accuracy" in data:
                found[path.name.removesuffix(".json")] = data
    return found
