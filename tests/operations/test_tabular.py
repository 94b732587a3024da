"""Row expressions and the DuckDB connection they run on: what validate refuses is refused
again by a worker, and the connection can read no file, environment or settings."""

from __future__ import annotations

import json
import time

import duckdb
import pyarrow as pa
import pytest

from h3pipe.errors import OperationError
from h3pipe.operations import Batch, get_operation
from h3pipe.operations.tabular import connect
from tests.conftest import write_project

TABLE_FN = "is not allowed in a row expression (a table function)"
HOSTILE = [
    ("len(range(0,1500000000))", "function 'range' is not allowed"),
    ("length(repeat('x',1500000000))", "function 'repeat' is not allowed"),
    ("1\n) FROM __rows --", "comments are not allowed"),
    ("v /* ) FROM __rows */", "comments are not allowed"),
    ("getenv('HOME')", "function 'getenv' is not allowed"),
    ("glob('*')", f"function 'glob' {TABLE_FN}"),
    ("read_text('/etc/hostname')", f"function 'read_text' {TABLE_FN}"),
    ("read_csv('/etc/passwd')", f"function 'read_csv' {TABLE_FN}"),
    ("unnest([1, 2])", f"function 'unnest' {TABLE_FN}"),
    ("sum(v)", "function 'sum' is not allowed in a row expression (an aggregate)"),
    ("count(*)", "is not allowed in a row expression (an aggregate)"),
    ("row_number() OVER ()", "window functions are not allowed"),
    ("(SELECT 42)", "subqueries are not allowed"),
    ("current_setting('memory_limit')", "function 'current_setting' is not allowed"),
    ("1), (2", "must be one expression over the row's columns"),
    ("1 FROM rows, rows AS r2 WHERE (1", "syntax error"),
    ("main.abs(v)", "names a schema"),
    ("no_such_fn(v)", "unknown function 'no_such_fn'"),
]


def _cells_pipeline(expr: str) -> str:
    return ("id: p\noutput: {dataset: ds, theme: hazard}\ndefaults: {resolution: 5}\n"
            "steps:\n  - id: base\n    operation: transform\n    output: intermediate\n"
            "    params: {columns: {v: 'length(h3_index)'}}\n"
            "  - id: t\n    operation: transform\n    input: $base\n"
            f"    params:\n      columns:\n        w: {json.dumps(expr)}\n")


@pytest.mark.parametrize("expr, words", HOSTILE)
def test_validate_refuses_a_hostile_row_expression_naming_file_and_step(tmp_path, cli,
                                                                         expr, words):
    proj = write_project(tmp_path / "p", pipelines={"p": _cells_pipeline(expr)})
    r = cli("--project", proj, "validate")
    assert r.exit_code == 1, r.stdout
    line = next(ln for ln in r.stdout.splitlines() if "SQL expression" in ln)
    assert line.startswith("pipelines/p.yaml:14: steps[1].params.columns.w: "), line
    assert words in line, line


@pytest.mark.parametrize("expr", ["v * 2 + 1", "CASE WHEN v > 3 THEN 'long' END",
                                  "list_transform([1, 2], x -> x + v)", "v) + (v",
                                  "coalesce(v, 0)::DOUBLE / nullif(v, 0)"])
def test_validate_accepts_ordinary_row_expressions(tmp_path, cli, expr):
    proj = write_project(tmp_path / "p", pipelines={"p": _cells_pipeline(expr)})
    r = cli("--project", proj, "validate")
    assert r.exit_code == 0, r.stdout


def _batch(op: str, params: dict) -> Batch:
    return Batch(run_id="r", step_id="s", number=3, operation=op, params=params,
                 resolution=5, rows=pa.table({"v": [1, 2, 3]}))


@pytest.mark.parametrize("op, params", [
    ("transform", {"columns": {"w": "length(repeat('x', 1500000000))"}}),
    ("filter", {"where": "length(repeat('x', 1500000000)) > 0"}),
    ("h3_weighted_aggregate", {"aggregations": [
        {"name": "n", "function": "count", "where": "length(repeat('x', 1500000000)) > 0"}]}),
    ("transform", {"columns": {"w": "1) AS w FROM rows --"}}),
])
def test_a_worker_refuses_what_validate_refuses_before_any_sql_runs(op, params):
    rows = pa.table({"h3_index": ["85283473fffffff"], "v": [1]})
    batch = Batch(run_id="r", step_id="s", number=3, operation=op, params=params,
                  resolution=5, rows=rows)
    started = time.monotonic()
    with pytest.raises(OperationError, match=r"step 's' batch 3: SQL expression") as info:
        get_operation(op).run_batch(batch)
    assert time.monotonic() - started < 2  # refused, not computed (1.5 GB takes ~10 s)
    assert "h3pipe validate" in (info.value.hint or "")


def test_an_ordinary_transform_still_runs():
    out = get_operation("transform").run_batch(_batch("transform", {"columns": {"w": "v * 2"}}))
    assert out.column("w").to_pylist() == [2, 4, 6]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('*')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "COPY (SELECT 1) TO '/tmp/h3pipe-should-not-exist.csv'",
])
def test_the_connection_touches_no_file(sql):
    with pytest.raises(duckdb.PermissionException):
        connect().execute(sql)


@pytest.mark.parametrize("sql", ["SET memory_limit = '100GB'", "SET threads = 8",
                                 "SET enable_external_access = true",
                                 "RESET enable_external_access"])
def test_the_connection_settings_are_locked(sql):
    with pytest.raises(duckdb.Error, match="configuration"):
        connect().execute(sql)


def test_the_connection_is_bounded_to_one_thread_and_a_memory_limit(monkeypatch):
    monkeypatch.setenv("H3PIPE_SQL_MEMORY", "300MB")
    con = connect()
    got = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                           "('threads', 'memory_limit', 'enable_external_access')").fetchall())
    assert got["threads"] == "1"
    assert got["enable_external_access"] == "false"
    assert got["memory_limit"] == "286.1 MiB"  # 300e6 bytes
    with pytest.raises(duckdb.OutOfMemoryException):
        con.execute("SELECT length(list(i)) FROM range(100000000) t(i)").fetchall()  # 800 MB


def test_expressions_are_checked_on_many_threads_at_once():
    """h3pipe serve validates the project on its request threads: the one parsing
    connection is shared, and DuckDB refuses a second caller instead of waiting."""
    from concurrent.futures import ThreadPoolExecutor

    from h3pipe.operations.tabular import expression_problems

    good, bad = "a + b * 2", "a +"

    def check(i: int) -> tuple[list[str], list[str]]:
        return (list(expression_problems(good, ["a", "b"])),
                list(expression_problems(bad, ["a", "b"])))

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(check, range(400)))
    assert all(ok == [] and wrong for ok, wrong in found)
