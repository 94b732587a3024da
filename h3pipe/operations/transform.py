"""``transform``: columns computed by SQL expressions, by :class:`Transform`."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from h3pipe.operations.base import Batch, Operation
from h3pipe.operations.tabular import NAME, SQL, checked, ident, input_rows, run_sql


class Transform(Operation):
    name = "transform"
    summary = "Add or replace columns computed by SQL expressions over each row."
    example = """\
- id: depth_classes
  operation: transform
  input: $depth_at_building
  output: intermediate
  params:
    columns:
      flooded: "depth_m > 0.5"
      depth_cm: "round(depth_m * 100)"
"""
    params_schema = {
        "type": "object", "required": ["columns"], "additionalProperties": False,
        "properties": {"columns": {
            "type": "object", "minProperties": 1,
            "propertyNames": NAME, "additionalProperties": SQL,
            "description": "New column name -> SQL expression over the input's columns "
            "(DuckDB dialect); an existing name is replaced."}},
    }
    input_kinds = frozenset({"cells", "features"})
    requires_source = False

    def expressions(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        return [(("columns", name), expr) for name, expr in params["columns"].items()]

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return list(params["columns"])

    def output_column_paths(self, params: dict[str, Any]
                            ) -> list[tuple[str, tuple[str | int, ...]]]:
        return [(c, ("columns", c)) for c in params["columns"]]

    def run_batch(self, batch: Batch) -> pa.Table:
        table = input_rows(batch)
        new = batch.params["columns"]
        keep = [ident(c) for c in table.column_names if c not in new]
        computed = [f"{checked(batch, expr)} AS {ident(name)}" for name, expr in new.items()]
        return run_sql(batch, table, f"SELECT {', '.join(keep + computed)} FROM rows")
