"""SQL over a batch's rows, shared by ``filter``, ``transform`` and
``h3_weighted_aggregate``: :func:`run_sql` runs it with DuckDB on the batch's Arrow table;
:func:`expression_problems` checks an expression before any run (one expression, no
subquery, known columns).

Expressions are DuckDB SQL on every store, so a pipeline computes the same numbers on the
embedded store and on PostgreSQL; ordinary expressions (arithmetic, comparisons, CASE,
coalesce, string functions) read the same in PostgreSQL.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pyarrow as pa

from h3pipe import grid
from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch

NAME = {"type": "string", "pattern": "^[a-z_][a-z0-9_]{0,62}$"}
SQL = {"type": "string", "minLength": 1}


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@cache
def _parser() -> Any:
    """One in-memory DuckDB for parsing: a connection costs 20-50 ms, and validation parses
    every expression of every pipeline (``h3pipe plan`` and ``run`` validate first)."""
    import duckdb

    return duckdb.connect()


def expression_problems(expr: str, columns: list[str] | None) -> list[str]:
    """What is wrong with ``expr`` as a row expression over ``columns`` (None: unknown)."""
    text = _parser().execute("SELECT json_serialize_sql(?)",
                             [f"SELECT ({expr}) FROM __rows"]).fetchone()
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

    con = _connection()
    try:
        con.register("rows", table)
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise OperationError(f"step '{batch.step_id}' batch {batch.number}: "
                             f"{' '.join(str(exc).split())}",
                             hint="check the step's SQL expressions against its input "
                             "columns") from exc
    finally:
        con.unregister("rows")


_CONNECTIONS: dict[int, Any] = {}


def _connection() -> Any:
    """This process's DuckDB connection: opening one costs about 20 ms, a batch's query
    about 2. One thread: a worker process is one of several, each on its own core."""
    import os

    import duckdb

    pid = os.getpid()
    if pid not in _CONNECTIONS:
        _CONNECTIONS.clear()  # a forked child's inherited one is not its own
        _CONNECTIONS[pid] = duckdb.connect(config={"threads": 1})
    return _CONNECTIONS[pid]


def input_rows(batch: Batch) -> pa.Table:
    if batch.rows is not None:
        return batch.rows
    return pa.table({"h3_index": grid.strings(batch.cell_ids())})




__all__ = ["NAME", "SQL", "expression_problems", "ident", "input_rows", "run_sql"]
