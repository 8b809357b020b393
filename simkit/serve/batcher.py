"""Dynamic batching: concurrent requests' texts go through the model in one forward pass.

Every model call of the service runs on one thread (a :class:`OneThread`), so the event loop
never waits on torch and two requests never race for the CPU inside the model. A
:class:`MicroBatcher` (one per loaded encoder) gathers the texts of the requests that arrive
within a short window, up to ``max_batch`` texts, encodes them in one call on that thread and
hands each request its result back through a future. While the model is busy, new requests
queue up and form the next batch, so the batch grows with the load. A batch starts once as
many texts wait as the previous batch held (the clients just answered tend to send again),
or when it is full, or after the window: a lone client waits at most the window (not at all
when its requests keep their size), and under load the batches stay full instead of
starting with the few requests that came back first.

What follows the encode is batched too: a request names a *step* (its pipeline's transform
chain, then perhaps an index search), and the requests of one batch whose steps share a
``key`` are finished by one call (one FAISS search over all their rows, not one each).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("simkit.serve")


class OneThread:
    """A single worker thread. The service runs every model call and every index search on
    one (``simkit-model``): the CPU work happens in one place, and an index's FAISS object
    and SQLite store are only ever used from that thread.

    The model is loaded and warmed up on this thread too (:meth:`call`): OpenMP keeps one
    team of worker threads per thread that has run a parallel region, and a second team
    (say the main thread's, from a warm-up there) contends with this one for the cores,
    which makes a one-sentence forward pass several times slower.
    """

    def __init__(self, name: str = "simkit-model"):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._ident: int | None = self.executor.submit(threading.get_ident).result()

    async def run(self, fn: Callable, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def call(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the thread, from synchronous code (blocking)."""
        if threading.get_ident() == self._ident:
            return fn(*args, **kwargs)
        return self.executor.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Step(Protocol):
    """What a request does with its rows after the shared encode, for many requests at once:
    ``step(blocks)`` takes one block of rows (model space) per request and returns one result
    per request. Requests whose steps have equal ``key`` are finished by one call."""

    key: Hashable

    def __call__(self, blocks: list[np.ndarray]) -> list: ...


@dataclass
class _Job:
    texts: list[str]
    step: Step | None  # None: the rows in the model's space
    future: asyncio.Future
    arrived: float = field(default=0.0)


# Padded tokens per forward pass inside one batch: small enough that a long query pads few
# others, large enough that short questions still run dozens to a pass.
MAX_TOKENS_PER_BATCH = 512


class MicroBatcher:
    """Gather texts of concurrent requests into one ``encoder.encode`` call on the model thread.

    ``max_batch`` bounds the texts of one call (a single larger request runs alone, unsplit);
    ``window_ms`` is the longest a batch waits for company: counted from its first request's
    arrival, or from the end of the previous batch if that request queued while the model was
    busy. Inside the call the texts are sorted by length and cut into forward passes of at
    most ``max_tokens_per_batch`` padded tokens (0: ``batch_size`` texts each): the queries of
    unrelated requests differ in length, and one long query would otherwise pad all the rest.
    Each request's :class:`Step` maps its rows from the model's space onward (its pipeline's
    transform chain, a search), so indexes that share a model but not a transform chain share
    batches.
    """

    def __init__(self, encoder, model_thread: OneThread, max_batch: int = 64,
                 window_ms: float = 2.0, batch_size: int = 64,
                 max_tokens_per_batch: int = MAX_TOKENS_PER_BATCH):
        self.encoder = encoder
        self.model_thread = model_thread
        self.max_batch = max(1, int(max_batch))
        self.window = max(0.0, float(window_ms)) / 1000.0
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self._pending: collections.deque[_Job] = collections.deque()
        self._n_pending = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._done = 0.0  # when the last batch ended (loop time) and how many texts it held
        self._last_n = 0
        self.batches = 0  # counters for /health and the tests
        self.texts = 0
        self.max_seen = 0

    async def submit(self, texts: list[str], step: Step | None = None) -> Any:
        """``step``'s result for these texts (or their rows in the model's space), encoded
        together with whoever else is waiting."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._loop(), name="simkit-batcher")
        job = _Job(list(texts), step, loop.create_future(), loop.time())
        self._pending.append(job)
        self._n_pending += len(job.texts)
        self._wake.set()
        return await job.future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        self._n_pending, self._done, self._last_n = 0, 0.0, 0  # a new loop has its own clock

    def _take(self) -> list[_Job]:
        jobs, n = [], 0
        while self._pending:
            job = self._pending[0]
            if jobs and n + len(job.texts) > self.max_batch:
                break
            self._pending.popleft()
            self._n_pending -= len(job.texts)
            if not job.future.done():  # a request that timed out meanwhile is dropped
                jobs.append(job)
                n += len(job.texts)
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Wait for company: until the batch is full, or as many texts wait as the last batch
            # held (its clients, just answered, are likely to send again), or the window is
            # over, counted from the first job's arrival or, if it queued while the model was
            # busy, from the end of that batch.
            first = self._pending[0].arrived
            idle = first - self._done > self.window  # nobody came back from the last batch
            target = 1 if idle else min(self.max_batch, max(1, self._last_n))
            deadline = max(first, self._done) + self.window
            while self._n_pending < target:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            jobs = self._take()
            if not jobs:
                continue
            try:
                results = await self.model_thread.run(self._run, jobs)
            except Exception as e:  # the executor itself failed (shutdown)
                results = [e] * len(jobs)
            self._done, self._last_n = loop.time(), sum(len(job.texts) for job in jobs)
            for job, res in zip(jobs, results):
                if job.future.done():
                    continue
                if isinstance(res, BaseException):
                    job.future.set_exception(res)
                else:
                    job.future.set_result(res)

    # -- on the model thread ------------------------------------------------------------
    def _run(self, jobs: list[_Job]) -> list:
        texts = [t for job in jobs for t in job.texts]
        self.batches += 1
        self.texts += len(texts)
        self.max_seen = max(self.max_seen, len(texts))
        try:
            X = self.encoder.encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                    max_tokens_per_batch=self.max_tokens_per_batch)
        except Exception as e:
            if len(jobs) == 1:
                return [e]
            log.info("a batch of %d requests failed (%s); encoding them one by one", len(jobs), e)
            return [self._run([job])[0] for job in jobs]  # one bad request fails alone
        blocks, start = [], 0
        for job in jobs:
            blocks.append(X[start:start + len(job.texts)])
            start += len(job.texts)
        out: list = list(blocks)
        groups: dict[Hashable, list[int]] = {}
        for i, job in enumerate(jobs):
            if job.step is not None:
                groups.setdefault(job.step.key, []).append(i)
        for members in groups.values():
            step = jobs[members[0]].step
            try:
                for i, res in zip(members, step([blocks[i] for i in members]), strict=True):
                    out[i] = res
            except Exception as e:
                for i in members:  # one bad request fails alone
                    out[i] = e if len(members) == 1 else _one(jobs[i].step, blocks[i])
        return out


def _one(step: Step, block: np.ndarray):
    try:
        return step([block])[0]
    except Exception as e:
        return e
