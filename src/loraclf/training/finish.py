"""The run folder's life: creating and locking it, what an error may remove, and finishing a trained run.

**Creation.** A new run's folder is created only after every rank built its model and the model matched the
budget plan, so a mistake found that early leaves nothing behind. Rank 0 then writes the static files (recipe,
label map, tokenizer, run.json with status ``training``) and holds the folder's lock until the command ends.

**Errors.** A new run's folder is removed on an error only while it holds nothing trained: no checkpoint, no
``model.safetensors``, no history line. Anything else is kept, and the message says how to continue it. A resumed
run's folder is never removed.

**Finishing** is one idempotent phase that a resume can repeat from its start. When the optimizer steps end, rank 0
writes the finishing record into run.json (the final :class:`~loraclf.training.state.TrainState`, the wall time,
the method's final state); with that record the training model is no longer needed and is freed. Then the best
weights are loaded as ``loraclf evaluate`` would load them (exporting the int8 graph on a CPU), the validation rows
are scored (sharded over ranks), ``metrics.json`` and the confusion matrix are written, run.json is marked
``complete``, the report is drawn and the checkpoints are removed; the record is dropped last. A run interrupted
anywhere in between is resumed by ``loraclf train --resume``: before ``complete`` it finishes again from the
record; after it, only the report and the clean-up remain.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from loraclf.config import FORMAT_VERSION, save_recipe
from loraclf.inference.calibration import calibrate
from loraclf.inference.metrics import metrics, nll
from loraclf.modeling.backbones import is_causal_lm, load_config
from loraclf.runfolder.atomic import atomic_write_text
from loraclf.runfolder.checkpoint import CKPT_DIR, RunLock, list_checkpoints
from loraclf.runfolder.metrics_log import read_metrics
from loraclf.runfolder.schema import RunInfo, read_run_info, write_labels, write_run_info
from loraclf.training.distributed import Dist
from loraclf.training.prepare import Prepared
from loraclf.training.state import Diverged, TrainState
from loraclf.utils.errors import UserError, say
from loraclf.utils.version import __version__

FINISHING = "finishing"  # run.json key of the finishing record


class RunFolder:
    """The folder of one run as one process sees it: created (new runs) and locked by rank 0, kept or removed on
    an error by the rule in the module docstring. Use as a context manager around the whole command."""

    def __init__(self, out: Path, dist: Dist, resume: bool):
        self.out, self.dist, self.resume = Path(out), dist, resume
        self.lock = RunLock(self.out) if dist.main else None
        self.created = False  # by this process (the error rule applies to nothing else)

    def __enter__(self) -> RunFolder:
        if self.resume and self.lock is not None:
            self.lock.acquire()
        return self

    def __exit__(self, kind, exc, _tb) -> None:
        try:
            if isinstance(exc, UserError) and self.created:
                self._after_error(exc)
        finally:
            if self.lock is not None:
                self.lock.release()

    def start(self, p: Prepared, env: dict) -> None:
        """A new run's folder, created and locked by rank 0 once every rank has its model; its static files."""
        self.dist.barrier()  # every rank built (and checked) its model before rank 0 creates the folder
        if self.resume or not self.dist.main:
            return
        create_run_folder(self.out)
        self.created = True
        self.lock.acquire()
        write_static(self.out, p, env)

    def holds_work(self) -> bool:
        """Whether the folder holds anything trained: a checkpoint, weights, or a line of history."""
        if list_checkpoints(self.out) or (self.out / "model.safetensors").exists():
            return True
        try:
            return bool(read_metrics(self.out / "metrics.jsonl"))
        except (OSError, ValueError):
            return (self.out / "metrics.jsonl").exists()

    def _after_error(self, exc: UserError) -> None:
        if not self.holds_work():
            shutil.rmtree(self.out, ignore_errors=True)
            exc.args = (f"{exc}; the run folder {self.out} is removed (nothing was trained yet)",)
        elif not isinstance(exc, Diverged):  # a diverged run names its checkpoint itself
            exc.args = (
                f"{exc}; the run folder {self.out} is kept with what it trained: fix the cause, then "
                f"`loraclf train --resume {self.out}` continues it",
            )

    def record(self) -> dict | None:
        """The finishing record of a run whose optimizer steps all ran (None before that)."""
        return read_run_info(self.out).extra.get(FINISHING)

    def write_record(self, state: TrainState, seconds: float, method_state: dict) -> dict:
        """Rank 0 records that training ended, with what finishing needs; every rank gets the record back."""
        record = {"state": state.as_dict(), "seconds": round(seconds, 2), "method_state": method_state}
        if self.dist.main:
            info = read_run_info(self.out)
            info.extra[FINISHING] = record
            write_run_info(self.out, info)
        return record


def create_run_folder(out: Path) -> None:
    """Create the (empty or new) run folder.

    Raises:
        UserError: it exists and is not empty, or it cannot be created.
    """
    if out.exists() and any(out.iterdir()):
        raise UserError(
            f"--out: '{out}' already exists and is not empty; choose a new folder, or resume it with "
            "`loraclf train --resume`"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"--out: cannot create '{out}' ({exc.strerror}); choose a writable location"
        ) from None


