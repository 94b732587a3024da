"""h3pipe.Project, the documented API, used as a notebook or an orchestrator would: plan,
run, read, export and the records, with no CLI. Expected numbers are independent: the
cells from h3-py's own polyfill of the box, the statistics from exactextract called
directly on h3-py's cell polygons (tests/zonal_reference.py)."""

from __future__ import annotations

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

import h3pipe
from h3pipe.errors import ConfigError, H3PipeError, UsageError
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.zonal_reference import assert_same, reference

BOX = (29.02, -2.18, 29.18, -2.02)
SCOPE = "bbox:" + ",".join(map(str, BOX))
STATS = ["count", "mean", "min", "max"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A project with one raster and one zonal pipeline, run once through the API."""
    root = tmp_path_factory.mktemp("api")
    data = np.random.default_rng(27).normal(1500, 200, (250, 250)).astype("float32")
    tif = write_raster(root / "dem.tif", data, west=29.0, north=-1.95, res=0.001)
    proj = write_project(root / "proj", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", STATS, resolution=7)})
    project = h3pipe.Project(proj)
    forecast = project.plan("p", SCOPE, resolution=8)
    result = project.run("p", SCOPE, resolution=8)
    return project, tif, forecast, result


def _polyfill(resolution: int) -> set[str]:
    west, south, east, north = BOX
    box = h3.LatLngPoly([(south, west), (south, east), (north, east), (north, west)])
    return set(h3.h3shape_to_cells(box, resolution))


def test_plan_names_the_run_that_run_then_runs(made):
    _, _, forecast, result = made
    assert isinstance(result, h3pipe.api.RunResult)
    assert forecast.plan.run_id == result.run_id and forecast.outlook.status == "new"
    assert (result.dataset, result.resolution, result.state) == ("ds", 8, "completed")
    assert result.cells == len(_polyfill(8)) > 100


def test_a_dataset_reads_back_what_exactextract_computes_on_the_same_cells(made):
    project, tif, _, result = made
    table = project.dataset("ds", scope=SCOPE, resolution=8)
    assert table.column_names == ["h3_index", "resolution", *STATS]
    rows = {r["h3_index"]: r for r in table.to_pylist()}
    assert set(rows) == _polyfill(8)
    with rasterio.open(tif) as ds:
        expected = reference(ds, list(rows), STATS)
    assert_same(rows, expected, STATS)
    # the same rows by the run that published them, and as pandas
    by_run = project.dataset("ds", run=result.run_id)
    assert by_run.sort_by("h3_index").equals(table.sort_by("h3_index"))
    frame = project.dataset("ds", scope=SCOPE, resolution=8, as_="pandas")
    assert sorted(frame["h3_index"]) == sorted(rows)


def test_geopandas_rows_carry_the_cells_own_outlines(made):
    project, _, _, _ = made
    frame = project.dataset("ds", scope=SCOPE, resolution=8, as_="geopandas")
    assert str(frame.crs) == "EPSG:4326"
    for cell, shape in zip(frame["h3_index"][:20], frame.geometry[:20], strict=True):
        ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
        assert shape.geom_type == "Polygon"
        got = np.array(sorted(shape.exterior.coords[:-1]))
        assert got == pytest.approx(np.array(sorted(ring)), abs=1e-9)


def test_export_writes_the_rows_dataset_reads(made, tmp_path):
    project, _, _, _ = made
    out = tmp_path / "ds.parquet"
    assert project.export("ds", out, scope=SCOPE, resolution=8) == len(_polyfill(8))
    written = pq.read_table(out)
    table = project.dataset("ds", scope=SCOPE, resolution=8)
    assert written.sort_by("h3_index").select(table.column_names).equals(
        table.sort_by("h3_index"))


def test_runs_and_their_records_are_typed(made):
    project, _, _, result = made
    listed = project.runs(pipeline="p")
    assert [r.run_id for r in listed] == [result.run_id]
    assert listed[0].status == "completed" and listed[0].resolution == 8
    assert listed[0].params.scope == {"kind": "bbox", "argument": SCOPE[5:],
                                      "key": listed[0]["scope_key"],
                                      "label": listed[0]["scope_label"],
                                      "bounds": listed[0].params.scope["bounds"]}
    doc = project.run_results("latest")
    assert doc["run"]["run_id"] == result.run_id and doc["run"]["status"] == "completed"
    assert sum(s["rows_out"] for s in doc["steps"]) == result.rows == result.cells


def test_the_same_run_again_is_reported_not_recomputed(made):
    project, _, _, result = made
    again = project.run("p", h3pipe.ScopeRef("bbox", SCOPE[5:]), resolution=8)
    assert (again.run_id, again.state) == (result.run_id, "already")


def test_errors_carry_the_cli_exit_codes(made):
    project, _, _, _ = made
    with pytest.raises(ConfigError) as unknown:
        project.run("nope", SCOPE, resolution=8)
    assert unknown.value.exit_code == 2 and "nope" in unknown.value.message
    with pytest.raises(UsageError, match="is not iso3:CODE, bbox:W,S,E,N or aoi:PATH"):
        project.plan("p", "somewhere", resolution=8)
    with pytest.raises(H3PipeError, match="outside 0..15"):
        project.plan("p", SCOPE, resolution=16)


def test_a_project_reads_its_files_once_until_one_changes(made):
    project, _, _, _ = made
    first = project.load()
    assert project.load() is first  # read once: -r 4-9 validated the project 8 times
    pipeline = project.root / "pipelines" / "p.yaml"
    pipeline.write_text(pipeline.read_text().replace("resolution: 7", "resolution: 6"))
    try:
        changed = project.load()
        assert changed is not first and changed[1]["p"].defaults["resolution"] == 6
    finally:
        pipeline.write_text(pipeline.read_text().replace("resolution: 6", "resolution: 7"))


def test_a_prepared_plan_runs_in_another_process_as_run_would(made, tmp_path):
    """prepare() names the run without running it; the plan, pickled to a fresh process
    (as the server sends it to a warm worker), executes there and publishes the rows run()
    computes."""
    import pickle
    import subprocess
    import sys

    project, tif, _, _ = made
    plan = project.prepare("p", SCOPE, resolution=7)
    assert plan.run_id not in {r["run_id"] for r in project.runs(limit=50)}
    (tmp_path / "plan.pickle").write_bytes(pickle.dumps(plan))
    script = ("import pickle, sys, h3pipe; plan = pickle.load(open(sys.argv[2], 'rb')); "
              "print(h3pipe.Project(sys.argv[1]).execute(plan).run_id)")
    done = subprocess.run([sys.executable, "-c", script, str(project.root),
                           str(tmp_path / "plan.pickle")], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == plan.run_id
    again = project.run("p", SCOPE, resolution=7)
    assert (again.run_id, again.state) == (plan.run_id, "already")
    rows = {r["h3_index"]: r for r in project.dataset("ds", scope=SCOPE, resolution=7)
            .to_pylist()}
    assert set(rows) == _polyfill(7)
    with rasterio.open(tif) as ds:
        assert_same(rows, reference(ds, list(rows), STATS), STATS)
