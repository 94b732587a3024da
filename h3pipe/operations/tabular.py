"""Operations on rows of any kind, run by DuckDB on the batch's Arrow table: ``filter``,
``transform`` and ``h3_weighted_aggregate``; and :func:`expression_problems`, which checks
a SQL expression before any run (one expression, no subquery, known columns).

Expressions are DuckDB SQL on every store, so a pipeline computes the same numbers on the
embedded store and on PostgreSQL; ordinary expressions (arithmetic, comparisons, CASE,
coalesce, string functions) read the same in PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch, Operation

_NAME = {"type": "string", "pattern": "^[a-z_][a-z0-9_]{0,62}$"}
_SQL = {"type": "string", "minLength": 1}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def expression_problems(expr: str, columns: list[str] | None) -> list[str]:
    """What is wrong with ``expr`` as a row expression over ``columns`` (None: unknown)."""
    import duckdb

    con = duckdb.connect()
    try:
        text = con.execute("SELECT json_serialize_sql(?)",
                           [f"SELECT ({expr}) FROM __rows"]).fetchone()
    finally:
        con.close()
    tree = json.loads(text[0] if text else "{}")
    if tree.get("error"):
        return [f"SQL expression '{expr}': {tree.get('error_message', 'cannot be parsed')}"]
    statements = tree.get("statements", [])
    node = statements[0]["node"] if len(statements) == 1 else {}
    from_table = (node.get("from_table") or {}).get("table_name")
    if (len(statements) != 1 or node.get("type") != "SELECT_NODE"
            or len(node.get("select_list", [])) != 1 or from_table != "__rows"
            or node.get("where_clause") or node.get("group_expressions")):
        return [f"SQL expression '{expr}' must be one expression over the row's columns"]
    found: list[str] = []
    refs: list[str] = []
    _walk(node["select_list"][0], refs, found)
    problems = [f"SQL expression '{expr}': {f}" for f in dict.fromkeys(found)]
    if columns is not None:
        for name in dict.fromkeys(refs):
            if name not in columns:
                from difflib import get_close_matches

                close = get_close_matches(name, columns, n=1)
                problems.append(f"SQL expression '{expr}': unknown column '{name}'"
                                + (f" (did you mean '{close[0]}'?)" if close else "")
                                + f"; the input has {', '.join(columns)}")
    return problems


def _walk(node: Any, refs: list[str], found: list[str]) -> None:
    if isinstance(node, dict):
        cls = node.get("class")
        if cls == "COLUMN_REF":
            refs.append(node["column_names"][-1])
        elif cls == "SUBQUERY":
            found.append("subqueries are not allowed")
        elif cls == "WINDOW":
            found.append("window functions are not allowed")
        for value in node.values():
            _walk(value, refs, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, refs, found)


def run_sql(batch: Batch, table: pa.Table, sql: str) -> pa.Table:
    """``sql`` over ``table`` (as ``rows``); an error names the step and the batch."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("rows", table)
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise OperationError(f"step '{batch.step_id}' batch {batch.number}: "
                             f"{' '.join(str(exc).split())}",
                             hint="check the step's SQL expressions against its input "
                             "columns") from exc
    finally:
        con.close()


