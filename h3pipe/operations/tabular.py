"""SQL over a batch's rows, shared by ``filter``, ``transform`` and
``h3_weighted_aggregate``: :func:`run_sql` runs it with DuckDB on the batch's Arrow table,
on a bounded and locked connection (:func:`connect`); :func:`expression_problems` checks an
expression before any run (one expression of the row: no subquery, aggregate, table or
file function; known columns), and :func:`checked` again in the worker.

Expressions are DuckDB SQL on every store, so a pipeline computes the same numbers on the
embedded store and on PostgreSQL; ordinary expressions (arithmetic, comparisons, CASE,
coalesce, string functions) read the same in PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


# Functions a row expression may not call although DuckDB lists them as scalar: those whose
# output grows with an argument rather than with the row (a 1.5 GB string from one literal
# escapes DuckDB's memory limit), and those that read the session or change its state.
_SIZED = ("repeat", "range", "generate_series", "lpad", "rpad", "bar", "bitstring",
          "list_resize", "array_resize", "printf", "format")
_SESSION = ("current_setting", "getvariable", "getenv", "nextval", "currval", "setval",
            "setseed", "random", "uuid", "gen_random_uuid", "uuidv4", "uuidv7")
_DENIED = {**{n: "an argument sets the size of its output" for n in _SIZED},
           **{n: "it reads the environment or the session, or changes it" for n in _SESSION}}
_KINDS = {"aggregate": "an aggregate", "window": "a window function",
          "table": "a table function", "table_macro": "a table function",
          "pragma": "a pragma"}
# Per process: the largest share of memory and the one thread DuckDB takes for a batch's SQL.
MEMORY_LIMIT = "1GB"


def connect() -> Any:
    """A DuckDB connection for SQL written in pipelines: bounded memory (``MEMORY_LIMIT``,
    or ``$H3PIPE_SQL_MEMORY``), one thread, spill files in a private temporary folder, no
    access to files, the network or extensions, and its configuration locked so no
    statement can undo that."""
    import atexit
    import os
    import shutil
    import tempfile

    import duckdb

    spill = tempfile.mkdtemp(prefix="h3pipe-duckdb-")
    atexit.register(shutil.rmtree, spill, ignore_errors=True)
    con = duckdb.connect(config={
        "memory_limit": os.environ.get("H3PIPE_SQL_MEMORY") or MEMORY_LIMIT, "threads": 1,
        "temp_directory": spill, "max_temp_directory_size": "1GB",
        "autoload_known_extensions": False, "autoinstall_known_extensions": False})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


@cache
def _parser() -> Any:
    """One connection for parsing, held under :data:`_PARSING`: a connection costs 20-50 ms,
    and validation parses every expression of every pipeline (``h3pipe plan`` and ``run``
    validate first). A DuckDB connection refuses a second caller rather than waiting, and
    ``h3pipe serve`` validates on many threads."""
    return connect()


_PARSING = threading.Lock()


def _parse_query(sql: str, params: list[Any] | None = None) -> list[Any]:
    with _PARSING:
        return _parser().execute(sql, params or []).fetchall()


@cache
def _function_kinds() -> dict[str, str]:
    """DuckDB's functions by name and kind; a scalar kind wins over a table one
    (``range`` is both)."""
    rows = _parse_query("SELECT DISTINCT function_name, function_type "
                        "FROM duckdb_functions()")
    kinds: dict[str, str] = {}
    for name, kind in rows:
        if kinds.get(name) not in ("scalar", "macro"):
            kinds[name] = kind
    return kinds


def row_sql(expr: str) -> str:
    """``expr`` in the place every row statement gives it: one parenthesised item of a
    SELECT list over ``rows``. The check parses this very text."""
    return f"SELECT ({expr}) AS __value FROM rows"


def expression_problems(expr: str, columns: list[str] | None = None) -> list[str]:
    """What is wrong with ``expr`` as a row expression over ``columns`` (None: unknown)."""
    found, refs = _parsed(expr)
    expr = expr.replace("\r", "\\r").replace("\n", "\\n")  # the message stays one line
    problems = [f"SQL expression '{expr}': {f}" for f in found]
    if columns is not None and not found:
        for name in refs:
            if name not in columns:
                from difflib import get_close_matches

                close = get_close_matches(name, columns, n=1)
                problems.append(f"SQL expression '{expr}': unknown column '{name}'"
                                + (f" (did you mean '{close[0]}'?)" if close else "")
                                + f"; the input has {', '.join(columns)}")
    return problems


@cache
def _parsed(expr: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What is wrong with ``expr`` whatever the columns, and the columns it names.

    DuckDB parses :func:`row_sql` of it. Without comments, an expression that parses there
    as the one item of the SELECT list, over ``rows`` alone, is balanced, so it stays one
    expression wherever the operations put it in parentheses."""
    import duckdb

    try:
        tokens = duckdb.tokenize(expr)
    except duckdb.Error as exc:
        return (" ".join(str(exc).split()),), ()
    if any(kind == duckdb.token_type.comment for _, kind in tokens):
        return ("comments are not allowed",), ()
    text = _parse_query("SELECT json_serialize_sql(?)", [row_sql(expr)])
    tree = json.loads(text[0][0] if text else "{}")
    if tree.get("error"):
        return (tree.get("error_message", "cannot be parsed"),), ()
    statements = tree.get("statements", [])
    node = statements[0]["node"] if len(statements) == 1 else {}
    source = node.get("from_table") or {}
    items = node.get("select_list") or []
    if (len(statements) != 1 or node.get("type") != "SELECT_NODE"
            or [item.get("alias") for item in items] != ["__value"]
            or (source.get("type"), source.get("table_name"), source.get("alias"))
            != ("BASE_TABLE", "rows", "")
            or any(node.get(k) for k in ("where_clause", "group_expressions", "having",
                                         "qualify", "modifiers", "sample"))
            or (node.get("cte_map") or {}).get("map")):
        return ("must be one expression over the row's columns",), ()
    found: list[str] = []
    refs: list[str] = []
    _walk(items[0], refs, found)
    return tuple(dict.fromkeys(found)), tuple(dict.fromkeys(refs))


