"""Operations, registered by the name pipelines use in ``operation:``.

Adding one: write a module with an :class:`~h3pipe.operations.base.Operation` subclass and
list it in ``_REGISTRY``; ``tests/operations/test_registry.py`` fails until it is documented.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from h3pipe import faults
from h3pipe.operations.base import Batch, BatchResult, Operation
from h3pipe.operations.filter import Filter
from h3pipe.operations.h3_assign import H3Assign
from h3pipe.operations.h3_weighted_aggregate import H3WeightedAggregate
from h3pipe.operations.sample import Sample
from h3pipe.operations.spatial_join import SpatialJoin
from h3pipe.operations.sweep import compute
from h3pipe.operations.transform import Transform
from h3pipe.operations.zonal_stats import ZonalStats
from h3pipe.sources import raster

_REGISTRY: dict[str, Operation] = {op.name: op for op in (
    ZonalStats(), Sample(), SpatialJoin(), H3Assign(), H3WeightedAggregate(), Filter(),
    Transform())}


def get_operation(name: str) -> Operation:
    return _REGISTRY[name]


def operation_names() -> list[str]:
    return sorted(_REGISTRY)


# Worker threads scale while the GIL is mostly free: a batch of zonal_stats holds it a
# fifth to a third of its time, so past about four threads they would queue for it; more
# workers than that are processes.
MAX_THREADS = 4


def on_threads(work: Iterable[tuple[str, dict[str, Any], str]], workers: int) -> bool:
    """Whether ``workers`` worker threads of this process suit ``work`` (operation name,
    params, and what it runs over: 'cells' or 'rows'), rather than worker processes: every
    operation releases the GIL enough (:meth:`Operation.on_threads`) and the workers are
    few. ``H3PIPE_THREADS=0`` says no, whatever the work (worker processes as before)."""
    if os.environ.get("H3PIPE_THREADS", "1") == "0" or not 1 < workers <= MAX_THREADS:
        return False
    return all(_REGISTRY[name].on_threads(params, over) for name, params, over in work)


def warm_up(names: Iterable[str] | None = None) -> None:
    """Load what batches of the operations ``names`` (default: all) need (libraries,
    compiled kernels) in a fresh worker process."""
    for name in _REGISTRY if names is None else names:
        _REGISTRY[name].warm_up()


def run_batch(batch: Batch) -> BatchResult:
    """Entry point for worker processes (a top-level function, so it pickles by name): the
    batch's rows, and the seconds spent on each raster tile it read."""
    faults.point("batch")
    faults.point(f"batch.{batch.step_id}")
    seconds = raster.tile_seconds()
    seconds.clear()
    table = compute(_REGISTRY[batch.operation], batch)
    return BatchResult(table, dict(seconds))


__all__ = ["MAX_THREADS", "Batch", "BatchResult", "Operation", "get_operation", "on_threads",
           "operation_names", "run_batch", "warm_up"]
