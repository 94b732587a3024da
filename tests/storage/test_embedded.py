"""The embedded store: atomic per-scope replacement and failed runs that change nothing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio

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
