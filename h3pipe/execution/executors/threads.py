"""Batches on worker threads of this process: :class:`ThreadExecutor` and its transport
:class:`ThreadPool`.

For work whose operations release the GIL most of the time (see
:func:`h3pipe.operations.on_threads`): threads start in microseconds, where a worker
process takes about a second and 200 MB to import the libraries and load the compiled
kernel again, and they share one copy of those and of GDAL's block cache budget. Each
thread opens its own GDAL datasets (:mod:`h3pipe.sources.raster` keeps them per thread:
a dataset must not be read by two threads at once), and results come back as they are,
not pickled. Everything a batch writes (its output, the catalog) is written by the loop's
thread, as for processes.

A thread cannot be killed: one still computing when the executor closes (a failed run, a
stop past its grace period) is left to finish its batch, whose result is never read, and
then ends; it is a daemon, so it never holds the process open.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from h3pipe.errors import OperationError
from h3pipe.execution.executors.base import (
    BatchKey,
    Finished,
    PoolOfItsOwn,
    Transport,
    as_error,
    compute,
    drain,
    key_of,
)
from h3pipe.operations import Batch, warm_up
from h3pipe.sources.raster import fetch_ahead

# Batches in flight per worker: one running, two queued, so a thread never waits on the
# loop between two (as for processes), and the remote blocks of the next two are fetched
# while one computes (fetch_ahead at submit): with one queued, a res-8 batch's blocks had
# one batch's compute (~70 ms) to come, less than a round trip and its transfer.
_DEPTH = 3
# How long closing waits for the threads that are between batches to end.
_END_SECONDS = 5.0


class ThreadPool:
    """The transport: ``workers`` daemon threads, one task queue each, one result queue.
    Each warms up (the operations ``warm``, default all) before its first batch."""

    depth = _DEPTH

    def __init__(self, workers: int, warm: Iterable[str] | None = None) -> None:
        self._results: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._tasks: list[queue.SimpleQueue[Batch | None]] = [
            queue.SimpleQueue() for _ in range(workers)]
        self._warm = None if warm is None else tuple(warm)
        self._busy = [False] * workers  # whether each thread is inside a batch
        self._threads = [threading.Thread(target=self._work, args=(w,), daemon=True,
                                          name=f"h3pipe-worker-{w + 1}")
                         for w in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self, worker: int) -> None:
        try:
            warm_up(self._warm)
        except Exception:  # noqa: S110 - a failing warm-up shows again, with context, on a batch
            pass
        tasks = self._tasks[worker]
        while (batch := tasks.get()) is not None:
            self._busy[worker] = True
            started, start = time.time(), time.perf_counter()
            try:
                done = compute(worker, batch)
            except BaseException as exc:  # noqa: BLE001 - a thread's end must not lose the batch
                # compute returns errors; what it lets through (SystemExit from a library)
                # would end this thread silently and leave the loop waiting.
                done = Finished(worker, key_of(batch), None, as_error(batch, exc),
                                time.perf_counter() - start, started)
            self._busy[worker] = False
            self._results.put(done)

    @property
    def slots(self) -> int:
        return len(self._tasks)

    def submit(self, worker: int, batch: Batch) -> None:
        fetch_ahead(batch.raster, batch.block)  # its remote blocks, while the one before computes
        self._tasks[worker].put(batch)

    def take_back(self) -> list[BatchKey]:
        return drain(self._tasks)

    def poll(self, timeout: float) -> Finished | None:
        try:
            return self._results.get(timeout=timeout)
        except queue.Empty:
            return None

    def check(self, running: Mapping[int, Sequence[Batch]]) -> None:
        for w, t in enumerate(self._threads):
            if running.get(w) and not t.is_alive():  # a bug of ours: _work returns errors
                batch = next(iter(running[w]))
                raise OperationError(f"worker thread {self.worker_name(w)} ended while "
                                     f"computing step '{batch.step_id}' batch {batch.number}")

    def worker_name(self, worker: int) -> str:
        return f"w{worker + 1}"  # as a pool's processes are named: a lane of the timeline

    def close(self) -> None:
        """Withdraw what is queued, tell every thread to end after its current batch, and
        wait for those between batches to end: a thread's own datasets close as it ends,
        which must not happen while the interpreter exits (a C library's teardown without
        the GIL may abort the process; DuckDB's did, see operations.tabular)."""
        self.take_back()
        for tasks in self._tasks:
            tasks.put(None)
        deadline = time.monotonic() + _END_SECONDS
        for t, busy in zip(self._threads, self._busy, strict=True):
            if not busy:
                t.join(max(0.0, deadline - time.monotonic()))

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for every thread to end; whether they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


class ThreadExecutor(PoolOfItsOwn):
    """Batches on ``workers`` threads of this process, started now; they load the
    operations ``warm`` (default: all) before their first batch."""

    def start(self, workers: int, warm: Iterable[str] | None) -> ThreadPool:
        return ThreadPool(workers, warm)

    def transport(self, batches: Sequence[Batch]) -> Transport:
        return self.pool()
