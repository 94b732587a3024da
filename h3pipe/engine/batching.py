"""Cut a step's input into batches: :class:`Planner`.

A step over ``cells`` gets the run's cells (spatially ordered) in batches of at most
``batch_size``. A step over a vector source gets that source's features in the run's
scope; a step over ``$step`` gets the rows that step actually produced. Rows are batched
from what is really there at the start of the stage, never from the first stage's
batches; an operation that groups (``h3_weighted_aggregate``) gets every row of a group in
one batch. The same inputs always give the same batches, so a resumed run keeps its
completed tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from h3pipe import grid
from h3pipe.engine.scope import ScopeCells
from h3pipe.errors import OperationError
from h3pipe.operations import Batch, get_operation
from h3pipe.operations.features import assign_cells, centroids, point_cells
from h3pipe.sources.dimensions import Scenario
from h3pipe.sources.raster import RasterInfo
from h3pipe.sources.vector import GEOMETRY, VectorInfo, read_features
from h3pipe.spec import StepSpec

if TYPE_CHECKING:
    from h3pipe.engine.prepare import RunPlan

# Cells of this resolution order features spatially (neighbours share a batch).
_ORDER_RESOLUTION = 9


@dataclass
class Planner:
    run_id: str
    cells: ScopeCells
    resolution: int
    size: int
    rasters: dict[str, RasterInfo]
    vectors: dict[str, VectorInfo]
    store: Any
    # Rows per batch for a step given its number of rows (cells use ``size``).
    row_batch: Callable[[int], int] = lambda n: 500
    # A sweep's scenarios with their grids, per dimensioned source, and its key columns.
    scenarios: dict[str, tuple[tuple[Scenario, RasterInfo], ...]] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    # Steps whose rows are kept wide over the scenarios of a source: step id -> source id.
    wide: dict[str, str] = field(default_factory=dict)
    # step id -> task number -> reference of its output, filled as tasks complete
    outputs: dict[str, dict[int, str]] = field(default_factory=dict)
    _features: dict[str, pa.Table] = field(default_factory=dict)

    @classmethod
    def of(cls, plan: RunPlan, store: Any) -> Planner:
        """The planner of a prepared run (``store``: where earlier steps' rows are read;
        None when nothing will run)."""
        sweep = plan.sweep
        return cls(plan.run_id, plan.cells, plan.resolution, plan.batch_size,
                   dict(plan.rasters), dict(plan.vectors), store, row_batch=plan.row_batch,
                   scenarios={sid: plan.computed_scenarios(sid) for sid in sweep.rasters}
                   if sweep else {},
                   keys=sweep.keys if sweep else (), wide=plan.wide_steps())

    def batches(self, step: StepSpec) -> list[Batch]:
        if step.input == "cells":
            return self._cell_batches(step)
        rows = self._rows(step)
        if rows.num_rows == 0:  # nothing in the scope (no buildings there): no task
            return []
        op = get_operation(step.operation)
        size = self.row_batch(rows.num_rows)
        if op.group_by == "h3_index":
            rows, keys = self._cells_of(step, rows)
            bounds = _group_bounds(keys, size)
        else:
            bounds = [(s, min(s + size, rows.num_rows)) for s in range(0, rows.num_rows, size)]
        out = []
        for number, (start, stop) in enumerate(bounds, 1):
            # A copy, not a slice: a pickled slice would carry the whole table's buffers.
            chunk = rows.take(pa.array(np.arange(start, stop)))
            box = _reach(step, chunk)  # what the batch can read, for raster and scenarios
            out.append(Batch(run_id=self.run_id, step_id=step.id, number=number,
                             operation=step.operation, params=step.params,
                             resolution=self.resolution, source_id=step.source,
                             raster=self._cut(step, box), rows=chunk,
                             vector=self.vectors.get(step.source or ""),
                             scenarios=self._cut_scenarios(step, box),
                             keys=tuple(k for k in self.keys if k in chunk.column_names),
                             wide=step.id in self.wide, melt=self._melt(step)))
        return out

    def _cell_batches(self, step: StepSpec) -> list[Batch]:
        out = []
        for number, block in enumerate(self.cells.blocks(self.size), 1):
            # Ship only the tiles this batch touches: a glob may list thousands.
            out.append(Batch(run_id=self.run_id, step_id=step.id, number=number,
                             operation=step.operation, params=step.params, block=block,
                             resolution=self.resolution, source_id=step.source,
                             raster=self._cut(step, block.bounds),
                             scenarios=self._cut_scenarios(step, block.bounds)))
        return out

    def _rows(self, step: StepSpec) -> pa.Table:
        upstream = step.input_step
        if upstream is not None:
            done = self.outputs.get(upstream, {})
            return self.store.read_outputs([done[n] for n in sorted(done)])
        return self.features(step.input)

    def features(self, source_id: str) -> pa.Table:
        """The source's features whose centroid lies in one of the run's cells, in spatial
        order: the scope's features, each in exactly one run (as cells are)."""
        if source_id not in self._features:
            table = read_features(self.vectors[source_id], self.cells.bounds)
            if table.num_rows:
                xs, ys = centroids(table)
                keep = self._in_scope(point_cells(xs, ys, self.resolution))
                order_key = point_cells(xs[keep], ys[keep], _ORDER_RESOLUTION).to_pylist()
                table = table.filter(pa.array(keep)).take(pa.array(
                    np.argsort(np.array(order_key, dtype=object), kind="stable")))
            self._features[source_id] = table
        return self._features[source_id]

    def _in_scope(self, cells: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Whether each cell (hex strings, null for none) is one of the run's."""
        valid = np.asarray(cells.is_valid())
        keep = np.zeros(len(cells), dtype=bool)
        keep[valid] = self.cells.contains(grid.ids(cells.filter(pa.array(valid))))
        return keep

    def _cells_of(self, step: StepSpec, rows: pa.Table) -> tuple[pa.Table, list[str]]:
        """Rows with an h3_index (from their centroid when they have none), sorted by it,
        and the sorted keys ('' for none); when the step publishes, only the run's cells."""
        if "h3_index" not in rows.column_names:
            if GEOMETRY not in rows.column_names:
                raise OperationError(f"step '{step.id}': its rows have neither h3_index nor "
                                     "a geometry")
            rows = rows.append_column("h3_index", assign_cells(rows, self.resolution))
        if step.output == "h3_stats":
            cells = rows.column("h3_index").to_pylist()
            other = next((c for c in cells if c is not None and
                          int(c[1], 16) != self.resolution), None)
            if other is not None:
                import h3

                raise OperationError(
                    f"step '{step.id}' publishes cells of resolution "
                    f"{h3.get_resolution(other)}, but the run is at resolution "
                    f"{self.resolution}", hint="run at that resolution, or drop the "
                    "h3_assign resolution so it follows the run")
            rows = rows.filter(pa.array(self._in_scope(rows.column("h3_index"))))
        keys = np.array(rows.column("h3_index").to_pylist(), dtype=object)
        keys[keys == None] = ""  # noqa: E711 - elementwise on an object array
        order = np.argsort(keys, kind="stable")
        return rows.take(pa.array(order)), keys[order].tolist()

    def _melt(self, step: StepSpec) -> tuple[Scenario, ...]:
        """The scenarios the step's input rows are wide over (none: they are not)."""
        source = self.wide.get(step.input_step or "")
        return tuple(sc for sc, _ in self.scenarios[source]) if source else ()

    def _cut_scenarios(self, step: StepSpec, box: tuple[float, float, float, float] | None
                       ) -> tuple[tuple[Scenario, RasterInfo], ...]:
        """Each scenario of the step's dimensioned source, its grid cut to ``box``."""
        return tuple((sc, _subset(info, box))
                     for sc, info in self.scenarios.get(step.source or "", ()))

    def _cut(self, step: StepSpec, box: tuple[float, float, float, float] | None
             ) -> RasterInfo | None:
        """The step's raster cut to ``box`` (None: the step reads no raster)."""
        raster = self.rasters.get(step.source or "")
        return None if raster is None else _subset(raster, box)


def _subset(raster: RasterInfo, box: tuple[float, float, float, float] | None) -> RasterInfo:
    """``raster`` with only the tiles ``box`` (lon/lat) touches; all of them without one."""
    return raster.subset(box) if box is not None and raster.crs_is_wgs84 else raster


def _reach(step: StepSpec, rows: pa.Table) -> tuple[float, float, float, float] | None:
    """The box the rows' geometries (buffered, for a join) can read; None if unknown."""
    if GEOMETRY not in rows.column_names or rows.num_rows == 0:
        return None
    import shapely

    from h3pipe.sources.vector import geometries

    x0, y0, x1, y1 = shapely.total_bounds(geometries(rows))
    if not all(map(math.isfinite, (x0, y0, x1, y1))):
        return None
    margin = 0.0
    if "radius_m" in step.params:  # a buffer reaches beyond the features
        lat = max(abs(y0), abs(y1))
        margin = 1.1 * step.params["radius_m"] / (111_320 * max(0.01,
                                                                math.cos(math.radians(lat))))
    return (x0 - margin, y0 - margin, x1 + margin, y1 + margin)


def _group_bounds(keys: list[str], size: int) -> list[tuple[int, int]]:
    """Slices of at most about ``size`` rows of sorted ``keys`` that never split a key."""
    out: list[tuple[int, int]] = []
    start = 0
    n = len(keys)
    while start < n:
        stop = min(start + size, n)
        while stop < n and keys[stop] == keys[stop - 1]:
            stop += 1
        out.append((start, stop))
        start = stop
    return out


__all__ = ["Planner"]