def _walk(node: Any, refs: list[str], found: list[str]) -> None:
    if isinstance(node, dict):
        cls = node.get("class")
        if cls == "COLUMN_REF":
            refs.append(node["column_names"][-1])
        elif cls == "SUBQUERY":
            found.append("subqueries are not allowed")
        elif cls == "WINDOW":
            found.append("window functions are not allowed")
        elif cls == "PARAMETER":
            found.append("parameters ($1, ?) are not allowed")
        elif cls == "FUNCTION":
            found += _function_problem(node)
        elif cls == "LAMBDA":
            inner: list[str] = []
            params: list[str] = []
            _walk(node.get("lhs"), params, found)
            _walk(node.get("expr"), inner, found)
            refs += [r for r in inner if r not in params]
            return
        for value in node.values():
            _walk(value, refs, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, refs, found)


def _function_problem(node: dict[str, Any]) -> list[str]:
    name = node.get("function_name", "")
    if node.get("schema") or node.get("catalog"):
        return [f"function '{node.get('schema')}.{name}' names a schema; call '{name}'"]
    kind = _function_kinds().get(name)
    why = _DENIED.get(name) or _KINDS.get(kind or "")
    if why is None:
        return [] if kind else [f"unknown function '{name}'"]
    return [f"function '{name}' is not allowed in a row expression ({why}); a row "
            "expression computes one value from the row's own columns"]


def checked(batch: Batch, expr: str) -> str:
    """``expr`` once it passes the check ``validate`` makes: a worker runs only what
    validate accepts, whatever reached it."""
    problems = expression_problems(expr)
    if problems:
        raise OperationError(f"step '{batch.step_id}' batch {batch.number}: {problems[0]}",
                             hint="run 'h3pipe validate' and fix the expression")
    return f"({expr})"


def run_sql(batch: Batch, table: pa.Table, sql: str) -> pa.Table:
    """``sql`` over ``table`` (as ``rows``); an error names the step and the batch."""
    import duckdb

    with _connection() as con:
        try:
            con.register("rows", table)
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise OperationError(f"step '{batch.step_id}' batch {batch.number}: "
                                 f"{' '.join(str(exc).split())}",
                                 hint="check the step's SQL expressions against its input "
                                 "columns, or raise $H3PIPE_SQL_MEMORY if it ran out of "
                                 "memory") from exc
        finally:
            con.unregister("rows")


# DuckDB connections of this process not in use now, with the process that opened them.
_IDLE: list[tuple[int, Any]] = []
_IDLE_LOCK = threading.Lock()


@contextmanager
def _connection() -> Iterator[Any]:
    """A DuckDB connection of this process for one query: opening one costs about 20 ms, a
    batch's query about 2. A connection serves one caller at a time, so worker threads of
    one process (see :meth:`Operation.on_threads`) each take one, opened when none is idle.
    They are the process's, not a thread's: a worker thread ending as the interpreter
    exits must not close one (DuckDB would then abort the process). A forked child's
    inherited ones are not its own."""
    import os

    pid = os.getpid()
    with _IDLE_LOCK:
        while _IDLE and _IDLE[-1][0] != pid:
            _IDLE.pop()
        con = _IDLE.pop()[1] if _IDLE else None
    if con is None:
        con = connect()
    try:
        yield con
    finally:
        with _IDLE_LOCK:
            _IDLE.append((pid, con))


def input_rows(batch: Batch) -> pa.Table:
    if batch.rows is not None:
        return batch.rows
    return pa.table({"h3_index": grid.strings(batch.cell_ids())})




__all__ = ["MEMORY_LIMIT", "NAME", "SQL", "checked", "connect", "expression_problems", "ident",
           "input_rows", "row_sql", "run_sql"]
