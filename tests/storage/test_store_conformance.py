"""One suite, both stores: every promise of :class:`h3pipe.storage.base.Store` (and of the
run records kept in its catalog) checked the same way on the embedded store and on
PostgreSQL. A test that passes on one and fails on the other is a bug in that store.

Expected rows are written out by hand in each test; the stores' catalogs are read with
``sqlite3`` or ``psycopg`` (:class:`tests.stores.Backend`), not through h3pipe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h3
import pyarrow as pa
import pytest

from h3pipe.errors import StoreError
from h3pipe.storage.catalog import MIGRATIONS_DIR, Tx, now
from h3pipe.storage.runlog import RunLog
from tests.stores import Backend
from tests.waiting import wait_until

# Real cells (PostgreSQL keeps the outline of each cell it publishes): seven neighbours at
# resolution 5, in byte order, and one at resolution 6.
C = sorted(h3.grid_disk(h3.latlng_to_cell(-2.0, 30.0, 5), 1))
C6 = h3.latlng_to_cell(-2.0, 30.0, 6)
SCHEMA = pa.schema([("h3_index", pa.string()), ("mean", pa.float64()), ("n", pa.int64()),
                    ("name", pa.string())])


def rows(*values: tuple) -> pa.Table:
    """A task's rows: (h3_index, mean, n, name) each."""
    return pa.Table.from_pylist([dict(zip(SCHEMA.names, v, strict=True)) for v in values],
                                schema=SCHEMA)


def add_run(store, run_id: str, **extra) -> None:
    values = {"run_id": run_id, "pipeline_id": "p", "pipeline_version": 1,
              "pipeline_hash": "h", "dataset": "d", "scope_key": "k", "scope_label": "k",
              "resolution": 5, "params": "{}", "status": "running", "created_at": now()}
    assert RunLog(store.catalog).insert_run(values | extra)


def publish(store, run_id: str, scope: str, cells: list[tuple[str, float]], *,
            dataset: str = "d", resolution: int = 5) -> int:
    add_run(store, run_id)
    ref = store.write_task_output(run_id, "s", 1, pa.table({
        "h3_index": [c for c, _ in cells], "mean": pa.array([v for _, v in cells],
                                                           pa.float64())}))
    return store.publish(run_id=run_id, dataset=dataset, theme="t", resolution=resolution,
                         scope_key=scope, scope_label=scope.upper(), step_outputs=[([ref],
                                                                                  ["mean"])])


def cells_of(table: pa.Table) -> dict[str, float]:
    return dict(zip(table["h3_index"].to_pylist(), table["mean"].to_pylist(), strict=True))


# -- the store itself ---------------------------------------------------------------------