def input_rows(batch: Batch) -> pa.Table:
    if batch.rows is not None:
        return batch.rows
    return pa.table({"h3_index": pa.array(batch.cells, pa.string())})


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
    params_schema: dict[str, Any] = {
        "type": "object", "required": ["where"], "additionalProperties": False,
        "properties": {"where": {**_SQL, "description": "A SQL condition over the input's "
                                 "columns (DuckDB dialect)."}},
    }
    input_kinds = frozenset({"cells", "features"})
    requires_source = False

    def expressions(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        return [(("where",), params["where"])]

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return []

    def run_batch(self, batch: Batch) -> pa.Table:
        return run_sql(batch, input_rows(batch),
                       f"SELECT * FROM rows WHERE coalesce(({batch.params['where']}), false)")


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
    params_schema: dict[str, Any] = {
        "type": "object", "required": ["columns"], "additionalProperties": False,
        "properties": {"columns": {
            "type": "object", "minProperties": 1,
            "propertyNames": _NAME, "additionalProperties": _SQL,
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
        keep = [_ident(c) for c in table.column_names if c not in new]
        computed = [f"({expr}) AS {_ident(name)}" for name, expr in new.items()]
        return run_sql(batch, table, f"SELECT {', '.join(keep + computed)} FROM rows")


AGGREGATE_FUNCTIONS = ("sum", "count", "mean", "min", "max", "weighted_mean", "share")


class H3WeightedAggregate(Operation):
    name = "h3_weighted_aggregate"
    summary = ("Group rows by H3 cell (their h3_index, or their centroid's cell at the run's "
               "resolution) with sum, count, mean, min, max, weighted_mean and share.")
    example = """\
- id: flood_exposure
  operation: h3_weighted_aggregate
  input: $depth_at_building
  params:
    aggregations:
      - {name: buildings, function: count}
      - {name: share_flooded, function: share, where: "depth_m > 0.5"}
      - {name: mean_depth_m, function: mean, column: depth_m}
      - {name: pop_weighted_depth_m, function: weighted_mean, column: depth_m,
         weight: pop_sum}
"""
    params_schema: dict[str, Any] = {
        "type": "object", "required": ["aggregations"], "additionalProperties": False,
        "properties": {"aggregations": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "required": ["name", "function"],
                "additionalProperties": False,
                "properties": {
                    "name": {**_NAME, "description": "Output column."},
                    "function": {"enum": list(AGGREGATE_FUNCTIONS)},
                    "column": {"type": "string", "description": "Column aggregated (all "
                               "but count and share)."},
                    "weight": {"type": "string", "description": "weighted_mean: the weight "
                               "column; rows with a null value or weight are left out."},
                    "where": {**_SQL, "description": "Only rows meeting this SQL condition; "
                              "for share, the condition whose fraction is computed."},
                },
            },
            "description": "One output column per entry. Nulls are left out of every "
            "function; a cell whose rows are all null gets null (count gets 0)."}},
    }
    input_kinds = frozenset({"features", "rows"})
    requires_source = False
    group_by = "h3_index"
    produces = "cells"

    def check_params(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        found: list[tuple[tuple[str | int, ...], str]] = []
        seen: set[str] = set()
        for i, agg in enumerate(params["aggregations"]):
            fn = agg["function"]
            if agg["name"] in seen:
                found.append((("aggregations", i, "name"), f"duplicate name '{agg['name']}'"))
            seen.add(agg["name"])
            if fn in ("sum", "mean", "min", "max", "weighted_mean") and "column" not in agg:
                found.append((("aggregations", i), f"'{fn}' needs 'column'"))
            if fn == "weighted_mean" and "weight" not in agg:
                found.append((("aggregations", i), "'weighted_mean' needs 'weight'"))
            if fn != "weighted_mean" and "weight" in agg:
                found.append((("aggregations", i, "weight"), "'weight' is only for "
                              "weighted_mean"))
            if fn == "share" and "where" not in agg:
                found.append((("aggregations", i), "'share' needs 'where', the condition "
                              "whose fraction it is"))
        return found

    def expressions(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        out: list[tuple[tuple[str | int, ...], str]] = []
        for i, agg in enumerate(params["aggregations"]):
            for key in ("column", "weight"):
                if key in agg:
                    out.append((("aggregations", i, key), _ident(agg[key])))
            if "where" in agg:
                out.append((("aggregations", i, "where"), agg["where"]))
        return out

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return [a["name"] for a in params["aggregations"]]

    def output_column_paths(self, params: dict[str, Any]
                            ) -> list[tuple[str, tuple[str | int, ...]]]:
        return [(a["name"], ("aggregations", i, "name"))
                for i, a in enumerate(params["aggregations"])]

    def run_batch(self, batch: Batch) -> pa.Table:
        table = input_rows(batch)
        if "h3_index" not in table.column_names:
            raise OperationError(f"step '{batch.step_id}': rows without h3_index reached "
                                 "the aggregation")
        selects = [_aggregate_sql(a) for a in batch.params["aggregations"]]
        sql = (f"SELECT h3_index, {', '.join(selects)} FROM rows WHERE h3_index IS NOT NULL "
               "GROUP BY h3_index ORDER BY h3_index")
        out = run_sql(batch, table, sql)
        cols: dict[str, Any] = {"h3_index": out.column("h3_index")}
        for a in batch.params["aggregations"]:
            col = out.column(a["name"])
            if a["function"] == "count":
                cols[a["name"]] = col.cast(pa.int64())
            else:
                values = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False),
                                    dtype=np.float64)
                cols[a["name"]] = pa.array(values, mask=np.isnan(values), type=pa.float64())
        return pa.table(cols)


def _aggregate_sql(agg: dict[str, Any]) -> str:
    fn, name = agg["function"], _ident(agg["name"])
    cond = f"coalesce(({agg['where']}), false)" if "where" in agg else "true"
    col = _ident(agg["column"]) if "column" in agg else None
    if fn == "count":
        return f"count(*) FILTER (WHERE {cond}) AS {name}"
    if fn == "share":
        return f"(count(*) FILTER (WHERE {cond}))::DOUBLE / count(*) AS {name}"
    if fn == "weighted_mean":
        w = _ident(agg["weight"])
        ok = f"{cond} AND {col} IS NOT NULL AND {w} IS NOT NULL"
        return (f"sum({col}::DOUBLE * {w}) FILTER (WHERE {ok}) / "
                f"nullif(sum({w}::DOUBLE) FILTER (WHERE {ok}), 0) AS {name}")
    sql_fn = {"sum": "sum", "mean": "avg", "min": "min", "max": "max"}[fn]
    return f"{sql_fn}({col}::DOUBLE) FILTER (WHERE {cond}) AS {name}"


__all__ = ["AGGREGATE_FUNCTIONS", "Filter", "H3WeightedAggregate", "Transform",
           "expression_problems"]
