"""Several processes: everything the loop needs to train one run on N ranks, and nothing more.

A launcher (``torchrun``, ``accelerate launch``, or ``loraclf train --nproc N``, which starts torchrun) runs the
same ``loraclf train`` command in N processes and tells each its place through environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` joins them into one process
group: NCCL between GPUs, gloo between CPU processes. Without those variables it returns a one-process ``Dist``
and every call here is free, so the single-process loop reads as before.

**Same run at any world size.** The data order is one process's order: ``epoch_batches`` cuts each epoch into
length-grouped batches of ``train.batch_size`` rows, and ``train.grad_accum`` consecutive batches make one
optimizer step, at any N. Each rank takes its share of every batch (:meth:`Dist.share`): rows at strided
positions of the length-sorted batch, so the shares have the same size and length mix. Each rank's loss is its
rows' summed loss terms divided by the whole step's totals (its rows on all ranks, and their summed class weights;
training/steps.py), times N; DDP then *averages* gradients over ranks, which leaves the gradient of the
single-process loss over the step's rows, for every loss term, however unevenly the rows divide (tested against
one process taking the whole step, for one to three ranks). A rank whose share of a small batch is empty runs one
row with weight 0, so every rank makes the same calls and DDP's all-reduce lines up.

With the frozen-layer cache on, a rank caches only the rows it owns (``row % N``) and its share of a batch is
those rows: the cache then costs 1/N of the memory and compute on each rank, at the price of shares that differ
by a few rows (the weights above keep the gradient exact).

**Evaluation and prediction** are sharded the same way at every world size: rank r scores rows ``r, r+N, …``
(:meth:`Dist.map_rows`), and the gathered table puts each row back in its place, so an odd row count loses or
repeats nothing. The end-of-training evaluation, ``loraclf evaluate`` and ``loraclf predict`` under a launcher (or
with ``--nproc N``) all take this path; rank 0 exports the int8 graph first and the others open it
(:meth:`Dist.main_first`; the graph is cached per machine, so on several machines the ranks of the others each
export it themselves, atomically).

**Why torch.distributed directly, not HF accelerate.** The loop already does what ``Accelerator`` would add
(mixed precision, fused AdamW, checkpoints with the data position); what it needs from a distributed engine is
init from the launcher's variables, DDP wrapping, a barrier and gathers, about a hundred lines here. Accelerate's
data-loader sharding would not follow one process's length-grouped order, and its ``gather_for_metrics`` undoes
padding only for its own samplers. ``accelerate launch`` still works: it sets the same variables.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as tdist

from loraclf.utils.errors import UserError


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks of a job (rank 0 of 1 without a launcher)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned_rows: bool = (
        False  # shares are the rows a rank owns (frozen-layer cache on), else strided positions
    )

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run folder, logs, progress lines and the report."""
        return self.rank == 0

    def share(self, batch: np.ndarray) -> tuple[np.ndarray, int]:
        """This rank's rows of one batch and how many of them count (0: a stand-in row with weight 0)."""
        if self.world == 1:
            return batch, len(batch)
        mine = batch[batch % self.world == self.rank] if self.owned_rows else batch[self.rank :: self.world]
        if len(mine):
            return mine, len(mine)
        # An empty share still runs a forward and backward (weighted 0) so every rank's DDP all-reduce lines up.
        # With owned rows the stand-in must be a row this rank has cached: row ``rank`` is its first.
        return (np.array([self.rank]) if self.owned_rows else batch[:1]), 0

    def my_rows(self, n: int) -> np.ndarray:
        """The row indices out of ``n`` that this rank owns."""
        return np.arange(self.rank, n, self.world)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model wrapped in DistributedDataParallel (gradients averaged over ranks), or itself on one rank."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # Buffers (position ids) never change; broadcasting them every forward would only cost time.
            broadcast_buffers=False,
        )

    def no_sync(self, fwd: torch.nn.Module, last: bool):
        """Skip DDP's all-reduce on all but the last micro-batch of an optimizer step (gradients accumulate)."""
        if self.world == 1 or last or not hasattr(fwd, "no_sync"):
            return contextlib.nullcontext()
        return fwd.no_sync()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks in place (asynchronous on a GPU: no host synchronisation)."""
        if self.world > 1:
            tdist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def first(self, value):
        """Rank 0's value on every rank (for decisions taken from a clock or a file, which ranks may see differently)."""
        if self.world == 1:
            return value
        box = [value]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, value) -> list:
        """Every rank's (small, picklable) value, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        out = [None] * self.world
        tdist.all_gather_object(out, value)
        return out

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block before the others: it fills a cache (the int8 ONNX graph) that they then read.

        Rank 0 tells the others whether its block succeeded, so a failure there stops every rank at once instead
        of leaving them at a barrier until the process group's timeout (launchers such as srun or mpirun do not
        stop the other workers when one fails).

        Raises:
            UserError: on ranks other than 0, when rank 0's block failed (rank 0 raises its own error).
        """
        if self.world == 1:
            yield
            return
        if self.main:
            try:
                yield
            except BaseException:
                self.first(False)
                raise
            self.first(True)
            return
        if not self.first(None):  # waits for rank 0's verdict
            raise UserError("rank 0 failed while preparing the model for every rank; see its error above")
        yield

    def map_rows(self, n: int, width: int, fn, device: torch.device) -> np.ndarray:
        """Score ``n`` rows sharded over the ranks: ``fn(rows)`` gives this rank's ``(len(rows), width)`` table for
        its row indices (:meth:`my_rows`), and the ``(n, width)`` whole is gathered on every rank, in row order.

        Raises:
            UserError: another rank's ``fn`` failed (this rank's own failure is raised as it is); every rank learns
                of it before the gather, so none waits for a share that will never come.
        """
        rows = self.my_rows(n)
        error = None
        try:
            local = fn(rows) if len(rows) else np.zeros((0, width))
        except Exception as exc:  # re-raised below, once every rank knows
            error, local = exc, None
        failed = [r for r, ok in enumerate(self.gather_objects(error is None)) if not ok]
        if error is not None:
            raise error
        if failed:
            raise UserError(f"rank {failed[0]} failed while scoring its rows; see its error above")
        return self.gather_rows(local, n, device)

    def gather_rows(self, local: np.ndarray, n: int, device: torch.device) -> np.ndarray:
        """Assemble an ``(n, k)`` table from each rank's rows ``rank::world`` (see :meth:`my_rows`).

        Shares differ by at most one row when ``n`` does not divide by the world size; each is padded to the
        largest for the collective and the padding is dropped, so no row is duplicated or lost.
        """
        if self.world == 1:
            return local
        width = -(-n // self.world)
        buf = torch.zeros((width, local.shape[1]), dtype=torch.float64)
        buf[: len(local)] = torch.from_numpy(np.asarray(local, dtype=np.float64))
        comm = device if device.type == "cuda" else torch.device("cpu")  # NCCL moves GPU tensors only
        parts = [torch.empty_like(buf, device=comm) for _ in range(self.world)]
        tdist.all_gather(parts, buf.to(comm))
        out = np.zeros((n, local.shape[1]), dtype=np.float64)
        for r, part in enumerate(parts):
            rows = np.arange(r, n, self.world)
            out[rows] = part[: len(rows)].cpu().numpy()
        return out


def launched() -> bool:
    """Whether a launcher started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the launcher's process group (once) and return this rank's place and device.

    Raises:
        UserError: the launcher's variables are incomplete, or a GPU rank has no GPU of its own.
    """
    if not launched():
        return Dist(), device
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise UserError(
            "WORLD_SIZE is set but RANK is missing or not a number; start several processes with "
            "`torchrun --nproc-per-node N -m loraclf train …` or `accelerate launch -m loraclf train …`"
        ) from None
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(
                f"rank {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible; "
                "start at most one process per GPU (--nproc-per-node)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        tdist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            # The other ranks wait while rank 0 exports the int8 graph and writes the report at the end.
            timeout=timedelta(minutes=60),
        )
    return Dist(rank, world, local), device


@contextlib.contextmanager
def joined(device: torch.device):
    """``with joined(device) as (dist, device):`` — :func:`setup`, then :func:`shutdown` on leaving: after a barrier
    when the block finished on this rank, without one after an error (another rank may be gone).

    While the block runs, a :class:`Watchdog` stops this rank when another rank reports a failure, and an error
    leaving the block here is reported to the others first, wherever it happened (building the model, the
    frozen-layer cache, a training step, finishing): no rank is left waiting in a collective for a peer that
    will never come, whichever launcher started them (srun and mpirun do not stop the other workers).
    """
    dist, device = setup(device)
    dog = Watchdog.start(dist)
    try:
        yield dist, device
    except BaseException as exc:
        if dog is not None:
            dog.stop()
            dog.report(exc)
        shutdown()
        raise
    if dog is not None:
        dog.stop()
    shutdown(finished=True)


class Watchdog:
    """A thread that watches the job's key-value store for another rank's failure and stops this rank then.

    The failing rank writes one line under :data:`FAILED` in the store of the launcher's rendezvous (the store
    every rank joined the process group through); the others poll it every ``period`` seconds. The blocked rank
    cannot be woken where it waits (inside a collective, possibly in NCCL), so the thread prints one line and ends
    the process with exit status 2: its run folder keeps its checkpoints, and ``--resume`` continues it.
    """

    FAILED = "loraclf/failed"

    def __init__(self, store, dist: Dist, period: float):
        self.store, self.dist, self.period = store, dist, period
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loraclf-watchdog", daemon=True)

    @classmethod
    def start(cls, dist: Dist, period: float = 1.0) -> Watchdog | None:
        """A running watchdog for this rank, or None with one process (or a store that cannot be reached)."""
        if dist.world == 1:
            return None
        try:
            store = tdist.distributed_c10d._get_default_store()  # torch keeps the rendezvous store here
            dog = cls(
                store.clone(), dist, period
            )  # a connection of its own: the thread polls beside collectives
        except (AttributeError, RuntimeError, ValueError):
            return None
        dog._thread.start()
        return dog

    def _watch(self) -> None:
        while not self._stopped.wait(self.period):
            try:
                failed = self.store.check([self.FAILED])
                message = self.store.get(self.FAILED).decode(errors="replace") if failed else ""
            except Exception:  # the store is gone: its host (rank 0 or the launcher's agent) stopped
                if self._stopped.is_set():
                    return
                failed, message = (
                    True,
                    "the job's rendezvous store stopped answering (rank 0 or its launcher ended)",
                )
            if failed and not self._stopped.is_set():
                print(
                    f"loraclf: error: rank {self.dist.rank}: stopped because {message}; see that rank's error",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(UserError.exit_code)

    def stop(self) -> None:
        """Stop watching (this rank finishes or fails by itself)."""
        self._stopped.set()
        self._thread.join(timeout=2 * self.period + 5)

    def report(self, exc: BaseException) -> None:
        """Tell the other ranks that this one failed (best effort: the store may be gone too)."""
        what = (
            "was interrupted"
            if isinstance(exc, KeyboardInterrupt)
            else f"failed ({str(exc)[:300] or type(exc).__name__})"
        )
        with contextlib.suppress(Exception):
            self.store.set(self.FAILED, f"rank {self.dist.rank} {what}")


def shutdown(finished: bool = False) -> None:
    """Leave the process group. ``finished``: every rank got here without an error, so they first meet at a
    barrier, and none tears down its connections while another still uses them (once, under a loaded machine, a
    rank that left early made gloo abort the process still finishing); after an error there is no barrier, as
    another rank may be gone."""
    if tdist.is_initialized():
        if finished and tdist.get_world_size() > 1:
            tdist.barrier()
        tdist.destroy_process_group()


def rng_state() -> dict:
    """This rank's random-number-generator state (CPU and the current GPU), for checkpoints."""
    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])