def test_every_migration_of_its_dialect_is_applied(store_backend: Backend):
    dialect = "sqlite" if store_backend.name == "embedded" else "postgresql"
    # A file of comments only is the other dialect's change, which this one's schema has.
    files = sorted(f.stem for f in MIGRATIONS_DIR.joinpath(dialect).glob("*.sql")
                   if any(ln.strip() and not ln.strip().startswith("--")
                          for ln in f.read_text().splitlines()))
    assert len(files) >= 11
    with store_backend.open() as store:
        assert store.catalog.applied() == files
        assert store.catalog.pending() == []
    recorded = store_backend.sql("SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in recorded] == files


def test_both_catalogs_have_the_same_tables_and_columns(tmp_path, _migrated_database):
    """The same SQL serves both (storage/runlog.py, history.py): so must the tables."""
    import sqlite3

    import psycopg

    from h3pipe.storage import EmbeddedStore

    EmbeddedStore(tmp_path / "st").close()
    db = sqlite3.connect(tmp_path / "st" / "catalog.sqlite")
    sqlite = {t: {c[1] for c in db.execute(f"PRAGMA table_info({t})")} for (t,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{_migrated_database}") as c:
        pg: dict[str, set[str]] = {}
        for table, column in c.execute("SELECT table_name, column_name FROM "
                                       "information_schema.columns WHERE table_schema = "
                                       "'h3pipe'"):
            pg.setdefault(table, set()).add(column)
    assert sorted(sqlite) == sorted(pg)
    assert {"runs", "steps", "tasks", "events", "intermediates", "results",
            "queue_runs"} <= set(pg)
    assert {t: sorted(cols) for t, cols in sqlite.items()} == {
        t: sorted(cols) for t, cols in pg.items()}


def test_its_location_never_shows_a_password(store_backend: Backend):
    with store_backend.open() as store:
        assert "s3cret-pw" not in store.location
        if store_backend.name == "embedded":
            assert store.location == store_backend.location
        else:
            assert store.location.endswith(store_backend.location.rsplit("/", 1)[1])


def _held(backend: Backend) -> int:
    """Connections this process holds to the backend's catalog."""
    if backend.name == "embedded":
        catalog = str(Path(backend.location, "catalog.sqlite"))
        return sum(1 for fd in os.listdir("/proc/self/fd")
                   if _target(f"/proc/self/fd/{fd}") == catalog)
    (n,) = backend.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND pid != pg_backend_pid()")[0]
    return int(n)


def _target(link: str) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def test_leaving_its_block_releases_the_catalog_even_on_an_error(store_backend: Backend):
    # A server notices a closed connection a moment later: released within a deadline
    # (a store that kept its pool would hold it for ever).
    with store_backend.open() as store:
        add_run(store, "r1")
        assert _held(store_backend) >= 1  # the probe sees connections when there are some
    wait_until(lambda: _held(store_backend) == 0, 10, "the connections to close")
    with pytest.raises(RuntimeError), store_backend.open() as store:
        assert RunLog(store.catalog).run("r1")["status"] == "running"
        raise RuntimeError("the command failed")
    wait_until(lambda: _held(store_backend) == 0, 10, "the connections to close")


# -- task outputs -------------------------------------------------------------------------

def test_a_task_output_comes_back_as_written(store_backend: Backend):
    table = rows(("8a", 1.5, 3, "x"), ("8b", None, None, None), ("8c", -0.25, 2**40, "é,\""))
    with store_backend.open() as store:
        ref = store.write_task_output("r1", "s", 1, table)
        assert isinstance(ref, str) and store.output_exists(ref)
        back = store.read_outputs([ref])
    assert back.schema == SCHEMA
    assert back.to_pylist() == table.to_pylist()


def test_a_task_written_again_replaces_its_own_rows_only(store_backend: Backend):
    with store_backend.open() as store:
        one = store.write_task_output("r1", "s", 1, rows(("8a", 1.0, 1, "a"), ("8b", 2.0, 2, "b")))
        two = store.write_task_output("r1", "s", 2, rows(("8c", 3.0, 3, "c")))
        again = store.write_task_output("r1", "s", 1, rows(("8z", 9.0, 9, "z")))
        assert again == one
        assert store.read_outputs([one, two]).to_pylist() == rows(
            ("8z", 9.0, 9, "z"), ("8c", 3.0, 3, "c")).to_pylist()


def test_outputs_come_back_in_the_order_of_their_references(store_backend: Backend):
    with store_backend.open() as store:
        a1 = store.write_task_output("r1", "a", 1, rows(("1", 1.0, 1, "a1")))
        a2 = store.write_task_output("r1", "a", 2, rows(("2", 2.0, 2, "a2")))
        b1 = store.write_task_output("r1", "b", 1, rows(("3", 3.0, 3, "b1")))
        back = store.read_outputs([a2, b1, a1], skip=("name", "n"))
        assert back.schema.names == ["h3_index", "mean"]
        assert back.to_pylist() == [{"h3_index": "2", "mean": 2.0},
                                    {"h3_index": "3", "mean": 3.0},
                                    {"h3_index": "1", "mean": 1.0}]
        assert store.read_outputs([]).num_rows == 0


def test_a_task_without_rows_has_an_output_all_the_same(store_backend: Backend):
    """A resume keeps a completed task whose output exists: one that found nothing must
    not be computed again for want of rows."""
    with store_backend.open() as store:
        empty = store.write_task_output("r1", "s", 1, rows())
        full = store.write_task_output("r1", "s", 2, rows(("8a", 1.0, 1, "a")))
        assert store.output_exists(empty) and store.output_exists(full)
        assert store.read_outputs([empty]).num_rows == 0
        assert store.read_outputs([empty, full, empty]).to_pylist() == rows(
            ("8a", 1.0, 1, "a")).to_pylist()
        store.write_task_output("r1", "s", 2, rows())  # rows gone on a retry: still there
        assert store.output_exists(full) and store.read_outputs([full]).num_rows == 0


def test_an_output_kept_as_parquet_is_an_output_like_any(store_backend: Backend):
    table = rows(("8a", 1.5, 3, "x"))
    with store_backend.open() as store:
        ref = store.write_task_output("r1", "s", 1, table, "parquet")
        assert store.output_exists(ref)
        assert store.read_outputs([ref]).to_pylist() == table.to_pylist()
        store.drop_intermediate(store.intermediate_location("r1", "s", "parquet"))
        assert not store.output_exists(ref)


def test_a_commit_is_recorded_with_its_rows(store_backend: Backend):
    seen: list[str] = []

    def record(tx: Tx, ref: str) -> bool:
        seen.append(ref)
        tx.execute("INSERT INTO events (run_id, at, kind, subject, status) VALUES "
                   "('r1', :at, 'task', 's#1', 'completed')", {"at": now()})
        return True

    with store_backend.open() as store:
        add_run(store, "r1")
        ref = store.commit_task_output("r1", "s", 1, rows(("8a", 1.0, 1, "a")), record=record)
        assert seen == [ref] and store.output_exists(ref)
        assert store.read_outputs([ref]).to_pylist() == rows(("8a", 1.0, 1, "a")).to_pylist()
    assert store_backend.sql("SELECT subject, status FROM events") == [("s#1", "completed")]


def test_a_commit_its_record_refuses_keeps_nothing(store_backend: Backend):
    """Another delivery of the task completed it first: neither these rows nor what the
    record wrote before it said no may stay."""
    def refuse(tx: Tx, ref: str) -> bool:
        tx.execute("INSERT INTO events (run_id, at, kind, subject, status) VALUES "
                   "('r1', :at, 'task', 's#1', 'completed')", {"at": now()})
        return False

    first = rows(("8a", 1.0, 1, "first"))
    with store_backend.open() as store:
        add_run(store, "r1")
        ref = store.write_task_output("r1", "s", 1, first)
        assert store.commit_task_output("r1", "s", 1, rows(("8b", 2.0, 2, "late")),
                                        record=refuse) is None
        assert store.read_outputs([ref]).to_pylist() == first.to_pylist()
        assert store.commit_task_output("r1", "s", 2, rows(("8c", 3.0, 3, "late")),
                                        record=refuse) is None
        assert store.read_outputs([ref]).to_pylist() == first.to_pylist()
    assert store_backend.sql("SELECT count(*) FROM events") == [(0,)]


def test_reading_an_output_that_is_gone_is_a_store_error(store_backend: Backend):
    with store_backend.open() as store:
        ref = store.write_task_output("r1", "s", 1, rows(("8a", 1.0, 1, "a")))
        store.drop_intermediate(store.intermediate_location("r1", "s"))
        assert not store.output_exists(ref)
        with pytest.raises(StoreError, match="r1"):
            store.read_outputs([ref])


def test_dropping_an_intermediate_drops_that_steps_outputs_only(store_backend: Backend):
    with store_backend.open() as store:
        a = [store.write_task_output("r1", "a", n, rows((str(n), 1.0, n, "a"))) for n in (1, 2)]
        b = store.write_task_output("r1", "b", 1, rows(("9", 9.0, 9, "b")))
        other = store.write_task_output("r2", "a", 1, rows(("7", 7.0, 7, "r2")))
        store.drop_intermediate(store.intermediate_location("r1", "a"))
        assert [store.output_exists(r) for r in (*a, b, other)] == [False, False, True, True]
        assert store.read_outputs([b, other])["name"].to_pylist() == ["b", "r2"]
        store.drop_intermediate(store.intermediate_location("r1", "a"))  # twice: no error


# Run ids that share a prefix, hold LIKE's wildcards, or are longer than a PostgreSQL
# name: dropping one run's scratch must leave every other's.
RUNS = ["r1", "r10", "p_x-r5-abc", "pAx-r5-abc",
        "a_pipeline_id_that_is_long_but_allowed_by_the_schema-r5-0123456789ab",
        "a_pipeline_id_that_is_long_but_allowed_by_the_schema-r6-0123456789ab"]


def test_scratch_lists_every_runs_intermediates_and_drops_one_runs(store_backend: Backend):
    with store_backend.open() as store:
        refs = {}
        for run in RUNS:
            refs[run] = [store.write_task_output(run, "stats", 1, rows(("1", 1.0, 1, run))),
                         store.write_task_output(run, "joined", 1, rows(("2", 2.0, 2, run)),
                                                 "parquet")]
        expected = {run: sorted([store.intermediate_location(run, "stats"),
                                 store.intermediate_location(run, "joined", "parquet")])
                    for run in RUNS}
        assert {r: sorted(locs) for r, locs in store.scratch_runs().items()} == expected
        for gone in (RUNS[0], RUNS[2], RUNS[4]):
            store.drop_scratch(gone)
            del expected[gone]
            assert {r: sorted(locs) for r, locs in store.scratch_runs().items()} == expected
            assert not any(store.output_exists(ref) for ref in refs[gone])
        for run in expected:
            assert store.read_outputs(refs[run])["name"].to_pylist() == [run, run]


# -- results ------------------------------------------------------------------------------

def test_publishing_makes_one_entry_and_its_rows(store_backend: Backend):
    with store_backend.open() as store:
        add_run(store, "r1")
        t1 = store.write_task_output("r1", "s", 1, rows((C[1], 2.0, 1, "x"), (C[0], 1.0, 1, "y")))
        t2 = store.write_task_output("r1", "s", 2, rows((C[2], None, 0, "z")))
        t3 = store.write_task_output("r1", "s", 3, rows())  # a task that found nothing
        assert store.publish(run_id="r1", dataset="d", theme="t", resolution=5,
                             scope_key="iso3=RWA", scope_label="RWA (Rwanda)",
                             step_outputs=[([t1, t3, t2], ["mean", "n"])]) == 3
        [entry] = store.result_entries("d")
        assert {k: entry[k] for k in ("dataset", "resolution", "scope_key", "scope_label",
                                      "theme", "run_id", "rows")} == {
            "dataset": "d", "resolution": 5, "scope_key": "iso3=RWA",
            "scope_label": "RWA (Rwanda)", "theme": "t", "run_id": "r1", "rows": 3}
        assert json.loads(entry["columns"]) == ["mean", "n"]
        table = store.read_results([entry])
    assert table.schema == pa.schema([("h3_index", pa.string()), ("resolution", pa.int8()),
                                      ("mean", pa.float64()), ("n", pa.int64())])
    assert table.to_pylist() == [  # in cell order, each once
        {"h3_index": C[0], "resolution": 5, "mean": 1.0, "n": 1},
        {"h3_index": C[1], "resolution": 5, "mean": 2.0, "n": 1},
        {"h3_index": C[2], "resolution": 5, "mean": None, "n": 0}]


def test_publishing_a_scope_again_replaces_its_rows(store_backend: Backend):
    with store_backend.open() as store:
        assert publish(store, "r1", "a", [(C[0], 1.0), (C[1], 2.0)]) == 2
        assert publish(store, "r2", "a", [(C[0], 5.0)]) == 1
        entries = store.result_entries("d")
        assert [(e["run_id"], e["rows"]) for e in entries] == [("r2", 1)]
        assert cells_of(store.read_results(entries)) == {C[0]: 5.0}


def test_a_cell_in_overlapping_scopes_keeps_its_newest_row(store_backend: Backend):
    with store_backend.open() as store:
        publish(store, "r1", "a", [(C[0], 1.0), (C[1], 2.0)])
        publish(store, "r2", "b", [(C[1], 9.0), (C[2], 3.0)])
        assert cells_of(store.read_results(store.result_entries("d"))) == {
            C[0]: 1.0, C[1]: 9.0, C[2]: 3.0}
        assert cells_of(store.read_results(store.result_entries("d", scope_key="a"))) == {
            C[0]: 1.0, C[1]: 2.0}


def test_entries_are_found_by_dataset_resolution_and_scope(store_backend: Backend):
    with store_backend.open() as store:
        publish(store, "r1", "a", [(C[0], 1.0)])
        publish(store, "r2", "b", [(C[1], 1.0)])
        publish(store, "r3", "a", [(C6, 1.0)], resolution=6)
        publish(store, "r4", "a", [(C[3], 1.0)], dataset="e")
        found = {(d, r, s): sorted(e["run_id"] for e in store.result_entries(d, r, s))
                 for d, r, s in [("d", None, None), ("d", 5, None), ("d", None, "a"),
                                 ("d", 6, "a"), ("e", None, None), (None, None, None),
                                 ("x", None, None)]}
        assert found == {("d", None, None): ["r1", "r2", "r3"], ("d", 5, None): ["r1", "r2"],
                         ("d", None, "a"): ["r1", "r3"], ("d", 6, "a"): ["r3"],
                         ("e", None, None): ["r4"], (None, None, None): ["r1", "r2", "r3", "r4"],
                         ("x", None, None): []}
        both = store.read_results(store.result_entries("d", scope_key="a"))
        assert list(zip(both["h3_index"].to_pylist(), both["resolution"].to_pylist(),
                        strict=True)) == [(C[0], 5), (C6, 6)]


def test_no_entries_read_as_no_rows(store_backend: Backend):
    with store_backend.open() as store:
        table = store.read_results([])
    assert table.num_rows == 0
    assert table.schema.names == ["h3_index", "resolution"]


def test_joined_steps_keep_cells_only_a_later_step_has(store_backend: Backend):
    with store_backend.open() as store:
        add_run(store, "r1")
        a = store.write_task_output("r1", "a", 1, pa.table({"h3_index": [C[0], C[1]],
                                                            "mean": [1.0, 2.0]}))
        b = store.write_task_output("r1", "b", 1, pa.table({"h3_index": [C[1], C[2]],
                                                            "total": [5.0, 7.0]}))
        assert store.publish(run_id="r1", dataset="d", theme="t", resolution=5, scope_key="k",
                             scope_label="k", step_outputs=[([a], ["mean"]),
                                                            ([b], ["total"])]) == 3
        got = store.read_results(store.result_entries("d"))
    assert [(r["h3_index"], r["mean"], r["total"]) for r in got.to_pylist()] == [
        (C[0], 1.0, None), (C[1], 2.0, 5.0), (C[2], None, 7.0)]


def test_a_sweep_keeps_the_scenarios_it_did_not_compute_again(store_backend: Backend):
    layout = {"keys": ["scenario"], "scenarios": {"a": "fa", "b": "fb"}}

    def sweep(store, run_id: str, values: list[tuple[str, str, float]], keep=None) -> int:
        add_run(store, run_id)
        ref = store.write_task_output(run_id, "s", 1, pa.table({
            "h3_index": [c for c, _, _ in values], "scenario": [s for _, s, _ in values],
            "mean": [v for _, _, v in values]}))
        return store.publish(run_id=run_id, dataset="d", theme="t", resolution=5,
                             scope_key="k", scope_label="k",
                             step_outputs=[([ref], ["scenario", "mean"])], layout=layout,
                             keep=keep)

    with store_backend.open() as store:
        assert sweep(store, "r1", [(C[0], "a", 1.0), (C[0], "b", 2.0), (C[1], "a", 3.0),
                                   (C[1], "b", 4.0)]) == 4
        assert sweep(store, "r2", [(C[0], "b", 20.0), (C[1], "b", 40.0)], keep=["a"]) == 4
        got = store.read_results(store.result_entries("d"))
    assert sorted((r["h3_index"], r["scenario"], r["mean"]) for r in got.to_pylist()) == [
        (C[0], "a", 1.0), (C[0], "b", 20.0), (C[1], "a", 3.0), (C[1], "b", 40.0)]


def test_a_step_without_rows_publishes_an_empty_scope(store_backend: Backend):
    with store_backend.open() as store:
        publish(store, "r1", "a", [(C[0], 1.0)])
        assert publish(store, "r2", "a", []) == 0
        [entry] = store.result_entries("d")
        assert (entry["run_id"], entry["rows"]) == ("r2", 0)
        assert store.read_results([entry]).num_rows == 0


# -- the run records in its catalog ---------------------------------------------------------

def test_a_run_row_is_claimed_once_and_taken_over_by_compare_and_swap(store_backend: Backend):
    with store_backend.open() as store:
        log = RunLog(store.catalog)
        add_run(store, "r1", pid=11, host="h1")
        assert not log.insert_run({"run_id": "r1", "pipeline_id": "p", "pipeline_version": 1,
                                   "pipeline_hash": "h", "dataset": "d", "scope_key": "k",
                                   "scope_label": "k", "resolution": 5, "params": "{}",
                                   "status": "running", "created_at": now()})
        seen = log.run("r1")
        assert (seen["status"], seen["pid"], seen["host"]) == ("running", 11, "h1")
        mine = {"status": "running", "pid": 22, "host": "h2", "started_at": now(),
                "heartbeat_at": now()}
        assert log.take_over("r1", seen, mine, '{"x": 1}')
        assert not log.take_over("r1", seen, mine | {"pid": 33}, "{}")  # seen is stale now
        row = log.run("r1")
        assert (row["pid"], row["host"], row["params"]) == (22, "h2", '{"x": 1}')
        before = row["heartbeat_at"]
        log.beat("r1")
        assert log.run("r1")["heartbeat_at"] >= before
        assert log.running_runs() == [{"run_id": "r1", "pid": 22, "host": "h2"}]
        log.add_params("r1", measured=2.5)
        log.finish("r1", "failed", "no luck with postgresql://u:s3cret-pw@db/x")
        row = log.run("r1")
        assert json.loads(row["params"]) == {"x": 1, "measured": 2.5}
        assert row["status"] == "failed" and row["finished_at"] >= row["started_at"]
        assert "s3cret-pw" not in row["error"] and "no luck" in row["error"]
        assert log.statuses() == {"r1": "failed"} and log.running_runs() == []
        with pytest.raises(StoreError):
            log.finish("nope", "failed")  # a change that touches no row is an error


def test_steps_and_tasks_record_a_runs_progress(store_backend: Backend):
    from h3pipe.storage.runlog import TaskKey

    with store_backend.open() as store:
        log = RunLog(store.catalog)
        add_run(store, "r1")
        log.record_setup("r1", steps=[{"step_id": "a", "stage": 1, "operation": "zonal_stats",
                                       "status": "pending"},
                                      {"step_id": "b", "stage": 2, "operation": "filter",
                                       "status": "pending"}],
                         items=[{"source_id": "s", "item_id": "i1", "href": "https://x/1"}],
                         pipeline={"id": "p", "hash": "h", "version": 1, "file": "p.yaml",
                                   "document": "{}"},
                         intermediates=[{"step_id": "a", "location": "L", "policy": "on_success",
                                         "ttl_hours": None, "created_at": now()}])
        log.step_started("r1", "a", tasks=3, rows_in=30)
        log.add_tasks("r1", [("a", 1, 10), ("a", 2, 10), ("a", 3, 10)])
        log.task_completed(TaskKey("r1", "a", 1), seconds=1.5, rows=10, output="o1",
                           tile_seconds={"t.tif": 0.5}, started=1_700_000_000.0, worker="w1",
                           null_rows=2)
        log.task_completed(TaskKey("r1", "a", 2), seconds=0.5, rows=9, output="o2",
                           tile_seconds=None, null_rows=1)
        log.task_retrying(TaskKey("r1", "a", 3), 1, "timeout")
        log.task_failed(TaskKey("r1", "a", 3), 2.0, "gone")
        assert sorted((t["task_no"], t["output_path"], t["rows_out"])
                      for t in log.completed_tasks("r1")) == [(1, "o1", 10), (2, "o2", 9)]
        assert log.null_rows("r1") == {"a": (3, 19)}
        assert log.tasks_left("r1") == 1
        log.step_progress("r1", "a", tasks_done=2, rows_out=19)
        log.steps_interrupted("r1")  # a's failure ended it; nothing is running any more
        steps = store_backend.sql("SELECT step_id, status, tasks_total, tasks_done, rows_in, "
                                  "rows_out FROM steps ORDER BY step_id")
        assert steps == [("a", "failed", 3, 2, 30, 19), ("b", "pending", 0, 0, 0, 0)]
        assert store_backend.sql("SELECT attempts, error FROM tasks WHERE task_no = 3") == [
            (2, "gone")]

        log.forget("r1", everything=False, steps=[])  # a resume keeps completed tasks
        assert store_backend.sql("SELECT step_id, task_no FROM tasks ORDER BY task_no") == [
            ("a", 1), ("a", 2)]
        assert {s for (s,) in store_backend.sql("SELECT status FROM steps")} == {"pending"}
        log.forget("r1", everything=True, steps=[])
        assert store_backend.sql("SELECT count(*) FROM tasks") == [(0,)]

        assert [r["location"] for r in log.open_intermediates("r1")] == ["L"]
        log.intermediate_dropped("r1", "a")
        assert log.open_intermediates() == []
        log.record_setup("r1", steps=[], items=[], pipeline={
            "id": "p", "hash": "h", "version": 1, "file": "p.yaml", "document": "{}"},
            intermediates=[])  # run again: its intermediates are open again
        assert [r["location"] for r in log.open_intermediates("r1")] == ["L"]


def test_the_run_commands_read_what_runs_recorded(store_backend: Backend):
    from h3pipe.storage import history

    with store_backend.open() as store:
        log = RunLog(store.catalog)
        for n, run in enumerate(["p_1-r5-aa", "pX1-r5-bb", "q-r5-cc"]):
            add_run(store, run, pipeline_id=run.split("-")[0],
                    created_at=f"2026-01-0{n + 1}T00:00:00.000+00:00")
        catalog = store.catalog
        assert [r["run_id"] for r in history.recent_runs(catalog, limit=2)] == [
            "q-r5-cc", "pX1-r5-bb"]
        assert [r["run_id"] for r in history.recent_runs(catalog, limit=9, pipeline="p_1")] == [
            "p_1-r5-aa"]
        assert history.latest_run(catalog)["run_id"] == "q-r5-cc"
        assert history.find_run(catalog, "p_1-r5-aa")["pipeline_id"] == "p_1"
        assert history.find_run(catalog, "p_1") is None
        # '_' is a character here, not LIKE's wildcard.
        assert [r["run_id"] for r in history.runs_with_prefix(catalog, "p_")] == ["p_1-r5-aa"]
        assert [r["run_id"] for r in history.runs_with_prefix(catalog, "p")] == [
            "pX1-r5-bb", "p_1-r5-aa"]

        log.record_setup("q-r5-cc", steps=[{"step_id": "s", "stage": 1, "operation": "op",
                                            "status": "pending"}], items=[],
                         pipeline={"id": "q", "hash": "h", "version": 1, "file": "q.yaml",
                                   "document": '{"id": "q"}'}, intermediates=[])
        log.add_tasks("q-r5-cc", [("s", 1, 5), ("s", 2, 5), ("s", 3, 5)])
        from h3pipe.storage.runlog import TaskKey

        log.task_completed(TaskKey("q-r5-cc", "s", 2), seconds=3.0, rows=5, output="o",
                           tile_seconds=None, started=1_700_000_100.0, worker="w")
        log.task_completed(TaskKey("q-r5-cc", "s", 3), seconds=1.0, rows=5, output="o",
                           tile_seconds={"a.tif": 1.0}, started=1_700_000_000.0, worker="w")
        spans = history.task_spans(catalog, "q-r5-cc")
        assert [t["task_no"] for t in spans] == [3, 2, 1]  # by start; never started last
        seen = history.run_history(catalog, "q-r5-cc")
        assert [s["step_id"] for s in seen.steps] == ["s"]
        assert [t["task_no"] for t in seen.slowest_tasks] == [2, 3]
        assert seen.tile_seconds == ['{"a.tif": 1.0}'] and seen.task_events == 2
        assert history.pipeline_document(catalog, "q", "h") == {"id": "q"}

        assert not log.cancel_requested("q-r5-cc")
        history.request_cancel(catalog, "q-r5-cc")
        assert log.cancel_requested("q-r5-cc")
        assert [(e["kind"], e["status"]) for e in history.run_history(
            catalog, "q-r5-cc").events] == [("run", "cancel requested")]
