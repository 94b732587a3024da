"""Where a stage's batches are computed: :func:`make_executor` gives the
:class:`~h3pipe.execution.executors.base.Executor` for a number of workers.

A new backend (a queue of remote workers) is one new module here with a
:class:`~h3pipe.execution.executors.base.Transport` and a
:class:`~h3pipe.execution.executors.base.TransportExecutor` subclass; retry, stealing and
stopping come with the shared loop.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from h3pipe.execution.executors.base import (
    Executor,
    Outcome,
    Stopping,
    Transport,
    TransportExecutor,
)
from h3pipe.execution.executors.sequential import SequentialExecutor

if TYPE_CHECKING:
    from h3pipe.execution.executors.local import PoolExecutor


def make_executor(workers: int, warm: Iterable[str] | None = None) -> Executor:
    """In this process for one worker, else on as many worker processes, started now;
    ``warm``: the operations they load before their first batch (default: all)."""
    if workers <= 1:
        return SequentialExecutor()
    from h3pipe.execution.executors import local

    return local.PoolExecutor(workers, warm)


def __getattr__(name: str) -> Any:
    # The pool's module (and multiprocessing with it) is imported only by a run that
    # starts workers.
    if name == "PoolExecutor":
        from h3pipe.execution.executors.local import PoolExecutor

        return PoolExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Executor", "Outcome", "PoolExecutor", "SequentialExecutor", "Stopping",
           "Transport", "TransportExecutor", "make_executor"]
