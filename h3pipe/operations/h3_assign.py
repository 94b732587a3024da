"""``h3_assign``: each feature's H3 cell by its centroid, by :class:`H3Assign`."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from h3pipe.operations.base import Batch, Operation
from h3pipe.operations.features import add_columns, assign_cells, rows_of


class H3Assign(Operation):
    name = "h3_assign"
    summary = "Each feature's H3 cell, by its centroid, at the run's resolution or a given one."
    example = """\
- id: building_cells
  operation: h3_assign
  input: $depth_at_building
  output: intermediate
  params:
    resolution: 7
"""
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "resolution": {"type": "integer", "minimum": 0, "maximum": 15,
                           "description": "Default: the run's resolution."},
        },
    }
    input_kinds = frozenset({"features"})
    requires_source = False

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return ["h3_index"]

    def run_batch(self, batch: Batch) -> pa.Table:
        table = rows_of(batch)
        resolution = batch.params.get("resolution", batch.resolution)
        return add_columns(table, {"h3_index": assign_cells(table, resolution)})
