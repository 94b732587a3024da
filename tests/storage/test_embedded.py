"""The embedded store: atomic per-scope replacement and failed runs that change nothing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from h3pipe.errors import StoreError
from h3pipe.storage import EmbeddedStore
from h3pipe.storage.catalog import now
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline


def _fake_run(store, run_id):
    store.catalog.insert("runs", run_id=run_id, pipeline_id="p", pipeline_version=1,
                         pipeline_hash="h", dataset="d", scope_key="k", scope_label="k",
                         resolution=5, params="{}", status="running", created_at=now())


def _publish(store, run_id, scope, rows):
    _fake_run(store, run_id)
    path = store.task_output_path(run_id, "s", 1)
    store.write_table(pa.table({"h3_index": [r[0] for r in rows],
                                "mean": [r[1] for r in rows]}), path)
    return store.publish(run_id=run_id, dataset="d", theme="t", resolution=5, scope_key=scope,
                         scope_label=scope, step_outputs=[([path], ["mean"])])


def test_republishing_a_scope_replaces_its_rows_and_file(tmp_path):
    store = EmbeddedStore(tmp_path / "st")
    assert _publish(store, "r1", "a", [("85", 1.0), ("86", 2.0)]) == 2
    assert _publish(store, "r2", "a", [("85", 5.0)]) == 1
    entries = store.result_entries("d")
    assert [e["run_id"] for e in entries] == ["r2"]
    assert store.read_results(entries).to_pylist() == [
        {"h3_index": "85", "resolution": 5, "mean": 5.0}]
    files = list((tmp_path / "st" / "results").rglob("*.parquet"))
    assert [f.name for f in files] == ["r2.parquet"]
    meta = json.loads(pq.read_schema(files[0]).metadata[b"h3pipe"])
    assert meta["run_id"] == "r2" and meta["dataset"] == "d"


def test_a_result_is_written_a_row_group_at_a_time_in_task_order(tmp_path, monkeypatch):
    from h3pipe.storage import embedded

    monkeypatch.setattr(embedded, "_ROW_GROUP", 4)
    store = EmbeddedStore(tmp_path / "st")
    _fake_run(store, "r1")
    tasks = [[(f"8{t}{i}", float(t * 10 + i)) for i in range(3)] for t in range(5)]
    tasks[2] = [("8x", None)]  # a task whose values are all null
    paths = []
    for n, rows in enumerate(tasks, 1):
        path = store.task_output_path("r1", "s", n)
        store.write_table(pa.table({"h3_index": [r[0] for r in rows],
                                    "mean": pa.array([r[1] for r in rows], pa.float64()),
                                    "extra": ["dropped"] * len(rows)}), path)
        paths.append(path)
    assert store.publish(run_id="r1", dataset="d", theme="t", resolution=5, scope_key="k",
                         scope_label="k", step_outputs=[(paths, ["mean"])]) == 13
    [file] = (tmp_path / "st" / "results").rglob("*.parquet")
    meta = pq.ParquetFile(file)
    assert meta.num_row_groups == 3  # tasks of 3+3 | 1+3 | 3 rows: groups of 4 or more
    assert meta.schema_arrow.names == ["h3_index", "resolution", "mean"]
    assert pq.read_table(file).to_pylist() == [
        {"h3_index": c, "resolution": 5, "mean": v} for rows in tasks for c, v in rows]


def test_joined_steps_keep_cells_only_a_later_step_has(tmp_path):
    store = EmbeddedStore(tmp_path / "st")
    _fake_run(store, "r1")
    a, b = store.task_output_path("r1", "a", 1), store.task_output_path("r1", "b", 1)
    store.write_table(pa.table({"h3_index": ["85", "86"], "mean": [1.0, 2.0]}), a)
    store.write_table(pa.table({"h3_index": ["86", "87"], "n": [5.0, 7.0]}), b)
    assert store.publish(run_id="r1", dataset="d", theme="t", resolution=5, scope_key="k",
                         scope_label="k", step_outputs=[([a], ["mean"]), ([b], ["n"])]) == 3
    rows = store.read_results(store.result_entries("d")).to_pylist()
    assert [(r["h3_index"], r["mean"], r["n"]) for r in rows] == [
        ("85", 1.0, None), ("86", 2.0, 5.0), ("87", None, 7.0)]


def test_overlapping_scopes_keep_the_newest_row_per_cell(tmp_path):
    store = EmbeddedStore(tmp_path / "st")
    _publish(store, "r1", "a", [("85", 1.0), ("86", 2.0)])
    _publish(store, "r2", "b", [("86", 9.0), ("87", 3.0)])
    rows = store.read_results(store.result_entries("d")).to_pylist()
    assert {r["h3_index"]: r["mean"] for r in rows} == {"85": 1.0, "86": 9.0, "87": 3.0}


def test_a_failed_run_leaves_earlier_results_untouched(tmp_path, cli):
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 100, (400, 400)).astype("float32")
    good = write_raster(tmp_path / "good.tif", data, west=29.0, north=-1.9, res=0.0005)
    target = tmp_path / "data.tif"
    target.write_bytes(good.read_bytes())
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", str(target))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"])})
    bbox = "29.02,-2.08,29.18,-1.92"
    assert cli("--project", proj, "run", "p", "--bbox", bbox, "--workers", "1").exit_code == 0
    before = tmp_path / "before.parquet"
    assert cli("--project", proj, "export", "ds", "-o", before).exit_code == 0

    # A COG whose header is intact but whose pixel blocks are cut off: it opens, then fails
    # when a task reads it, in the middle of the run.
    cog = tmp_path / "cog.tif"
    with rasterio.open(good) as src:
        profile = src.profile | {"driver": "COG", "compress": "deflate", "blocksize": 128}
        with rasterio.open(cog, "w", **profile) as dst:
            dst.write(src.read())
    target.write_bytes(cog.read_bytes()[: cog.stat().st_size // 3])
    r = cli("--project", proj, "run", "p", "--bbox", bbox, "--workers", "1")
    assert r.exit_code == 1, r.stderr
    # Progress lines come first (stderr is not a terminal); the error is the last line.
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("error: run ") and "data.tif" in error and "runs show" in error
    assert "Traceback" not in r.stderr

    after = tmp_path / "after.parquet"
    assert cli("--project", proj, "export", "ds", "-o", after).exit_code == 0
    assert pq.read_table(after).equals(pq.read_table(before))
    listing = cli("--project", proj, "runs", "list").stdout
    assert "failed" in listing and "completed" in listing
    shown = cli("--project", proj, "runs", "show", "latest").stdout
    assert "first failure:        stats: " in shown and "data.tif" in shown


def test_upgrading_an_older_catalog_keeps_its_runs_and_allows_interrupted(tmp_path):
    """0008 rebuilds 'runs' and 'steps' (SQLite cannot change a CHECK in place): every row,
    and every reference to them, survives; the new status is accepted afterwards."""
    import sqlite3

    from h3pipe.storage.catalog import MIGRATIONS_DIR, Catalog

    path = tmp_path / "catalog.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_at TEXT)")
    for f in sorted(MIGRATIONS_DIR.joinpath("sqlite").glob("*.sql")):
        if f.stem >= "0008":
            break
        db.executescript(f.read_text())
        db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (f.stem,))
    db.execute("INSERT INTO runs (run_id, pipeline_id, pipeline_version, pipeline_hash, "
               "dataset, scope_key, scope_label, resolution, params, status, created_at, "
               "heartbeat_at, cancel_requested_at) VALUES ('r1', 'p', 1, 'h', 'ds', 'k', "
               "'bbox', 6, '{}', 'failed', 't0', 'hb', 'cx')")
    db.execute("INSERT INTO steps (run_id, step_id, stage, operation, status, tasks_total) "
               "VALUES ('r1', 's', 1, 'zonal_stats', 'failed', 3)")
    db.execute("INSERT INTO tasks (run_id, step_id, task_no, status, attempts) "
               "VALUES ('r1', 's', 1, 'completed', 2)")
    db.execute("INSERT INTO events (run_id, at, kind, subject, status) "
               "VALUES ('r1', 't0', 'run', 'r1', 'failed')")
    db.commit()
    db.close()

    catalog = Catalog(f"sqlite:///{path}")
    try:
        assert "0008_interrupted" in catalog.applied()
        run = catalog.query("SELECT * FROM runs")[0]
        assert (run["run_id"], run["status"], run["heartbeat_at"],
                run["cancel_requested_at"]) == ("r1", "failed", "hb", "cx")
        assert catalog.query("SELECT tasks_total FROM steps")[0]["tasks_total"] == 3
        assert catalog.query("SELECT attempts, tile_seconds FROM tasks")[0] == {
            "attempts": 2, "tile_seconds": None}
        catalog.update("runs", {"run_id": "r1"}, status="interrupted")
        catalog.update("steps", {"run_id": "r1", "step_id": "s"}, status="interrupted")
        with pytest.raises(StoreError):  # the constraint is still there
            catalog.update("runs", {"run_id": "r1"}, status="halfway")
        # References still point at the rebuilt tables, and are still enforced.
        with pytest.raises(StoreError):
            catalog.insert("steps", run_id="nope", step_id="s", stage=1,
                           operation="zonal_stats", status="pending")
    finally:
        catalog.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