def write_static(out: Path, p: Prepared, env: dict) -> None:
    """The files a run folder has from its start: recipe, label map, tokenizer, run.json (status ``training``)."""
    save_recipe(p.recipe, out / "recipe.yaml")
    write_labels(out, p.label_map)
    p.tokenizer.save_pretrained(str(out / "tokenizer"))
    counts = {
        f"{name}_label_counts": np.bincount(ts.labels, minlength=len(p.label_map)).tolist()
        for name, ts in (("train", p.train), ("eval", p.eval))
    }
    info = RunInfo(
        format_version=FORMAT_VERSION,
        loraclf_version=__version__,
        status="training",
        model=model_record(p.recipe),
        num_labels=len(p.label_map),
        max_length=p.max_length,
        token_lengths=p.lengths,
        data={**p.notes, "n_train": len(p.train), "n_eval": len(p.eval), **counts},
        plan=p.plan.to_json(),
        environment=env,
    )
    write_run_info(out, info)


def model_record(recipe) -> dict:
    """The backbone's name and kind; prediction picks its engine by the kind (causal LMs stay off int8)."""
    config = load_config(recipe.model.name, model_cfg=recipe.model)
    return {"name": recipe.model.name, "type": config.model_type, "causal": is_causal_lm(config)}


def finish(p: Prepared, folder: RunFolder, record: dict, device: torch.device) -> dict:
    """Evaluate the best weights as ``loraclf evaluate`` would, write the final files, mark the run complete.

    Scoring is sharded over ranks like ``loraclf evaluate`` with as many processes (int8 ONNX Runtime scales each
    batch's activations, so other shards move the probabilities slightly).

    Returns:
        The final metrics on rank 0; an empty dict on other ranks.

    Raises:
        UserError: the best weights cannot be loaded or scored (the folder and the record stay; a resume retries).
    """
    from loraclf.inference.run import load

    dist, out, t = folder.dist, folder.out, p.recipe.train
    # The training copy was dropped with the loop's session; collect its reference cycles before a second copy
    # (the merged inference model) is built beside it.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    dist.barrier()  # rank 0 has written the best weights and the record
    with dist.main_first():  # rank 0 exports the int8 graph once; the others open it
        # This rank's device: a cuda:N chosen by the launcher, not train.device's first GPU on every rank.
        # finished=False: marked complete below; calibration=False: the temperature is fitted on these probabilities
        run = load(out, device=str(device), precision=t.precision, finished=False, calibration=False)
    ids = p.eval_ids
    probs = dist.map_rows(
        len(ids),
        len(run.labels),
        lambda rows: run.probs_of_ids(
            [ids[i] for i in rows], progress=t.progress and dist.main, desc="evaluate"
        ),
        device,
    )
    if not dist.main:
        return {}
    state = TrainState.from_dict(record["state"])
    m = _final_metrics(p, probs, state, record["seconds"])
    _write_results(out, m)
    info = read_run_info(out)
    info.status = "complete"
    info.train_seconds = record["seconds"]
    info.train_samples_per_s = m["train_samples_per_s"]
    info.best_step = state.best_step
    info.method_state = record["method_state"] or {}
    # Temperature scaling on the validation rows (inference/calibration.py), kept in run.json; evaluate and predict
    # apply it. The probabilities are the run's own, uncalibrated: the run has no temperature yet.
    info.calibration = calibrate(probs, p.eval.labels)
    write_run_info(out, info)  # usable from here on; the record stays until the clean-up below is done
    finish_tail(out)
    return m


def finish_tail(out: Path) -> None:
    """The report, the checkpoints' removal and the record's: what a complete run may still lack."""
    from loraclf.reporting.report import write_report

    try:
        write_report(out)
    except (UserError, OSError, ValueError) as exc:
        # The trained run is complete and usable; a figure that fails to draw must not take it down.
        say(f"report: not written ({exc}); run `loraclf report {out}` to retry")
    shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
    info = read_run_info(out)
    info.extra.pop(FINISHING, None)
    write_run_info(out, info)


def _final_metrics(p: Prepared, probs: np.ndarray, state: TrainState, seconds: float) -> dict:
    labels = p.eval.labels
    m = metrics(labels, probs.argmax(1), p.label_map, nll(probs, labels))
    m.update(
        best_step=state.best_step,
        train_seconds=round(seconds, 2),
        # Training throughput counts the optimisation steps only; evaluation and checkpoints are in eval_seconds.
        train_samples_per_s=round(state.samples / max(seconds - state.pause_seconds, 1e-9), 2),
        eval_seconds=round(state.pause_seconds, 2),
        steps=state.step,
    )
    return m


def _write_results(out: Path, m: dict) -> None:
    atomic_write_text(out / "metrics.json", json.dumps(m, indent=1))
    header = "true\\predicted," + ",".join(m["labels"])
    rows = [
        f"{name}," + ",".join(str(v) for v in row) for name, row in zip(m["labels"], m["confusion_matrix"])
    ]
    atomic_write_text(out / "confusion_matrix.csv", "\n".join([header, *rows]) + "\n")


def final_metrics_of(out: Path) -> dict:
    """The metrics a complete run wrote (for a resume that only had the clean-up left)."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads((out / "metrics.json").read_text())
    return {}
