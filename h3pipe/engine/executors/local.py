"""Runs a stage's batches: :class:`Executor`, in this process for one worker, else on worker
processes started once per run.

Each worker owns a contiguous run of the (spatially ordered) batches, so it reads
neighbouring windows and reuses the raster blocks it has already decoded; a worker that
runs out takes batches from the far end of the longest remaining run. Batches are checked
to pickle before any is sent; after the first failure nothing new is started; a worker
that dies (killed, out of memory) fails the run with its exit code instead of hanging it,
even while the other workers keep delivering. Once a stop is requested (see
:mod:`h3pipe.engine.stopping`) nothing new is started and the batches in flight are
awaited; the stop is raised when none is left.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import pickle
import queue
import random
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from h3pipe.engine.stopping import StopRequest
from h3pipe.errors import H3PipeError, OperationError
from h3pipe.operations import Batch, run_batch, warm_up

# Batches in flight per worker: one running, one queued, so a worker never waits on us.
_DEPTH = 2
_POLL_SECONDS = 0.1


@dataclass
class Outcome:
    batch: Batch
    table: Any | None  # pyarrow.Table
    error: H3PipeError | None
    seconds: float
    attempt: int = 1
    retrying: bool = False  # the error was transient: the batch runs again
    tile_seconds: dict[str, float] | None = None  # time spent reading each raster tile


@dataclass(frozen=True)
class Retry:
    """How many further attempts a transient failure earns, and the first wait (doubled
    each time, with up to 50% jitter so retries of many tasks do not arrive together)."""

    retries: int = 2
    backoff: float = 1.0

    def delay(self, attempt: int) -> float:
        return self.backoff * (2 ** (attempt - 1)) * (1 + 0.5 * random.random())


@dataclass(frozen=True)
class Stopping:
    """Yielded once when a requested stop is first seen: ``running`` batches are finishing."""

    running: int


_NO_RETRY = Retry(0, 0.0)


def _as_error(batch: Batch, exc: BaseException) -> H3PipeError:
    if isinstance(exc, H3PipeError):
        return exc
    return OperationError(f"step '{batch.step_id}' batch {batch.number}: "
                          f"{type(exc).__name__}: {exc}")


def _worker(worker: int, tasks: Any, results: Any, parent: int) -> None:
    """A worker process: warm up, then compute batches until told to stop (None) or until
    its parent is gone (killed outright, it could not say so)."""
    # Ctrl-C, and a SIGTERM sent to the whole process group, reach the workers too; the
    # parent decides (it may let running batches finish) and ends the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        warm_up()
    except Exception:  # noqa: S110 - a failing warm-up shows again, with context, on a batch
        pass
    while True:
        try:
            batch = tasks.get(timeout=_POLL_SECONDS * 2)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if batch is None:
            return
        start = time.perf_counter()
        try:
            payload: Any = run_batch(batch)
            ok = True
        except Exception as exc:
            payload, ok = _as_error(batch, exc), False
        try:
            results.put((worker, batch.number, batch.step_id, ok, payload,
                         time.perf_counter() - start))
        except Exception as exc:  # the result itself would not pickle: report that
            results.put((worker, batch.number, batch.step_id, False,
                         OperationError(f"step '{batch.step_id}' batch {batch.number}: "
                                        f"result cannot be sent back: {exc}"), 0.0))


class Executor:
    """Worker processes for one run. Start it early: workers import and warm up their
    libraries while the run is still being planned."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._procs: list[Any] = []
        if self.workers > 1:
            # spawn, not fork: GDAL and DuckDB keep threads and caches that do not survive
            # fork. A queue per worker lets us choose who gets which batch.
            ctx = multiprocessing.get_context("spawn")
            _quiet_resource_tracker()
            self._results = ctx.Queue()
            self._tasks = [ctx.Queue() for _ in range(self.workers)]
            for w in range(self.workers):
                p = ctx.Process(target=_worker,
                                args=(w, self._tasks[w], self._results, os.getpid()),
                                name=f"h3pipe-worker-{w}", daemon=True)
                p.start()
                self._procs.append(p)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Every result is in by now (or the run is failing): nothing to wait for, and a
        # worker's own teardown (GDAL, LLVM) is not worth a quarter second of the run.
        for p in self._procs:
            p.kill()  # workers ignore SIGTERM
        for p in self._procs:
            p.join()
        if self._procs:
            # Batches still buffered for a worker that is gone must not keep the queue's
            # feeder thread, and so this process, alive at exit (a hang on Ctrl-C).
            for q in [*self._tasks, self._results]:
                q.cancel_join_thread()
                q.close()
        self._procs = []

    def run(self, batches: list[Batch], retry: dict[str, Retry] | None = None,
            stop: StopRequest | None = None) -> Iterator[Outcome | Stopping]:
        """Outcomes as batches finish; ``retry`` says, per step, how transient failures
        are retried (each failed attempt is yielded with ``retrying`` set); once ``stop`` is
        requested, the batches in flight finish and then the stop is raised."""
        retry = retry or {}
        stop = stop or StopRequest()
        if not batches:
            return
        if not self._procs or len(batches) == 1:
            yield from _sequential(batches, retry, stop)
            return
        try:
            pickle.dumps(batches[0])
        except Exception as exc:  # a bug of ours, not the user's: say so plainly
            raise OperationError(f"batch of step '{batches[0].step_id}' cannot be sent to a "
                                 f"worker process: {exc}") from exc
        yield from self._parallel(batches, retry, stop)

    def _parallel(self, batches: list[Batch], retry: dict[str, Retry], stop: StopRequest
                  ) -> Iterator[Outcome | Stopping]:
        queues = _split(batches, len(self._procs))
        in_flight: list[dict[tuple[str, int], Batch]] = [{} for _ in self._procs]
        attempts: dict[tuple[str, int], int] = {}
        later: list[tuple[float, int, Batch]] = []  # (when, tie-breaker, batch) to retry
        failed = False
        checked = time.monotonic()
        withdrawn = False
        while True:
            if stop.requested and not withdrawn:
                withdrawn = True
                self._withdraw(in_flight)
                yield Stopping(sum(len(f) for f in in_flight))
            if stop.requested and not any(in_flight):
                raise stop.exception()
            for w, tasks in enumerate(self._tasks):
                while not failed and not stop.requested and len(in_flight[w]) < _DEPTH:
                    nxt: Batch | None
                    if later and later[0][0] <= time.monotonic():
                        nxt = heapq.heappop(later)[2]
                    else:
                        nxt = _next_for(w, queues)
                    if nxt is None:
                        break
                    batch = nxt
                    in_flight[w][(batch.step_id, batch.number)] = batch
                    tasks.put(batch)
            if not any(in_flight):
                if later and not failed and not stop.requested:
                    time.sleep(max(0.0, later[0][0] - time.monotonic()))
                    continue
                if stop.requested:
                    raise stop.exception()
                return
            if time.monotonic() - checked > _POLL_SECONDS:
                # Checked on a clock, not only when results stop coming: the other workers
                # may keep delivering for minutes while a dead one's batches never return.
                checked = time.monotonic()
                self._fail_if_dead(in_flight)
            try:
                w, number, step_id, ok, payload, seconds = self._results.get(
                    timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            batch = in_flight[w].pop((step_id, number))
            key = (step_id, number)
            attempt = attempts.get(key, 1)
            if ok:
                yield Outcome(batch, payload.table, None, seconds, attempt,
                              tile_seconds=payload.tile_seconds)
                continue
            policy = retry.get(step_id, _NO_RETRY)
            if payload.transient and attempt <= policy.retries and not failed:
                attempts[key] = attempt + 1
                heapq.heappush(later, (time.monotonic() + policy.delay(attempt), number, batch))
                yield Outcome(batch, None, payload, seconds, attempt, retrying=True)
                continue
            failed = True
            yield Outcome(batch, None, payload, seconds, attempt)

    def _withdraw(self, in_flight: list[dict[tuple[str, int], Batch]]) -> None:
        """Take back the batches queued for a worker that has not started them."""
        for w, tasks in enumerate(self._tasks):
            while True:
                try:
                    batch = tasks.get_nowait()
                except queue.Empty:
                    break
                if batch is not None:
                    in_flight[w].pop((batch.step_id, batch.number), None)

    def _fail_if_dead(self, in_flight: list[dict[tuple[str, int], Batch]]) -> None:
        for w, p in enumerate(self._procs):
            if in_flight[w] and not p.is_alive():
                batch = next(iter(in_flight[w].values()))
                raise OperationError(
                    f"worker process {w} died (exit code {p.exitcode}) while computing "
                    f"step '{batch.step_id}' batch {batch.number}",
                    hint="it may have run out of memory; try --workers 1 or a smaller "
                    "--batch-size")


_TRACKER_WARNING = "ignore::UserWarning:multiprocessing.resource_tracker"


def _quiet_resource_tracker() -> None:
    """About one run in ten, Python's resource tracker (the helper process that removes
    the named semaphores of multiprocessing queues) prints a 'leaked semaphore' warning as
    the run exits, for a semaphore of our queues that was in fact already removed; cron
    mails would carry it. The tracker starts with this process's -W options, so it is
    started silent about that, and only that. The semaphores are ours and short-lived:
    the tracker still removes any that are really left."""
    import sys

    if _TRACKER_WARNING not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_WARNING)


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


def _sequential(batches: list[Batch], retry: dict[str, Retry], stop: StopRequest
                ) -> Iterator[Outcome]:
    for batch in batches:
        policy = retry.get(batch.step_id, _NO_RETRY)
        for attempt in range(1, policy.retries + 2):
            stop.check()
            start = time.perf_counter()
            try:
                result = run_batch(batch)
            except Exception as exc:
                error = _as_error(batch, exc)
                if error.transient and attempt <= policy.retries:
                    yield Outcome(batch, None, error, time.perf_counter() - start, attempt,
                                  retrying=True)
                    time.sleep(policy.delay(attempt))
                    continue
                yield Outcome(batch, None, error, time.perf_counter() - start, attempt)
                return
            yield Outcome(batch, result.table, None, time.perf_counter() - start, attempt,
                          tile_seconds=result.tile_seconds)
            break
