"""Runs a stage's batches: :class:`Executor`, in this process for one worker, else on worker
processes started once per run.

Each worker owns a contiguous run of the (spatially ordered) batches, so it reads
neighbouring windows and reuses the raster blocks it has already decoded; a worker that
runs out takes batches from the far end of the longest remaining run. Batches are checked
to pickle before any is sent, and after the first failure nothing new is started.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from h3pipe.errors import H3PipeError, OperationError
from h3pipe.operations import Batch, run_batch, warm_up

# Batches in flight per worker: one running, one queued, so a worker never waits on us.
_DEPTH = 2


@dataclass
class Outcome:
    batch: Batch
    table: Any | None  # pyarrow.Table
    error: H3PipeError | None
    seconds: float


def _timed(batch: Batch) -> tuple[Any, float]:
    start = time.perf_counter()
    table = run_batch(batch)
    return table, time.perf_counter() - start


def _as_error(batch: Batch, exc: BaseException) -> H3PipeError:
    if isinstance(exc, H3PipeError):
        return exc
    return OperationError(f"step '{batch.step_id}' batch {batch.number}: "
                          f"{type(exc).__name__}: {exc}")


class Executor:
    """Worker processes for one run. Start it early: workers import and warm up their
    libraries while the run is still being planned."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pools: list[ProcessPoolExecutor] = []
        if self.workers > 1:
            # spawn, not fork: GDAL and DuckDB keep threads and caches that do not survive
            # fork. One single-process pool per worker lets us choose who gets which batch.
            ctx = multiprocessing.get_context("spawn")
            self._pools = [ProcessPoolExecutor(max_workers=1, mp_context=ctx)
                           for _ in range(self.workers)]
            for pool in self._pools:
                pool.submit(warm_up)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools = []

    def run(self, batches: list[Batch]) -> Iterator[Outcome]:
        if not batches:
            return
        if not self._pools or len(batches) == 1:
            yield from _sequential(batches)
            return
        try:
            pickle.dumps(batches[0])
        except Exception as exc:  # a bug of ours, not the user's: say so plainly
            raise OperationError(f"batch of step '{batches[0].step_id}' cannot be sent to a "
                                 f"worker process: {exc}") from exc
        yield from self._parallel(batches)

    def _parallel(self, batches: list[Batch]) -> Iterator[Outcome]:
        queues = _split(batches, len(self._pools))
        running: dict[Future[tuple[Any, float]], tuple[int, Batch]] = {}
        load = [0] * len(self._pools)
        failed = False
        try:
            while True:
                for w, pool in enumerate(self._pools):
                    while not failed and load[w] < _DEPTH:
                        batch = _next_for(w, queues)
                        if batch is None:
                            break
                        running[pool.submit(_timed, batch)] = (w, batch)
                        load[w] += 1
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    w, batch = running.pop(fut)
                    load[w] -= 1
                    exc = fut.exception()
                    if exc is not None:
                        failed = True
                        yield Outcome(batch, None, _as_error(batch, exc), 0.0)
                    else:
                        table, seconds = fut.result()
                        yield Outcome(batch, table, None, seconds)
        except BaseException:
            for fut in running:
                fut.cancel()
            raise


def _split(batches: list[Batch], n: int) -> list[deque[Batch]]:
    """``n`` contiguous runs of batches with about the same number of cells each."""
    total = sum(len(b.cells) for b in batches)
    queues: list[deque[Batch]] = [deque() for _ in range(n)]
    seen = 0
    for b in batches:
        queues[min(n - 1, seen * n // max(total, 1))].append(b)
        seen += len(b.cells)
    return queues


def _next_for(worker: int, queues: list[deque[Batch]]) -> Batch | None:
    if queues[worker]:
        return queues[worker].popleft()
    # Steal from the end of the longest run: the batches farthest from its owner's
    # current position, so both keep reading neighbouring windows.
    victim = max(queues, key=len)
    return victim.pop() if victim else None


def _sequential(batches: list[Batch]) -> Iterator[Outcome]:
    for batch in batches:
        start = time.perf_counter()
        try:
            table = run_batch(batch)
        except Exception as exc:
            yield Outcome(batch, None, _as_error(batch, exc), time.perf_counter() - start)
            return
        yield Outcome(batch, table, None, time.perf_counter() - start)
