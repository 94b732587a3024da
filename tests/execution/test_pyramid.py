"""Several resolutions in one run (h3pipe.planning.pyramid): every pixel read once, each
resolution exact and published as its own.

Expected numbers come from exactextract called here on the raster file over h3-py's cell
polygons (tests/zonal_reference.py), cells from ``h3.geo_to_cells``; each resolution of a
run of several is also compared, to the bit, with its own single-resolution run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely

from h3pipe.planning.pyramid import unshared
from h3pipe.planning.scope import resolve_scope, scope_cells, shared_blocks
from h3pipe.spec import PipelineSpec, StepSpec
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.zonal_reference import assert_same, reference

BBOX = (29.12, -2.46, 29.44, -2.16)
BOX = ",".join(str(v) for v in BBOX)
STATS = ["count", "sum", "mean", "min", "max", "stdev", "median"]
LEVELS = (6, 7, 8)


@pytest.fixture(scope="module")
def tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rough terrain on 0.002-degree pixels over 29.0..29.6E, 2.0..2.6S, with a nodata
    hole, in 64-pixel blocks (windows of neighbouring cells share blocks)."""
    rng = np.random.default_rng(29)
    data = (rng.normal(1500, 200, (300, 300)).cumsum(axis=1) / 50).astype("float32")
    data[120:150, 100:140] = -9999
    return write_raster(tmp_path_factory.mktemp("pyramid") / "dem.tif", data, west=29.0,
                        north=-2.0, res=0.002, nodata=-9999, block=64)


def _project(root: Path, tif: Path, *, steps: str | None = None) -> Path:
    pipe = zonal_pipeline("p", "s", STATS, resolution=7, batch_size=60)
    if steps is not None:
        pipe = pipe.split("steps:")[0] + steps
    return write_project(root, sources={"s": raster_source("s", str(tif), nodata=-9999)},
                         pipelines={"p": pipe})


def _export(cli, project: Path, out: Path, *args: str) -> dict[str, dict]:
    r = cli("--project", project, "export", "ds", "-o", out, *args)
    assert r.exit_code == 0, r.stderr
    return {row["h3_index"]: row for row in pq.read_table(out).to_pylist()}


def _runs(project: Path) -> list[tuple]:
    with sqlite3.connect(project / ".h3pipe" / "catalog.sqlite") as db:
        return db.execute("SELECT run_id, resolution, cells, params FROM runs").fetchall()


