"""The :class:`Operation` contract and the :class:`Batch` work item it computes.

An operation is registered under its YAML name, declares a JSON Schema for its
``params``, and turns one batch into an Arrow table keyed by ``h3_index``. Batches are
plain frozen data so they pickle to worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from h3pipe.operations.raster import RasterInfo


@dataclass(frozen=True)
class Batch:
    """One task's work: a spatially compact group of H3 cells and what to read."""

    run_id: str
    step_id: str
    number: int
    operation: str
    params: dict[str, Any] = field(compare=False)
    cells: tuple[str, ...] = ()
    resolution: int = 0
    source_id: str | None = None
    raster: RasterInfo | None = None


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

    def check_params(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Checks beyond the JSON Schema; each finding is (path inside params, message)."""
        return []

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def output_column_paths(self, params: dict[str, Any]
                            ) -> list[tuple[str, tuple[str | int, ...]]]:
        """Each output column and the path inside ``params`` that asks for it."""
        return [(c, ()) for c in self.output_columns(params)]

    def run_batch(self, batch: Batch) -> pa.Table:
        raise NotImplementedError

    def warm_up(self) -> None:
        """Import and load what :meth:`run_batch` needs; workers call it at start."""
