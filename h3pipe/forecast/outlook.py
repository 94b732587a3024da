"""What a prepared run would do, as people read it before it starts: :class:`Outlook`.

``h3pipe plan`` shows it, and ``h3pipe run`` prints the same heading before its first
stage: whether the run is new, done or resumable, its cells, and each stage's steps, tasks
and rows. Rows of a stage fed by an earlier step are estimates, and say how they were
estimated; rows read from the cells or a vector source are counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from h3pipe.operations import get_operation
from h3pipe.planning.batching import Batcher
from h3pipe.planning.prepare import RunPlan
from h3pipe.storage.base import Store, kept_tasks
from h3pipe.storage.holders import describe, holder_alive
from h3pipe.storage.runlog import RunLog

# How a run would start, given what the store holds for its id.
NEW, DONE, RESUMABLE, FORCED, RUNNING = "new", "done", "resumable", "forced", "running"


@dataclass(frozen=True)
class StageView:
    number: int
    steps: tuple[str, ...]
    tasks: int
    rows: int
    unit: str  # cells | rows
    estimate: str | None = None  # how ``rows`` was estimated; None when counted


@dataclass(frozen=True)
class Outlook:
    run_id: str
    status: str  # new | done | resumable | forced | running
    detail: str  # the status in words
    kept_tasks: int
    cells: int
    stages: tuple[StageView, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def outlook(plan: RunPlan, planner: Batcher, store: Store | None,
            row: dict[str, Any] | None) -> Outlook:
    """The run's status from its row in the store (``row``: None when it has none), and its
    stages from the plan (feature stages counted through ``planner``, which keeps what it
    read for the run)."""
    status, kept = _status(plan, store, row)
    detail = {
        NEW: "new run",
        DONE: "completed before: it would be reported, nothing recomputed (--force to "
              "recompute)",
        RESUMABLE: f"resumes, keeping {kept} completed task(s)",
        FORCED: "completed before: --force recomputes everything",
        RUNNING: f"running now, {describe(row)}" if row else "running now",
    }[status]
    return Outlook(plan.run_id, status, detail, kept, plan.cell_count,
                   _stages(plan, planner))


def _status(plan: RunPlan, store: Store | None, row: dict[str, Any] | None
            ) -> tuple[str, int]:
    opts = plan.options
    if row is None or store is None:
        return NEW, 0
    if row["status"] == "running" and holder_alive(row):
        return RUNNING, 0
    if row["status"] == "completed" and opts.from_step is None:
        return (FORCED, 0) if opts.force else (DONE, 0)
    if opts.force:
        return FORCED, 0
    redo = set(plan.redo_steps())
    kept = [k for k in kept_tasks(store, RunLog(store.catalog).completed_tasks(plan.run_id))
            if k[0] not in redo]
    return RESUMABLE, len(kept)


def _stages(plan: RunPlan, planner: Batcher) -> tuple[StageView, ...]:
    rows_out: dict[str, tuple[int, str | None]] = {}  # step -> rows it produces, how estimated
    tasks_of: dict[str, int] = {}
    views = []
    for number, stage in enumerate(plan.stages, 1):
        tasks = rows = 0
        unit, how = "cells", None
        for sid in stage:
            step = plan.pipeline.step(sid)
            n_in, how_in = _rows_in(plan, planner, step.input, rows_out)
            if step.input == "cells":
                # The finest resolution's cells make the batches (coarser ones ride along).
                tasks_of[sid] = math.ceil(len(plan.cells) / plan.batch_size)
            else:
                unit = "rows"
                # A source's partitions make the batches, and each later step has one
                # batch per task of the step it reads.
                tasks_of[sid] = tasks_of.get(step.input_step or "", 0) if step.input_step \
                    else len(planner.partitions(step.input))
            tasks += tasks_of[sid]
            rows += n_in
            how = how or how_in
            n_out, how_out = get_operation(step.operation).estimate_rows(n_in, plan.cell_count)
            rows_out[sid] = (n_out, None if step.input == "cells" else how_out)
        views.append(StageView(number, stage, tasks, rows, unit, how))
    return tuple(views)


def _rows_in(plan: RunPlan, planner: Batcher, source: str,
             rows_out: dict[str, tuple[int, str | None]]) -> tuple[int, str | None]:
    """Rows a step takes, and how they were estimated (None: counted)."""
    if source == "cells":
        return plan.cell_count, None
    if source.startswith("$"):
        n, how = rows_out[source[1:]]
        return n, f"step '{source[1:]}' gives {how or 'one row per cell'}"
    parts = planner.partitions(source)
    return parts.features, None if parts.counted else \
        "from the features' boxes, binned"


__all__ = ["Outlook", "StageView", "outlook"]