def test_one_run_computes_every_resolution_exactly(cli, tmp_path, tif):
    project = _project(tmp_path / "together", tif)
    r = cli("--project", project, "run", "p", "--bbox", BOX, "-r", "6-8", "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert "resolutions 6, 7, 8" in r.stdout
    ((run_id, res, cells, params),) = _runs(project)  # one record for the three
    assert run_id.startswith("p-r6-8-") and res == 8
    assert json.loads(params)["resolutions"] == list(LEVELS)
    expected_cells = {lv: set(h3.geo_to_cells(shapely.box(*BBOX), lv)) for lv in LEVELS}
    assert cells == sum(len(c) for c in expected_cells.values())

    single = _project(tmp_path / "single", tif)
    with rasterio.open(tif) as ds:
        for lv in LEVELS:
            mine = _export(cli, project, tmp_path / f"m{lv}.parquet", "-r", str(lv))
            assert set(mine) == expected_cells[lv]
            assert all(row["resolution"] == lv for row in mine.values())
            # Each cell from its own coverage fractions: exactextract on the cell itself.
            assert_same(mine, reference(ds, mine, STATS), STATS)
            # ... and to the bit what the run of that resolution alone gives.
            one = cli("--project", single, "run", "p", "--bbox", BOX, "-r", str(lv),
                      "--workers", "1")
            assert one.exit_code == 0, one.stderr
            alone = _export(cli, single, tmp_path / f"s{lv}.parquet", "-r", str(lv))
            assert mine == alone
            # The run's own result of that resolution, by its id.
            assert _export(cli, project, tmp_path / f"r{lv}.parquet", "--run", run_id,
                           "-r", str(lv)) == mine

    again = cli("--project", project, "run", "p", "--bbox", BOX, "-r", "6-8")
    assert again.exit_code == 0 and "already completed" in again.stdout


@pytest.mark.parametrize("levels", [(3, 4, 5, 6, 7), (5, 8), (4, 5)])
def test_batches_hold_each_resolutions_cells_exactly_once(tmp_path, levels):
    """Coarser than the anchors (their centre descendants), as fine (themselves) and finer
    (their descendants): the cells single runs of each resolution would have, none twice."""
    aoi = tmp_path / "area.geojson"
    ring = [[28.9, -2.9], [30.9, -1.1], [29.6, -1.0], [29.4, -1.9], [28.9, -2.9]]
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    scope = resolve_scope(aoi=aoi)
    *coarse, finest = levels
    blocks = shared_blocks(scope_cells(scope, finest),
                           [scope_cells(scope, lv) for lv in coarse], 400)
    held = np.concatenate([b.cells() for b in blocks])
    for lv in levels:
        mine = held[(held >> np.uint64(52)) & np.uint64(15) == lv]
        assert len(mine) == len(set(mine.tolist()))
        assert set(mine.tolist()) == set(scope_cells(scope, lv).ids().tolist())
    # A coarser cell's block reads the tiles it covers: its box holds the cell.
    for b in blocks:
        west, south, east, north = b.bounds
        for cell in b.also.tolist():
            lat, lng = np.array(h3.cell_to_boundary(h3.int_to_str(cell))).T
            assert west - 1e-9 <= lng.min() and lng.max() <= east + 1e-9
            assert south - 1e-9 <= lat.min() and lat.max() <= north + 1e-9


def test_an_interrupted_run_of_several_resolutions_resumes(cli, tmp_path, tif):
    project = _project(tmp_path / "p", tif)
    failed = subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(project), "run",
                             "p", "--bbox", BOX, "-r", "6-8", "--workers", "1"],
                            capture_output=True, text=True,
                            env={**os.environ, "H3PIPE_FAULTS": "batch:fail@3"})
    assert failed.returncode == 1, failed.stderr
    ((run_id, *_),) = _runs(project)
    with sqlite3.connect(project / ".h3pipe" / "catalog.sqlite") as db:
        kept = db.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()[0]
    assert kept == 2

    r = cli("--project", project, "resume", run_id, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert f"run {run_id} completed (resumed)" in r.stdout

    fresh = _project(tmp_path / "fresh", tif)
    assert cli("--project", fresh, "run", "p", "--bbox", BOX, "-r", "6-8",
               "--workers", "1").exit_code == 0
    for lv in LEVELS:
        assert _export(cli, project, tmp_path / "a.parquet", "-r", str(lv)) == \
            _export(cli, fresh, tmp_path / "b.parquet", "-r", str(lv))


def test_row_wise_steps_share_the_read_and_plan_shows_one_run(cli, tmp_path, tif):
    project = _project(tmp_path / "p", tif, steps="""\
steps:
  - id: stats
    operation: zonal_stats
    source: s
    params: {stats: [mean, max]}
    output: intermediate
  - id: relief
    operation: transform
    input: $stats
    params: {columns: {relief: "max - mean"}}
    output: h3_stats
""")
    plan = cli("--project", project, "plan", "p", "--bbox", BOX, "-r", "6-7",
               "--format", "json")
    assert plan.exit_code == 0, plan.stderr
    shown = json.loads(plan.stdout)
    assert isinstance(shown, dict) and shown["resolutions"] == [6, 7]
    r = cli("--project", project, "run", "p", "--bbox", BOX, "-r", "6-7", "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert len(_runs(project)) == 1 and "its own run" not in r.stderr
    with rasterio.open(tif) as ds:
        for lv in (6, 7):
            mine = _export(cli, project, tmp_path / f"{lv}.parquet", "-r", str(lv))
            ref = reference(ds, mine, ["mean", "max"])
            for cell, row in mine.items():
                e = ref[cell]
                if e["max"] is None:
                    assert row["relief"] is None
                else:
                    assert row["relief"] == pytest.approx(e["max"] - e["mean"], rel=1e-9)


def _spec(*steps: StepSpec, matrix: dict | None = None) -> PipelineSpec:
    return PipelineSpec("p", "ds", "terrain", steps, matrix=matrix or {})


@pytest.mark.parametrize("pipeline, why", [
    (_spec(StepSpec("z", "zonal_stats", "s")), None),
    (_spec(StepSpec("z", "zonal_stats", "s", output="intermediate"),
           StepSpec("f", "filter", input="$z"), StepSpec("t", "transform", input="$f")), None),
    # Features are placed in cells at the run's resolution: a run each.
    (_spec(StepSpec("b", "zonal_stats", "s", input="buildings")), "runs features"),
    (_spec(StepSpec("a", "h3_assign", input="buildings", output="intermediate"),
           StepSpec("g", "h3_weighted_aggregate", input="$a")), "runs features"),
    (_spec(StepSpec("z", "zonal_stats", "s"), matrix={"rp": ("100",)}), "sweeps"),
])
def test_which_pipelines_share_one_read(pipeline, why):
    found = unshared(pipeline, {})
    assert (found is None) if why is None else (why in found)



def test_a_pipeline_over_features_runs_each_resolution_and_says_why(cli, tmp_path, tif):
    """Buildings placed in cells at the run's resolution cannot share one run: each
    resolution is its own run (as before), and the command says so."""
    rng = np.random.default_rng(3)
    points = [{"type": "Feature", "properties": {"bid": i},
               "geometry": {"type": "Point", "coordinates": [float(x), float(y)]}}
              for i, (x, y) in enumerate(zip(rng.uniform(29.15, 29.4, 60),
                                             rng.uniform(-2.4, -2.2, 60), strict=True))]
    (tmp_path / "b.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                    "features": points}))
    project = write_project(tmp_path / "p", sources={
        "s": raster_source("s", str(tif), nodata=-9999),
        "b": f"id: b\nkind: vector\npath: '{tmp_path / 'b.geojson'}'\nid_field: bid\n"
             "theme: infrastructure\n"}, pipelines={"p": """\
            id: p
            output: {dataset: ds, theme: terrain}
            defaults: {resolution: 7}
            steps:
              - id: height
                operation: sample
                input: b
                source: s
                output: intermediate
              - id: cells
                operation: h3_weighted_aggregate
                input: $height
                params:
                  aggregations:
                    - {name: buildings, function: count}
            """})
    r = cli("--project", project, "run", "p", "--bbox", BOX, "-r", "6-7", "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert "each resolution is its own run" in r.stderr and "runs features" in r.stderr
    assert sorted(res for _, res, _, _ in _runs(project)) == [6, 7]
    for lv in (6, 7):
        rows = _export(cli, project, tmp_path / f"{lv}.parquet", "-r", str(lv))
        assert sum(row["buildings"] for row in rows.values()) == sum(
            1 for p in points if h3.latlng_to_cell(p["geometry"]["coordinates"][1],
                                                   p["geometry"]["coordinates"][0], lv)
            in set(h3.geo_to_cells(shapely.box(*BBOX), lv)))
