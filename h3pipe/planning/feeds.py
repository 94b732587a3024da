"""What a batch of rows reads where it is computed: a partition of a vector source
(:class:`FeatureFeed`) or an earlier step's task output (:class:`OutputFeed`).

The process that plans a stage never holds its rows: a batch names where they are, and
the worker that computes it reads them (:func:`fed`). A partition's features are those
whose centroid's cell (at the run's resolution) is in the scope and in one of the
partition's cells; they come spatially ordered, with their centroid (``CENTROID``)
computed once. A later stage reads one upstream task's output per batch, so its batches
follow the partitions too, and an aggregation by cell finds every row of a cell in one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe import grid
from h3pipe.errors import OperationError
from h3pipe.operations import Batch, BatchResult
from h3pipe.operations.features import assign_cells
from h3pipe.planning import partitions
from h3pipe.planning.scope import centres_in
from h3pipe.sources import geoparquet
from h3pipe.sources.vector import (
    CENTROID,
    CENTROID_CELL,
    GEOMETRY,
    VectorInfo,
    centroid_xy,
    geometries,
    iter_features,
)
from h3pipe.storage import output_reader

Bounds = tuple[float, float, float, float]
# Bins a side of the grid that tells a batch's partitions' boxes apart (64 k bits).
_BINS = 256


@dataclass(frozen=True)
class FeatureFeed:
    """The features of one batch of partitions (``cells``, H3 ids of mixed resolutions)
    of a vector source, read within ``box``; ``scope``: the scope's outline near it."""

    vector: VectorInfo
    resolution: int
    cells: np.ndarray = field(repr=False)
    box: Bounds
    scope: Any = field(repr=False)
    estimate: int = 0
    boxes: np.ndarray | None = field(default=None, repr=False)  # each partition's

    @property
    def size(self) -> int:
        return self.estimate

    def read(self, skip: tuple[str, ...] = ()) -> pa.Table:
        parts: list[pa.Table] = []
        keys: list[np.ndarray] = []
        coarse = bool((grid.resolutions(self.cells) < self.resolution).any())
        marked: np.ndarray | None = None  # drawn once a source gives boxes
        for table, boxes in iter_features(self.vector, self.box, self.boxes):
            if boxes is not None:  # partitions of the run's cells: their boxes are enough
                marked = self._marked() if marked is None else marked
                table = table.filter(pa.array(self._near(boxes, marked) if coarse
                                              else self._in_a_box(boxes, marked)))
            table, cells = self._own(table)
            parts.append(table)
            keys.append(cells)
        if not parts:
            return pa.table({})
        table = pa.concat_tables(parts)
        return table.take(pa.array(np.argsort(np.concatenate(keys), kind="stable")))

    def _own(self, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """The rows whose centroid cell is this batch's, with their centroids, and those
        cells."""
        x, y = centroid_xy(geometries(table, self.vector))
        ok = np.isfinite(x) & np.isfinite(y)
        cells = np.zeros(len(x), dtype=np.uint64)
        cells[ok] = grid.cells_at(x[ok], y[ok], self.resolution)
        # Many features share a cell: each distinct cell is placed once.
        distinct, where = np.unique(cells[ok], return_inverse=True)
        ours = self._mine(distinct)
        ours[ours] = self._inside(distinct[ours])
        ok[ok] = ours[where]
        keep = pa.array(ok)
        return (table.filter(keep).append_column(CENTROID[0], pa.array(x[ok]))
                .append_column(CENTROID[1], pa.array(y[ok]))
                .append_column(CENTROID_CELL, pa.array(cells[ok].view(np.int64))), cells[ok])

    def _near(self, boxes: np.ndarray, marked: np.ndarray) -> np.ndarray:
        """Whether each feature (by its lon/lat box) may have its centroid in one of the
        partitions, without parsing its geometry: a centroid lies in its box, so within
        half the box's diagonal of the box's centre; when that is less than the smallest
        cell's inradius, its cell is the centre's or a neighbour of it."""
        import h3

        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        ok = np.isfinite(cx) & np.isfinite(cy) & self._in_a_box(boxes, marked)
        # Metres at most (a degree of either kind is at most 111.7 km), against half the
        # average inradius (cells of one resolution differ in size by less than 2).
        reach = 0.5 * np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * 111_700
        safe = 0.5 * h3.average_hexagon_edge_length(self.resolution, "m") * 0.866
        small = ok & (reach < safe)
        out = ok.copy()
        cells, where = np.unique(grid.cells_at(cx[small], cy[small], self.resolution),
                                 return_inverse=True)  # few: one per cell, not per feature
        ring, owner = grid.disks(cells)
        ours = self._mine(ring)
        ours[ours] = self._inside(ring[ours])
        near = np.bincount(owner, weights=ours, minlength=len(cells)) > 0
        out[small] = near[where]
        return out

    def _inside(self, cells: np.ndarray) -> np.ndarray:
        """Whether each cell is the scope's (its rule, on the scope's outline near here)."""
        return centres_in(self.scope, cells)

    def _in_a_box(self, boxes: np.ndarray, marked: np.ndarray) -> np.ndarray:
        """Whether each feature's box may meet one of the partitions, by a grid of
        ``_BINS`` x ``_BINS`` over the batch's box marking the bins the partitions' grown
        outlines touch: a box of one or two bins a side is kept when one of its corner
        bins is marked (those are all its bins), a larger one always. Its centroid lies in
        its box and in a partition's grown outline, so in a bin both touch. ``marked``:
        :meth:`_marked`, drawn once per read."""
        x0, y0, x1, y1 = self.box
        w, h = max(x1 - x0, 1e-12) / _BINS, max(y1 - y0, 1e-12) / _BINS
        with np.errstate(invalid="ignore"):
            i0 = np.clip(np.floor((boxes[:, 0] - x0) / w), 0, _BINS - 1).astype(np.int64)
            i1 = np.clip(np.floor((boxes[:, 2] - x0) / w), 0, _BINS - 1).astype(np.int64)
            j0 = np.clip(np.floor((y1 - boxes[:, 3]) / h), 0, _BINS - 1).astype(np.int64)
            j1 = np.clip(np.floor((y1 - boxes[:, 1]) / h), 0, _BINS - 1).astype(np.int64)
        large = (i1 - i0 > 1) | (j1 - j0 > 1)
        return large | marked[j0, i0] | marked[j0, i1] | marked[j1, i0] | marked[j1, i1]

    def _marked(self) -> np.ndarray:
        """The bins (rows from the top) that the partitions' reach touches."""
        from rasterio.features import rasterize
        from rasterio.transform import from_bounds

        return rasterize(((s, 1) for s in partitions.reach(self.cells, self.resolution).tolist()),
                         out_shape=(_BINS, _BINS), all_touched=True, dtype="uint8",
                         transform=from_bounds(*self.box, _BINS, _BINS)).astype(bool)

    def _mine(self, cells: np.ndarray) -> np.ndarray:
        """Whether each cell (of the run's resolution) lies in one of the partitions."""
        res = grid.resolutions(self.cells)
        out = np.zeros(len(cells), dtype=bool)
        for r in np.unique(res).tolist():
            out |= np.isin(grid.parents(cells, r), self.cells[res == r])
        return out


@dataclass(frozen=True)
class OutputFeed:
    """An earlier step's output of one task (``ref``), ``rows`` long, in a store."""

    store: str = field(repr=False)  # its location: may hold a password, never shown
    root: str
    ref: str
    rows: int

    @property
    def size(self) -> int:
        return self.rows

    def read(self, skip: tuple[str, ...] = ()) -> pa.Table:
        geoparquet.forget()  # a later stage: the source's row groups are not read again

        return output_reader(self.store, Path(self.root))([self.ref], skip)


@dataclass(frozen=True)
class Grouping:
    """Rows of a step that groups by cell: placed in cells of ``resolution`` by their
    centroid when they have no ``h3_index``; ``published``: the step's cells must be of
    that resolution."""

    step_id: str
    resolution: int
    published: bool


def fed(batch: Batch) -> Batch:
    """``batch`` with its rows read (as it is when it carries them)."""
    if batch.feed is None:
        return batch
    if batch.grouping is not None:
        # A step that groups rows into cells needs their cells, not their outlines: read
        # them without geometry, unless nothing else places them.
        rows = batch.feed.read(skip=(GEOMETRY,))
        if "h3_index" not in rows.column_names and not set(CENTROID) <= set(rows.column_names):
            rows = batch.feed.read()
        rows = with_cells(rows, batch.grouping)
    else:
        rows = batch.feed.read()
    return replace(batch, rows=rows, feed=None,
                   keys=tuple(k for k in batch.keys if k in rows.column_names))


def trimmed(result: BatchResult, drop: tuple[str, ...]) -> BatchResult:
    """A batch's result without the columns no later step reads."""
    gone = [c for c in drop if c in result.table.column_names]
    return replace(result, table=result.table.drop_columns(gone)) if gone else result


def with_cells(rows: pa.Table, grouping: Grouping) -> pa.Table:
    """``rows`` with an h3_index (their centroid's cell when they have none); a published
    step's cells checked to be of the run's resolution."""
    if "h3_index" not in rows.column_names:
        if CENTROID_CELL in rows.column_names:  # placed where they were read
            cells = np.asarray(rows.column(CENTROID_CELL).to_numpy(zero_copy_only=False),
                               dtype=np.int64).view(np.uint64)
            return rows.append_column("h3_index", grid.strings(cells))
        if GEOMETRY not in rows.column_names and not set(CENTROID) <= set(rows.column_names):
            raise OperationError(f"step '{grouping.step_id}': its rows have neither "
                                 "h3_index nor a geometry")
        return rows.append_column("h3_index", assign_cells(rows, grouping.resolution))
    if grouping.published:
        cells = rows.column("h3_index").drop_null()
        if len(cells):
            res = np.unique(grid.resolutions(grid.ids(cells)))
            other = [int(r) for r in res.tolist() if int(r) != grouping.resolution]
            if other:
                raise OperationError(
                    f"step '{grouping.step_id}' publishes cells of resolution {other[0]}, "
                    f"but the run is at resolution {grouping.resolution}",
                    hint="run at that resolution, or drop the h3_assign resolution so it "
                    "follows the run")
    return rows


__all__ = ["FeatureFeed", "Grouping", "OutputFeed", "fed", "trimmed", "with_cells"]
