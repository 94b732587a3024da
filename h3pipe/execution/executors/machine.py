"""Batches on several workers of this machine, threads or processes chosen stage by stage:
:class:`MachineExecutor`.

A stage whose operations release the GIL most of the time (:func:`h3pipe.operations.
on_threads`: zonal statistics over cells) runs on worker threads of this process
(:mod:`~h3pipe.execution.executors.threads`); any other on worker processes
(:mod:`~h3pipe.execution.executors.local`). Each kind starts when a stage first needs it,
so a run of threads alone never starts a process, and closes with the executor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from h3pipe.execution.executors import local
from h3pipe.execution.executors.base import Transport, TransportExecutor
from h3pipe.execution.executors.threads import ThreadExecutor
from h3pipe.operations import Batch, on_threads


def suits_threads(batches: Sequence[Batch], workers: int) -> bool:
    """Whether ``workers`` threads suit every batch (see :func:`h3pipe.operations.on_threads`)."""
    # Batches of one step share its operation and params: asked once per step.
    return on_threads({(b.step_id, _over(b)): (b.operation, b.params, _over(b))
                       for b in batches}.values(), workers)


def _over(batch: Batch) -> str:
    return "rows" if batch.rows is not None or batch.feed is not None else "cells"


class MachineExecutor(TransportExecutor):
    """Batches on ``workers`` threads or processes of this machine (see the module);
    ``warm``: the operations the workers load before their first batch (default: all)."""

    def __init__(self, workers: int, warm: Iterable[str] | None = None) -> None:
        self.workers = max(1, workers)
        self._warm = None if warm is None else tuple(warm)
        self._threads: ThreadExecutor | None = None
        self._processes: local.PoolExecutor | None = None

    def transport(self, batches: Sequence[Batch]) -> Transport:
        if suits_threads(batches, self.workers):
            if self._threads is None:
                self._threads = ThreadExecutor(self.workers, self._warm)
            return self._threads.transport(batches)
        if self._processes is None:
            self._processes = local.PoolExecutor(self.workers, self._warm)
        return self._processes.transport(batches)

    def close(self) -> None:
        for kind in (self._threads, self._processes):
            if kind is not None:
                kind.close()
        self._threads = self._processes = None
