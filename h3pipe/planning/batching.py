"""Cut a step's input into batches: :class:`Batcher`.

A step over ``cells`` gets the run's cells (spatially ordered) in batches of at most
``batch_size``. A step over a vector source gets that source's features in the run's
scope, by partitions (:mod:`h3pipe.planning.partitions`): each batch names its partitions
and the worker reads their features (:mod:`h3pipe.planning.feeds`). A step over ``$step``
gets one batch per task of that step that produced rows, naming its output. The planner
holds no rows: planning a stage reads the features' boxes once (for the first stage of a
source) and the upstream tasks' row counts. Every row of a cell is in one partition, so
an operation that groups by cell (``h3_weighted_aggregate``) finds them in one batch.
The same inputs always give the same batches, so a resumed run keeps its completed tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from h3pipe.operations import Batch, get_operation
from h3pipe.operations.features import grown
from h3pipe.operations.windows import small_work
from h3pipe.planning.feeds import FeatureFeed, Grouping, OutputFeed
from h3pipe.planning.partitions import Partitions, partition
from h3pipe.planning.scope import ScopeCells, shared_blocks
from h3pipe.sources.dimensions import Scenario
from h3pipe.sources.raster import RasterInfo
from h3pipe.sources.vector import GEOMETRY, VectorInfo
from h3pipe.spec import PipelineSpec, StepSpec

if TYPE_CHECKING:
    from h3pipe.planning.prepare import RunPlan

Bounds = tuple[float, float, float, float]


@dataclass
class Batcher:
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
    # step id -> task number -> rows of its output, likewise
    sizes: dict[str, dict[int, int]] = field(default_factory=dict)
    # The pipeline (for which step feeds which) and where its store is, for the workers.
    pipeline: PipelineSpec | None = None
    store_location: str = ""
    root: str = ""
    _partitions: dict[str, Partitions] = field(default_factory=dict)
    # A run of several resolutions: the coarser ones' cells, batched with ``cells``.
    coarser: tuple[ScopeCells, ...] = ()

    @classmethod
    def of(cls, plan: RunPlan, store: Any, root: Any = "") -> Batcher:
        """The planner of a prepared run (``store``: where earlier steps' rows are;
        None when nothing will run; ``root``: the project folder)."""
        sweep = plan.sweep
        return cls(plan.run_id, plan.cells, plan.resolution, plan.batch_size,
                   dict(plan.rasters), dict(plan.vectors), store, row_batch=plan.row_batch,
                   scenarios={sid: plan.computed_scenarios(sid) for sid in sweep.rasters}
                   if sweep else {},
                   keys=sweep.keys if sweep else (), wide=plan.wide_steps(),
                   pipeline=plan.pipeline, store_location=plan.store_location,
                   root=str(root), coarser=tuple(plan.coarser[r] for r in sorted(plan.coarser)))

    def batches(self, step: StepSpec) -> list[Batch]:
        if step.input == "cells":
            return self._cell_batches(step)
        feeds = self._output_feeds(step) if step.input_step else self._feature_feeds(step)
        grouping = Grouping(step.id, self.resolution, step.output == "h3_stats") \
            if get_operation(step.operation).group_by == "h3_index" else None
        out = []
        for number, feed, box in feeds:
            out.append(Batch(run_id=self.run_id, step_id=step.id, number=number,
                             operation=step.operation, params=step.params,
                             resolution=self.resolution, source_id=step.source,
                             raster=self._cut(step, box), feed=feed, grouping=grouping,
                             vector=self.vectors.get(step.source or ""),
                             scenarios=self._cut_scenarios(step, box), keys=self.keys,
                             wide=step.id in self.wide, melt=self._melt(step),
                             drop=() if self._outlines_read(step.id) else (GEOMETRY,)))
        return out

    def _outlines_read(self, step_id: str) -> bool:
        """Whether the outlines of ``step_id``'s rows are kept: a later step reads them
        (itself, or through row-wise steps that pass them on), or its output is kept
        after the run (a cleanup policy of manual or ttl: kept whole, to be looked at)."""
        if self.pipeline is None:
            return True
        if self.pipeline.step(step_id).cleanup.get("policy") in ("manual", "ttl"):
            return True
        for later in self.pipeline.steps:
            if later.input_step != step_id:
                continue
            op = get_operation(later.operation)
            if op.reads_geometry or any(GEOMETRY in text for _, text in
                                        op.expressions(later.params)):
                return True
            if op.produces is None and self._outlines_read(later.id):
                return True
        return False

    def _cell_batches(self, step: StepSpec) -> list[Batch]:
        out = []
        # Several resolutions: each batch also holds the coarser cells anchored in it, so
        # its windows are read once for all of them.
        blocks = shared_blocks(self.cells, list(self.coarser), self.size) if self.coarser \
            else self.cells.blocks(self.size)
        small = self._small(step)
        for number, block in enumerate(blocks, 1):
            # Ship only the tiles this batch touches: a glob may list thousands.
            bounds = block.bounds
            out.append(Batch(run_id=self.run_id, step_id=step.id, number=number,
                             operation=step.operation, params=step.params, block=block,
                             resolution=self.resolution, source_id=step.source,
                             raster=self._cut(step, bounds),
                             scenarios=self._cut_scenarios(step, bounds), small=small))
        return out

    def _small(self, step: StepSpec) -> bool:
        """Whether the step's work over the whole run (every resolution's cells, the
        raster's pixels over the scope) is small enough for exactextract alone: one choice
        for every batch, so no cell's numbers depend on where or when it was computed."""
        info = self.rasters.get(step.source or "")
        if info is None or not info.crs_is_wgs84:
            return False
        # The scope's own box: the cells' bounds are their coarse parents', far larger.
        x0, y0, x1, y1 = self.cells.geometry.bounds
        pixels = (x1 - x0) * (y1 - y0) / (info.xres * info.yres) * len(info.indexes)
        zones = len(self.cells) + sum(len(c) for c in self.coarser)
        return small_work(zones, int(pixels))

    def partitions(self, source_id: str) -> Partitions:
        """The source's partitions over the scope (its boxes read once per planner)."""
        if source_id not in self._partitions:
            self._partitions[source_id] = partition(
                self.vectors[source_id], self.cells, self.row_batch, self._finest())
        return self._partitions[source_id]

    def _finest(self) -> int:
        """Partitions are no finer than any cell a step groups by: the run's, or a
        coarser one an h3_assign names."""
        named = [s.params["resolution"] for s in (self.pipeline.steps if self.pipeline
                                                  else ()) if s.operation == "h3_assign"
                 and "resolution" in s.params]
        return min([self.resolution, *named])

    def _feature_feeds(self, step: StepSpec) -> list[tuple[int, Any, Bounds | None]]:
        import shapely

        parts = self.partitions(step.input)
        out: list[tuple[int, Any, Bounds | None]] = []
        for k in range(len(parts)):
            box = parts.box(k)
            pad = 0.01  # clipped well beyond the centres tested, so no new edge is near one
            scope = shapely.clip_by_rect(self.cells.geometry, box[0] - pad, box[1] - pad,
                                         box[2] + pad, box[3] + pad)
            feed = FeatureFeed(self.vectors[step.input], self.resolution, parts.batch(k), box,
                               scope, int(parts.estimates[k]), parts.batch_boxes(k))
            out.append((k + 1, feed, self._grown(step, parts.reach(k))))
        return out

    def _output_feeds(self, step: StepSpec) -> list[tuple[int, Any, Bounds | None]]:
        upstream = step.input_step
        assert upstream is not None
        done, sizes = self.outputs.get(upstream, {}), self.sizes.get(upstream, {})
        box = self._boxes(upstream)
        return [(n, OutputFeed(self.store_location, self.root, done[n], sizes.get(n, 0)),
                 self._grown(step, box(n))) for n in sorted(done) if sizes.get(n, 1) > 0]

    def _boxes(self, step_id: str) -> Callable[[int], Bounds | None]:
        """What the rows of each task of ``step_id`` can cover: its root partition's reach
        (a chain of feature steps keeps its first step's batches), else unknown."""
        current = self.pipeline.step(step_id) if self.pipeline else None
        while current is not None and current.input_step is not None:
            current = self.pipeline.step(current.input_step) if self.pipeline else None
        if current is None or current.input not in self.vectors:
            return lambda n: None
        parts = self.partitions(current.input)
        return lambda n: parts.reach(n - 1) if 0 < n <= len(parts) else None

    def _grown(self, step: StepSpec, box: Bounds | None) -> Bounds | None:
        """``box`` grown by the step's radius (a join's buffer reaches beyond a feature)."""
        if box is None or "radius_m" not in step.params:
            return box
        return grown(box, 1.1 * step.params["radius_m"])

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


__all__ = ["Batcher"]
