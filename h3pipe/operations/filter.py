"""``filter``: keep the rows a SQL condition holds for, by :class:`Filter`."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from h3pipe.operations.base import Batch, Operation
from h3pipe.operations.tabular import SQL, checked, input_rows, run_sql


class Filter(Operation):
    name = "filter"
    summary = "Keep the rows for which a SQL condition is true (null counts as false)."
    example = """\
- id: residential
  operation: filter
  input: buildings
  output: intermediate
  params:
    where: "use = 'residential' AND area_m2 >= 20"
"""
    params_schema = {
        "type": "object", "required": ["where"], "additionalProperties": False,
        "properties": {"where": {**SQL, "description": "A SQL condition over the input's "
                                 "columns (DuckDB dialect)."}},
    }
    input_kinds = frozenset({"cells", "features"})
    requires_source = False

    def expressions(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        return [(("where",), params["where"])]

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return []

    def estimate_rows(self, rows_in: int, cells: int) -> tuple[int, str]:
        return rows_in, "at most the input's rows (a filter)"

    def run_batch(self, batch: Batch) -> pa.Table:
        where = checked(batch, batch.params["where"])
        return run_sql(batch, input_rows(batch),
                       f"SELECT * FROM rows WHERE coalesce({where}, false)")
