"""``h3_weighted_aggregate``: rows grouped into H3 cells, by :class:`H3WeightedAggregate`."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch, Operation
from h3pipe.operations.tabular import NAME, SQL, checked, ident, input_rows, run_sql
from h3pipe.sources.raster import band_column

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
    params_schema = {
        "type": "object", "required": ["aggregations"], "additionalProperties": False,
        "properties": {"aggregations": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "required": ["name", "function"],
                "additionalProperties": False,
                "properties": {
                    "name": {**NAME, "description": "Output column."},
                    "function": {"enum": list(AGGREGATE_FUNCTIONS)},
                    "column": {"type": "string", "description": "Column aggregated (all "
                               "but count and share)."},
                    "weight": {"type": "string", "description": "weighted_mean: the weight "
                               "column; rows with a null value or weight are left out."},
                    "where": {**SQL, "description": "Only rows meeting this SQL condition; "
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
    groups_by_keys = True

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

    def per_band(self, params: dict[str, Any], bands: tuple[str, ...], columns: list[str]
                 ) -> dict[str, Any]:
        """An aggregation naming ``depth_m`` over rows with ``rp5_depth_m`` ...
        ``rp1000_depth_m`` becomes one per band (``rp100_flooded_buildings``); the others
        (``count`` of all rows) stay as they are."""
        prefixes = [band_column(b, "") for b in bands]
        bases = {c[len(p):] for c in columns for p in prefixes if c.startswith(p)}
        bases = {b for b in bases if b not in columns
                 and all(band_column(x, b) in columns for x in bands)}
        if not bands or not bases:
            return params
        out = []
        for agg in params["aggregations"]:
            named = _names(agg) & bases
            if not named:
                out.append(agg)
                continue
            out += [_for_band(agg, band, named) for band in bands]
        return {**params, "aggregations": out}

    def expressions(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        out: list[tuple[tuple[str | int, ...], str]] = []
        for i, agg in enumerate(params["aggregations"]):
            for key in ("column", "weight"):
                if key in agg:
                    out.append((("aggregations", i, key), ident(agg[key])))
            if "where" in agg:
                out.append((("aggregations", i, "where"), agg["where"]))
        return out

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return [a["name"] for a in params["aggregations"]]

    def output_column_paths(self, params: dict[str, Any]
                            ) -> list[tuple[str, tuple[str | int, ...]]]:
        return [(a["name"], ("aggregations", i, "name"))
                for i, a in enumerate(params["aggregations"])]

    def on_threads(self, params: dict[str, Any], over: str) -> bool:
        # DuckDB groups the rows with the GIL released, on each thread's own connection
        # (tabular._connection); the sweep's second step, after sample's (see there).
        return True

    def run_batch(self, batch: Batch) -> pa.Table:
        table = input_rows(batch)
        if "h3_index" not in table.column_names:
            raise OperationError(f"step '{batch.step_id}': rows without h3_index reached "
                                 "the aggregation")
        selects = [_aggregate_sql(batch, a) for a in batch.params["aggregations"]]
        # Rows of a sweep group within their scenario.
        by = ", ".join(ident(c) for c in ("h3_index", *batch.keys))
        sql = (f"SELECT {by}, {', '.join(selects)} FROM rows WHERE h3_index IS NOT NULL "
               f"GROUP BY {by} ORDER BY {by}")
        out = run_sql(batch, table, sql)
        cols: dict[str, Any] = {c: out.column(c) for c in ("h3_index", *batch.keys)}
        for a in batch.params["aggregations"]:
            col = out.column(a["name"])
            if a["function"] == "count":
                cols[a["name"]] = col.cast(pa.int64())
            else:
                values = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False),
                                    dtype=np.float64)
                cols[a["name"]] = pa.array(values, mask=np.isnan(values), type=pa.float64())
        return pa.table(cols)


def _names(agg: dict[str, Any]) -> set[str]:
    """The identifiers an aggregation names (its column, weight, and words of its where)."""
    words = set(_WORD.findall(agg.get("where", "")))
    return words | {agg[k] for k in ("column", "weight") if k in agg}


def _for_band(agg: dict[str, Any], band: str, named: set[str]) -> dict[str, Any]:
    """One band's copy of an aggregation: its name and the band's columns."""
    def rename(text: str) -> str:
        return _WORD.sub(lambda m: band_column(band, m.group(0)) if m.group(0) in named
                         else m.group(0), text)

    out = {**agg, "name": band_column(band, agg["name"])}
    for key in ("column", "weight"):
        if key in agg and agg[key] in named:
            out[key] = band_column(band, agg[key])
    if "where" in agg:
        out["where"] = rename(agg["where"])
    return out


# An identifier outside quotes (a rough cut: the checks parse the result again).
_WORD = re.compile(r"(?<![\w.'\"])[A-Za-z_][A-Za-z0-9_]*(?![\w'\"])")


def _aggregate_sql(batch: Batch, agg: dict[str, Any]) -> str:
    fn, name = agg["function"], ident(agg["name"])
    cond = f"coalesce({checked(batch, agg['where'])}, false)" if "where" in agg else "true"
    col = ident(agg["column"]) if "column" in agg else None
    if fn == "count":
        return f"count(*) FILTER (WHERE {cond}) AS {name}"
    if fn == "share":
        return f"(count(*) FILTER (WHERE {cond}))::DOUBLE / count(*) AS {name}"
    if fn == "weighted_mean":
        w = ident(agg["weight"])
        ok = f"{cond} AND {col} IS NOT NULL AND {w} IS NOT NULL"
        return (f"sum({col}::DOUBLE * {w}) FILTER (WHERE {ok}) / "
                f"nullif(sum({w}::DOUBLE) FILTER (WHERE {ok}), 0) AS {name}")
    sql_fn = {"sum": "sum", "mean": "avg", "min": "min", "max": "max"}[fn]
    return f"{sql_fn}({col}::DOUBLE) FILTER (WHERE {cond}) AS {name}"
