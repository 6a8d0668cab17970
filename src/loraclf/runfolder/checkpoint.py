"""Crash-safe checkpoints and the GPU random-number states they restore (the run-folder lock is in lock.py).

A checkpoint holds everything needed to continue a run exactly: the trainable weights (safetensors), the optimizer,
scheduler and loss-scaler states, the RNG states and the position in the data order (epoch and next batch; the
order itself is a function of the seed, see ``batching``). It is written into a temporary folder, flushed to disk,
then renamed into place: a rename is atomic, so after ``kill -9`` at any moment the newest ``step-*`` folder is
complete and older ones are pruned only after a newer one exists. Nothing here unpickles arbitrary objects: tensors
go through safetensors, the rest through ``torch.load(weights_only=True)`` and JSON.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from loraclf.runfolder.atomic import atomic_path, fsync_dir
from loraclf.runfolder.lock import RunLock as RunLock  # where training imports it from
from loraclf.utils.errors import UserError

CKPT_DIR = "checkpoints"


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors to safetensors atomically (contiguous CPU copies; shared storage is not allowed there)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(tmp))
        os.chmod(tmp, 0o644)  # safetensors creates files owner-only; run folders are meant to be shared
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file.

    Raises:
        UserError: the file is missing or not a readable safetensors file (names it).
    """
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"'{path}' is missing; the run folder is damaged, retrain it") from None
    except (OSError, SafetensorError) as exc:
        raise UserError(f"'{path}' is not a readable safetensors file ({exc}); retrain the run") from None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    run: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    scaler,
    state: dict,
    keep: int,
    rng: dict | None = None,
    rank_rng: list[dict] | None = None,
    method_state: dict | None = None,
    average: dict | None = None,
) -> Path:
    """Write checkpoints/step-N atomically, then prune to the newest ``keep``.

    ``rng`` is the random-number state to continue from (``torch_rng``, and ``cuda_rng_all`` with GPUs): the
    snapshot the loop took at the step boundary, not the live state, which a half-done step may have advanced
    (the live state when None). ``rank_rng`` holds every rank's state when several processes train (rank 0
    writes them all); ``method_state`` what the adaptation method keeps outside its parameters (tensors and plain
    values); ``average`` the running weight average (training/averaging.py), when the run keeps one.
    """
    if rng is None:
        rng = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda_rng_all"] = torch.cuda.get_rng_state_all()
    root = run / CKPT_DIR
    root.mkdir(exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(
        {k: v.to("cpu").contiguous().clone() for k, v in trainable_state(model).items()},
        str(tmp / "weights.safetensors"),
    )
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "torch_rng": rng["torch_rng"],
            "cuda_rng": rng.get("cuda_rng_all", []),
            "rank_rng": rank_rng or [],
            "method": method_state or {},
            "average": average or {},
        },
        tmp / "trainer.pt",
    )
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        with f.open("rb+") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(root)
    for old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run: Path) -> list[Path]:
    root = run / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step-") and (p / "state.json").is_file()
    )


def load_checkpoint(
    path: Path,
    model,
    optimizer,
    scheduler,
    scaler,
    rank: int = 0,
    restore_method=None,
    restore_average=None,
) -> dict:
    """Restore a checkpoint into live objects (RNG: rank ``rank``'s when several ranks wrote it); returns state.json.

    ``restore_method(model, state)`` receives the method state saved beside the weights, when there is one;
    ``restore_average(state)`` the weight average.

    Raises:
        UserError: the checkpoint does not fit the model, is not a loraclf checkpoint, or lacks the weight
            average this run keeps, or holds one this run does not (``train.swa_start`` edited since it was
            written).
    """
    weights = load_file(str(path / "weights.safetensors"))
    params = dict(model.named_parameters())
    missing = [k for k in weights if k not in params]
    if missing:
        raise UserError(
            f"--resume: checkpoint '{path}' does not fit this model ({missing[0]}); was the recipe edited?"
        )
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v.to(params[k].device))
    try:
        # weights_only: a tampered checkpoint can hold tensors and plain containers, never code to run.
        blob = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise UserError(
            f"--resume: '{path / 'trainer.pt'}' is not a loraclf checkpoint ({type(exc).__name__}); "
            "delete that checkpoint folder to resume from an older one"
        ) from None
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and blob.get("scaler"):
        scaler.load_state_dict(blob["scaler"])
    if restore_method is not None and blob.get("method"):
        restore_method(model, blob["method"])
    if restore_average is None and blob.get("average"):
        raise UserError(
            f"--resume: checkpoint '{path}' holds a weight average, but the run's recipe no longer sets "
            "train.swa_start; restore the recipe's train.swa_start, or retrain the run"
        )
    if restore_average is not None:
        if not blob.get("average"):
            raise UserError(
                f"--resume: checkpoint '{path}' holds no weight average, but the run's recipe sets "
                "train.swa_start; it was written without it, retrain the run"
            )
        try:
            restore_average(blob["average"])
        except ValueError as exc:
            raise UserError(f"--resume: checkpoint '{path}': {exc}; was the recipe edited?") from None
    ranks = blob.get("rank_rng") or []
    if rank < len(ranks):
        torch.set_rng_state(ranks[rank]["torch_rng"])
        if "cuda_rng" in ranks[rank] and torch.cuda.is_available():
            torch.cuda.set_rng_state(ranks[rank]["cuda_rng"])
        return json.loads((path / "state.json").read_text())
    torch.set_rng_state(blob["torch_rng"])
    restore_cuda_rng(blob.get("cuda_rng") or [])
    return json.loads((path / "state.json").read_text())


def restore_cuda_rng(states: list) -> None:
    """Set the saved generator state of each GPU that is still visible.

    A one-process checkpoint holds one state per GPU visible when it was saved; a resume may see fewer (another
    ``CUDA_VISIBLE_DEVICES``), and ``set_rng_state_all`` would then fail on a missing device ordinal. Training
    draws on the first device only, so the states of devices no longer visible are not needed.
    """
    if not states or not torch.cuda.is_available():
        return
    for device, state in enumerate(states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, device)
