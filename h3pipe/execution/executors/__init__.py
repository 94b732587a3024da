"""Where a stage's batches are computed: :func:`make_executor` gives the
:class:`~h3pipe.execution.executors.base.Executor` for a number of workers: this process
for one, else worker threads or worker processes, chosen stage by stage
(:class:`~h3pipe.execution.executors.machine.MachineExecutor`).

A new backend (a queue of remote workers) is one new module here with a
:class:`~h3pipe.execution.executors.base.Transport` and a
:class:`~h3pipe.execution.executors.base.TransportExecutor` subclass; retry, stealing and
stopping come with the shared loop.
"""

from collections.abc import Iterable

from h3pipe.execution.executors.base import (
    Executor,
    Outcome,
    Stopping,
    Transport,
    TransportExecutor,
)
from h3pipe.execution.executors.local import PoolExecutor
from h3pipe.execution.executors.machine import MachineExecutor
from h3pipe.execution.executors.sequential import SequentialExecutor
from h3pipe.execution.executors.threads import ThreadExecutor


def make_executor(workers: int, warm: Iterable[str] | None = None) -> Executor:
    """In this process for one worker, else on as many worker threads or processes, each
    kind started when a stage first needs it; ``warm``: the operations they load before
    their first batch (default: all)."""
    if workers <= 1:
        return SequentialExecutor()
    return MachineExecutor(workers, warm)


__all__ = ["Executor", "MachineExecutor", "Outcome", "PoolExecutor", "SequentialExecutor",
           "Stopping", "ThreadExecutor", "Transport", "TransportExecutor", "make_executor"]
