"""Dynamic batching: requests queue per run and reach the model together, up to a token budget.

Every request's tokenised texts join its run's queue. One scheduler picks the run whose oldest request has waited
longest, waits until that run's queue holds ``max_tokens`` tokens or its oldest request has waited ``max_wait``
seconds, and hands the model one batch of whole requests (at most ``max_tokens`` tokens, at least one request).
Batches run one at a time on one inference thread: on a CPU the model's matrix products already use every core,
so two batches at once would only split them. While a batch runs, new requests gather, so a loaded server batches
without waiting at all and an idle one answers a lone request after ``max_wait``.

The queue is bounded: a request whose texts would take the waiting texts over ``queue_size`` is refused at once
with 429 and a ``Retry-After`` estimated from the recent rate, instead of the queue (and every client's latency)
growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from loraclf.serving.wire import ApiError


@dataclass
class Job:
    """One request's texts for one run: token ids, their token count, and the future its answer goes to."""

    member: object
    ids: list[np.ndarray]
    future: asyncio.Future
    tokens: int = 0
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """The queue and scheduler (see the module docstring); start in the server's event loop, stop when it drains.

    Args:
        max_tokens: Token budget of one batch (a longer request still runs, alone).
        max_wait: Seconds a request may wait for others before its batch runs.
        queue_size: Texts that may wait at once; beyond, requests get 429.
        metrics: A :class:`~loraclf.serving.metrics.Metrics` or None.
    """

    def __init__(self, max_tokens: int, max_wait: float, queue_size: int, metrics=None):
        self.max_tokens, self.max_wait, self.queue_size, self.metrics = (
            max_tokens,
            max_wait,
            queue_size,
            metrics,
        )
        self.queues: dict[str, deque[Job]] = {}
        self.waiting = 0  # texts queued, not yet handed to the model
        self._rate = 0.0  # texts per second of recent batches, for Retry-After
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="loraclf-serve-model")

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._schedule())

    async def stop(self) -> None:
        """Stop scheduling (the server calls this after its requests have drained) and release the thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    def retry_after(self) -> int:
        """Seconds until the queue has likely emptied (1 to 60)."""
        return max(1, min(60, math.ceil(self.waiting / self._rate))) if self._rate > 0 else 1

    async def submit(self, member, ids: list[np.ndarray]) -> np.ndarray:
        """Queue a request's texts for ``member`` and return their logits, shape (len(ids), classes).

        Raises:
            ApiError: 429 when the queue is full.
        """
        if self.waiting + len(ids) > self.queue_size:
            raise ApiError(
                429,
                f"the server is busy ({self.waiting} texts waiting, the queue holds {self.queue_size}); retry later",
                "Overloaded",
                {"Retry-After": str(self.retry_after())},
            )
        job = Job(member, ids, asyncio.get_running_loop().create_future(), sum(len(x) for x in ids))
        self.queues.setdefault(member.name, deque()).append(job)
        self._count(member.name, len(ids))
        self._wake.set()
        return await job.future

    def _count(self, name: str, delta: int) -> None:
        self.waiting += delta
        if self.metrics is not None:
            self.metrics.queued(name, delta)

    def _oldest(self) -> str | None:
        """The run whose first queued request has waited longest."""
        heads = [(q[0].enqueued, name) for name, q in self.queues.items() if q]
        return min(heads)[1] if heads else None

    async def _schedule(self) -> None:
        while True:
            name = self._oldest()
            if name is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            queue = self.queues[name]
            deadline = queue[0].enqueued + self.max_wait
            while sum(j.tokens for j in queue) < self.max_tokens and time.monotonic() < deadline:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), deadline - time.monotonic())
            jobs = self._take(name, queue)
            if jobs:
                await self._run(jobs)

    def _take(self, name: str, queue: deque[Job]) -> list[Job]:
        """Whole requests from the front of ``queue`` up to the token budget (at least one); cancelled requests
        are dropped unscored."""
        jobs, tokens = [], 0
        while queue and (not jobs or tokens + queue[0].tokens <= self.max_tokens):
            job = queue.popleft()
            self._count(name, -len(job.ids))
            if not job.future.done():
                jobs.append(job)
                tokens += job.tokens
        return jobs

    async def _run(self, jobs: list[Job]) -> None:
        """Score the jobs as one batch on the inference thread and hand each its rows."""
        member = jobs[0].member
        ids = [x for job in jobs for x in job.ids]
        start = time.perf_counter()
        try:
            logits = await asyncio.get_running_loop().run_in_executor(self._executor, member.logits, ids)
        except Exception as exc:  # a model failure fails these requests (500), never the scheduler
            traceback.print_exc(file=sys.stderr)
            error = ApiError(
                500, f"the model failed on this batch ({type(exc).__name__}); see the server log", "Backend"
            )
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        seconds = time.perf_counter() - start
        rate = len(ids) / max(seconds, 1e-6)
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate  # a moving average
        if self.metrics is not None:
            self.metrics.batch(member.name, len(ids), sum(j.tokens for j in jobs), seconds)
        offset = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(logits[offset : offset + len(job.ids)])
            offset += len(job.ids)
