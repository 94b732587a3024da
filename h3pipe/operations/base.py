"""The :class:`Operation` contract and the :class:`Batch` work item it computes.

An operation is registered under its YAML name, declares a JSON Schema for its
``params``, and turns one batch into an Arrow table. A batch holds either H3 cells (the
run's cells: a table keyed by ``h3_index`` comes back) or rows (feature rows from a vector
source or an earlier step, or an earlier step's cell rows: the same rows come back with
the operation's columns, unless it groups them). Batches are plain frozen data so they
pickle to worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from h3pipe import grid
from h3pipe.grid import CellBlock
from h3pipe.sources.dimensions import Scenario
from h3pipe.sources.raster import RasterInfo
from h3pipe.sources.vector import VectorInfo


@dataclass(frozen=True)
class Batch:
    """One task's work: a spatially compact group of H3 cells, or of rows, and what to
    read (a raster, or a vector source to join)."""

    run_id: str
    step_id: str
    number: int
    operation: str
    params: dict[str, Any] = field(compare=False)
    cells: tuple[str, ...] = ()  # cells named one by one (tests, small inputs) ...
    resolution: int = 0
    source_id: str | None = None
    raster: RasterInfo | None = None
    rows: pa.Table | None = field(default=None, compare=False)
    vector: VectorInfo | None = None
    block: CellBlock | None = None  # ... or by their coarse parents (a run's batches)
    # A sweep (see h3pipe.operations.sweep): the scenarios of a dimensioned source, each
    # with its raster over the batch, and the key columns the input rows already carry.
    scenarios: tuple[tuple[Scenario, RasterInfo], ...] = ()
    keys: tuple[str, ...] = ()
    wide: bool = False  # give feature rows wide: new columns once per scenario
    melt: tuple[Scenario, ...] = ()  # the rows are wide over these scenarios
    # Where the rows are, when the batch does not carry them: read by the process that
    # computes it (see h3pipe.planning.feeds), with how they are placed in cells.
    feed: Any = field(default=None, compare=False)
    grouping: Any = field(default=None, compare=False)
    # Columns of its rows no later step reads, left out of its output (a geometry).
    drop: tuple[str, ...] = ()
    # The whole run's work is small: moments by exactextract, no compiled kernel to load
    # (decided once per run by its planner, see h3pipe.operations.windows.small_work).
    small: bool = False

    @property
    def size(self) -> int:
        """Cells or rows in the batch (rows to be read: as many as the feed expects)."""
        if self.rows is not None:
            return self.rows.num_rows
        if self.feed is not None:
            return int(self.feed.size)
        return self.block.count if self.block is not None else len(self.cells)

    def cell_ids(self) -> np.ndarray:
        """The batch's cells as uint64 ids, in order."""
        if self.block is not None:
            return self.block.cells()
        return grid.ids(list(self.cells))


@dataclass(frozen=True)
class BatchResult:
    """What a batch produced: its rows, and the seconds spent reading each raster tile."""

    table: pa.Table
    tile_seconds: dict[str, float] = field(default_factory=dict)


class Operation:
    """Base class: subclasses set the class attributes and implement :meth:`run_batch`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    example: ClassVar[str]
    params_schema: ClassVar[dict[str, Any]]
    requires_source: ClassVar[bool] = True
    # What it can run over: 'cells' (the run's cells), 'features' (rows with a geometry),
    # 'rows' (rows of an earlier step with an h3_index, such as an aggregation's).
    input_kinds: ClassVar[frozenset[str]] = frozenset({"cells"})
    source_kinds: ClassVar[tuple[str, ...]] = ("raster", "stac")
    # A column whose equal values must share a batch (an aggregation's group key).
    group_by: ClassVar[str | None] = None
    # Whether it groups by a sweep's key columns itself (else it runs once per scenario).
    groups_by_keys: ClassVar[bool] = False
    # The kind of rows it returns; None: the kind it was given.
    produces: ClassVar[str | None] = None
    # Whether it reads its rows' outlines (not only their centroids or cells).
    reads_geometry: ClassVar[bool] = False

    def check_source(self, params: dict[str, Any], kind: str) -> str | None:
        """Why a source of ``kind`` does not suit these params (None when it does)."""
        return None

    def column_problems(self, params: dict[str, Any], columns: list[str]
                        ) -> list[tuple[tuple[str | int, ...], str]]:
        """Params naming columns the input will not have (path inside params, message)."""
        return []

    def expressions(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """SQL expressions in ``params`` (path, text), checked before any run."""
        return []

    def columns(self, params: dict[str, Any], input_columns: list[str]) -> list[str]:
        """The columns of its output, given its input's."""
        if self.produces == "cells":
            return ["h3_index", *self.output_columns(params)]
        new = self.output_columns(params)
        return [c for c in input_columns if c not in new] + new

    def check_params(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Checks beyond the JSON Schema; each finding is (path inside params, message)."""
        return []

    def per_band(self, params: dict[str, Any], bands: tuple[str, ...], columns: list[str]
                 ) -> dict[str, Any]:
        """``params`` for an input whose columns come once per band of a multi-band source
        (``rp100_depth_m``): what names a column of the single-band name (``depth_m``) is
        repeated for each band. The same object when nothing changes."""
        return params

    def source_params(self, params: dict[str, Any], source: Any) -> dict[str, Any]:
        """``params`` completed from the step's raster source (a ``SourceSpec``: its
        classes, say). The same object when nothing changes."""
        return params

    def measure_problems(self, params: dict[str, Any], measure: str, where: str
                         ) -> list[tuple[tuple[str | int, ...], str]]:
        """What in ``params`` makes no sense for a source (``where``: which, and which
        band) whose values are of ``measure`` (see h3pipe.operations.measures)."""
        return []

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def estimate_rows(self, rows_in: int, cells: int) -> tuple[int, str]:
        """Rows out for ``rows_in`` rows in, over a run of ``cells`` cells, and how that was
        estimated: what ``h3pipe plan`` says of a stage fed by an earlier one."""
        if self.produces == "cells" or self.group_by == "h3_index":
            return min(rows_in, cells), "at most one row per cell"
        return rows_in, "one row per input row"

    def output_column_paths(self, params: dict[str, Any]
                            ) -> list[tuple[str, tuple[str | int, ...]]]:
        """Each output column and the path inside ``params`` that asks for it."""
        return [(c, ()) for c in self.output_columns(params)]

    def run_batch(self, batch: Batch) -> pa.Table:
        raise NotImplementedError

    def on_threads(self, params: dict[str, Any], over: str) -> bool:
        """Whether its batches over ``over`` ('cells', or 'rows': features or an earlier
        step's) spend most of their time with the GIL released (reading and decoding
        pixels, a compiled kernel marked ``nogil``), so that worker threads of one process
        compute them side by side as worker processes would, without their start-up and
        memory. False unless an operation has measured it: a thread holding the GIL
        (Python loops, shapely objects, DuckDB's Python side) would make its siblings
        wait."""
        return False

    def warm_up(self) -> None:
        """Import and load what :meth:`run_batch` needs; workers call it at start."""
