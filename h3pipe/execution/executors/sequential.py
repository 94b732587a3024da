"""One worker, this process: :class:`SequentialExecutor` and its transport
:class:`InProcess`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

from h3pipe.execution.executors.base import (
    BatchKey,
    Finished,
    Transport,
    TransportExecutor,
    compute,
    key_of,
)
from h3pipe.operations import Batch, warm_up


class InProcess:
    """A transport whose one worker is the calling process. A batch runs when its result
    is polled for, so the loop sees a stop request between batches; within one, only the
    grace timer can end it. The batch runs on a thread of its own while this one waits
    (:func:`beside`), so the signal and the timer are handled when they come.

    The operations of ``batches`` are warmed up first, as a worker does before its first
    batch, so that a task's seconds are its own work (what ``plan`` estimates rates from),
    not the libraries' and the compiled kernel's loading."""

    slots = 1
    depth = 1

    def __init__(self, batches: Sequence[Batch] = ()) -> None:
        self._pending: Batch | None = None
        try:
            warm_up({b.operation for b in batches})
        except Exception:  # noqa: S110 - a failing warm-up shows again, with context, on a batch
            pass

    def submit(self, worker: int, batch: Batch) -> None:
        self._pending = batch

    def take_back(self) -> list[BatchKey]:
        # A submitted batch has not started until it is polled for.
        pending, self._pending = self._pending, None
        return [key_of(pending)] if pending is not None else []

    def poll(self, timeout: float) -> Finished | None:
        batch, self._pending = self._pending, None
        if batch is None:
            time.sleep(timeout)
            return None
        return beside(lambda: compute(0, batch))

    def check(self, running: Mapping[int, Sequence[Batch]]) -> None:
        """This process is alive, or there is no one to ask."""

    def worker_name(self, worker: int) -> str:
        return "main"  # the run's own process, not one of a pool's


def beside(work: Callable[[], Finished]) -> Finished:
    """``work`` on a thread while this one waits for it. Python runs a signal handler in the
    main thread only between bytecodes: a GDAL read or a NumPy allocation of many seconds
    would hold off a SIGTERM and its grace timer until it returned. A thread abandoned by
    a stop dies with the process; its result is never read."""
    done: list[Finished] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # noqa: BLE001 - raised again where the loop sees it
            failed.append(exc)

    thread = threading.Thread(target=run, name="h3pipe-batch", daemon=True)
    thread.start()
    thread.join()  # a signal's handler runs here, and may raise the stop
    if failed:
        raise failed[0]
    return done[0]


class SequentialExecutor(TransportExecutor):
    """Batches run one after another in this process: no worker to start or to end."""

    workers = 1

    def transport(self, batches: Sequence[Batch]) -> Transport:
        return InProcess(batches)
