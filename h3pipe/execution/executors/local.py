"""Batches on worker processes of this machine: :class:`PoolExecutor` and its transport
:class:`ProcessPool`.

Workers are spawned once per executor (start it early: they import and warm up their
libraries while the run is still being planned) and killed when it closes. Each has its
own task queue, so the loop (:mod:`h3pipe.execution.executors.base`) chooses who computes
which batch, and keeps two batches in flight per worker. Batches are checked to pickle
before any is sent. A worker that dies (killed, out of memory) fails the run with its exit
code instead of hanging it; a worker whose parent dies (SIGKILL: it could say nothing)
exits within a second, whatever it is doing.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from h3pipe.errors import OperationError
from h3pipe.execution.executors.base import (
    BatchKey,
    Finished,
    PoolOfItsOwn,
    Transport,
    compute,
    drain,
)
from h3pipe.execution.executors.sequential import InProcess
from h3pipe.operations import Batch, warm_up
from h3pipe.sources.raster import fetch_ahead_of

# Batches in flight per worker: one running, two queued, so a worker never waits on us,
# and the remote blocks of the next two are fetched while one computes (see _worker).
_DEPTH = 3
# How often a worker checks that its parent is still there.
_WATCH_SECONDS = 0.5


def _worker(worker: int, tasks: Queue[Batch], results: Queue[bytes], parent: int,
            warm: tuple[str, ...] | None = None, ahead: Queue[Any] | None = None) -> None:
    """A worker process: warm up (the operations ``warm``, default all), then compute
    batches until killed (by the executor's close, or by itself when its parent is gone)."""
    # Ctrl-C, and a SIGTERM sent to the whole process group, reach the workers too; the
    # parent decides (it may let running batches finish) and ends the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Exiting must never wait for results to be read: a parent killed outright reads
    # nothing, and the siblings keep the pipe open, so the queue's feeder would block
    # for ever on a full pipe.
    results.cancel_join_thread()
    threading.Thread(target=_watch_parent, args=(parent,), name="h3pipe-watchdog",
                     daemon=True).start()
    # Each batch is also told here as it is sent: its remote blocks are fetched while the
    # one before it computes.
    threading.Thread(target=fetch_ahead_of, args=(ahead,), daemon=True).start()
    try:
        warm_up(warm)
    except Exception:  # noqa: S110 - a failing warm-up shows again, with context, on a batch
        pass
    while True:
        batch = tasks.get()
        results.put(_pickled(compute(worker, batch)))


def _watch_parent(parent: int) -> None:
    """End this worker once its parent is gone. A thread, because the worker may be deep
    in a batch of many minutes, or blocked sending a result no one will read."""
    while os.getppid() == parent:
        time.sleep(_WATCH_SECONDS)
    os._exit(1)  # no cleanup: nothing it could write would be read


def _pickled(done: Finished) -> bytes:
    # Pickled here, not in the queue's feeder thread, so a result that cannot be sent
    # comes back as an error instead of being lost (and the run waiting for it).
    try:
        return pickle.dumps(done)
    except Exception as exc:
        step_id, number = done.key
        return pickle.dumps(Finished(done.worker, done.key, None, OperationError(
            f"step '{step_id}' batch {number}: result cannot be sent back: {exc}"),
            done.seconds, done.started))


class ProcessPool:
    """The transport: spawned worker processes, one task queue each, one result queue."""

    depth = _DEPTH

    def __init__(self, workers: int, warm: Iterable[str] | None = None) -> None:
        # spawn, not fork: GDAL and DuckDB keep threads and caches that do not survive
        # fork. A queue per worker lets the loop choose who gets which batch.
        ctx = multiprocessing.get_context("spawn")
        _quiet_resource_tracker()
        self._results: Queue[bytes] = ctx.Queue()
        self._tasks: list[Queue[Batch]] = [ctx.Queue() for _ in range(workers)]
        self._ahead: list[Queue[Any]] = [ctx.Queue() for _ in range(workers)]
        self._procs: list[BaseProcess] = []
        for w in range(workers):
            p = ctx.Process(target=_worker, args=(w, self._tasks[w], self._results, os.getpid(),
                                                  None if warm is None else tuple(warm),
                                                  self._ahead[w]),
                            name=f"h3pipe-worker-{w}", daemon=True)
            p.start()
            self._procs.append(p)
        atexit.register(self._kill)  # after multiprocessing's own: so it runs first

    @property
    def slots(self) -> int:
        return len(self._tasks)

    def submit(self, worker: int, batch: Batch) -> None:
        self._ahead[worker].put((batch.raster, batch.block))
        self._tasks[worker].put(batch)

    def take_back(self) -> list[BatchKey]:
        return drain(self._tasks)

    def poll(self, timeout: float) -> Finished | None:
        try:
            done: Finished = pickle.loads(self._results.get(timeout=timeout))
        except queue.Empty:
            return None
        return done

    def check(self, running: Mapping[int, Sequence[Batch]]) -> None:
        for w, p in enumerate(self._procs):
            if running.get(w) and not p.is_alive():
                batch = next(iter(running[w]))
                raise OperationError(
                    f"worker process {w} died (exit code {p.exitcode}) while computing "
                    f"step '{batch.step_id}' batch {batch.number}",
                    hint="it may have run out of memory; try --workers 1 or a smaller "
                    "--batch-size")

    def worker_name(self, worker: int) -> str:
        return f"w{worker + 1}"  # as people count them: w1 .. wN

    def close(self) -> None:
        # A signal that lands half way (a second Ctrl-C, a SIGTERM after a cancel) is
        # held until every worker is gone, then raised as usual.
        with _signals_held():
            self._kill()
        atexit.unregister(self._kill)

    def _kill(self) -> None:
        """Every worker SIGKILLed and reaped. Also run at exit, before multiprocessing's
        own handler, should anything ever skip :meth:`close`: that handler stops daemon
        processes with SIGTERM, which workers ignore, and then waits for them for ever."""
        # Every result is in by now (or the run is failing): nothing to wait for, and a
        # worker's own teardown (GDAL, LLVM) is not worth a quarter second of the run.
        for p in self._procs:
            p.kill()  # workers ignore SIGTERM
        for p in self._procs:
            p.join()
        # Batches still buffered for a worker that is gone must not keep the queue's
        # feeder thread, and so this process, alive at exit (a hang on Ctrl-C).
        everything: list[Queue[Any]] = [*self._tasks, *self._ahead, self._results]
        for q in everything:
            q.cancel_join_thread()
            q.close()
        self._procs = []


class PoolExecutor(PoolOfItsOwn):
    """Batches on ``workers`` processes of this machine, started now; they load the
    operations ``warm`` (default: all) before their first batch."""

    def start(self, workers: int, warm: Iterable[str] | None) -> ProcessPool:
        return ProcessPool(workers, warm)

    def transport(self, batches: Sequence[Batch]) -> Transport:
        pool = self.pool()
        if len(batches) == 1:  # not worth a trip to a worker and back
            return InProcess(batches)
        try:
            pickle.dumps(batches[0])
        except Exception as exc:  # a bug of ours, not the user's: say so plainly
            raise OperationError(f"batch of step '{batches[0].step_id}' cannot be sent to a "
                                 f"worker process: {exc}") from exc
        return pool


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back while inside (in the main thread), delivered after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


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
