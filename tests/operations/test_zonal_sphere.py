"""Zonal statistics of a global lon/lat raster for cells across the antimeridian and around
the poles, end to end (``run`` then ``export``), against exactextract on the same raster
file with each cell's polygon cut at ±180 (and closed over the pole) by this test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h3
import numpy as np
import pytest
import rasterio
import shapely
from shapely.geometry import mapping

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.execution.test_run_correctness import export, run
from tests.zonal_reference import ALL_STATS, assert_same, cell_on_plane, reference

PX = 0.25  # a quarter-degree world: 1440 x 720 pixels


def _world_raster(path: Path) -> Path:
    rng = np.random.default_rng(25)
    data = rng.integers(0, 1000, size=(720, 1440)).astype(np.float32)
    data[300:310, :] = -9999  # a nodata band across the whole width
    data[:, 0:3] = np.where(rng.random((720, 3)) < 0.5, -9999, data[:, 0:3])  # at -180
    return write_raster(path, data, west=-180.0, north=90.0, res=PX, nodata=-9999.0)


def _features(cells: set[str]) -> list[dict[str, Any]]:
    return [{"type": "Feature", "properties": {"cell": c}, "geometry": mapping(cell_on_plane(c))}
            for c in sorted(cells)]


def _scope_cells(west: float, south: float, east: float, north: float, res: int) -> set[str]:
    """The cells whose centres lie in the box (h3-py, by hand), across ±180 when west > east."""
    boxes = [(west, south, east, north)] if west < east else \
        [(west, south, 180, north), (-180, south, east, north)]
    cells: set[str] = set()
    for w, s, e, n in boxes:
        for lo in np.arange(w, e, 60.0):  # h3 reads a polygon 180 degrees wide as crossing
            part = shapely.box(lo, s, min(lo + 60.0, e), n)
            cells |= set(h3.h3shape_to_cells(h3.geo_to_h3shape(part), res))
    return cells


@pytest.fixture(scope="module")
def world_tif(tmp_path_factory):
    return _world_raster(tmp_path_factory.mktemp("world") / "world.tif")


@pytest.fixture
def world(tmp_path, world_tif):
    """A project of its own for each test (one dataset, one scope in it)."""
    return write_project(tmp_path / "project", sources={"w": raster_source("w", str(world_tif))},
                         pipelines={"p": zonal_pipeline("p", "w", ALL_STATS, batch_size=500)})


@pytest.mark.parametrize("bbox,res", [
    ("170,-40,-170,-5", 3),     # across the antimeridian, with the nodata band
    ("-180,60,180,90", 2),      # the north pole's cell and its ring
    ("150,-90,-150,-60", 2),    # the south pole, and across the antimeridian
])
def test_cells_across_the_antimeridian_and_round_the_poles_equal_exactextract(
        cli, world, world_tif, tmp_path, bbox, res):
    run(cli, world, "p", bbox, "-r", str(res))
    got = export(cli, world, "ds", tmp_path / "out.parquet")
    cells = _scope_cells(*(float(v) for v in bbox.split(",")), res)
    assert set(got) == cells
    odd = [c for c in cells if max(x for _, x in h3.cell_to_boundary(c))
           - min(x for _, x in h3.cell_to_boundary(c)) > 180]
    assert odd  # the scope does hold cells across ±180 or on a pole
    with rasterio.open(world_tif) as ds:
        expected = reference(ds, cells, features=_features(cells))
    assert_same(got, expected)


def test_the_whole_world_equals_exactextract_cell_for_cell(cli, world, world_tif, tmp_path):
    run(cli, world, "p", "world", "-r", "1")
    got = export(cli, world, "ds", tmp_path / "world.parquet")
    cells = set(h3.uncompact_cells(h3.get_res0_cells(), 1))
    assert set(got) == cells
    with rasterio.open(world_tif) as ds:
        expected = reference(ds, cells, features=_features(cells))
    assert_same(got, expected)


@pytest.mark.parametrize("code,res", [("USA", 4), ("RUS", 3), ("NZL", 5), ("FJI", 5),
                                      ("KIR", 5)])
def test_countries_across_the_antimeridian_equal_exactextract(cli, world, world_tif, tmp_path,
                                                               code, res):
    r = cli("--project", world, "run", "p", "--iso3", code, "-r", str(res))
    assert r.exit_code == 0, r.stderr
    got = export(cli, world, "ds", tmp_path / "out.parquet")
    assert any(h3.cell_to_latlng(c)[1] > 170 for c in got)
    assert any(h3.cell_to_latlng(c)[1] < -170 for c in got)  # both sides of ±180
    with rasterio.open(world_tif) as ds:
        expected = reference(ds, set(got), features=_features(set(got)))
    assert_same(got, expected)


@pytest.mark.parametrize("bbox,res", [("170,-30,-170,0", 3), ("-180,70,180,90", 2),
                                      ("world", 2)])
def test_an_extensive_sum_conserves_across_the_antimeridian_and_round_the_poles(
        cli, tmp_path, world_tif, bbox, res):
    """The conservation check unions the cells near ±180 and the poles on the plane (it
    crashed there with a GEOS TopologyException, and unioned exactly, lost whole cells);
    the world's cells hold every valid pixel, summed here with numpy."""
    proj = write_project(tmp_path / "pe", sources={
        "w": raster_source("w", str(world_tif), measure="extensive")},
        pipelines={"p": zonal_pipeline("p", "w", ["sum"], batch_size=500)})
    r = cli("--project", proj, "run", "p", "--bbox", bbox, "-r", str(res))
    assert r.exit_code == 0, r.stderr
    shown = cli("--project", proj, "runs", "show", "latest").stdout
    assert "conservation: stats.sum" in shown
    if bbox == "world":
        with rasterio.open(world_tif) as ds:
            values = ds.read(1).astype("float64")
        total = values[values != -9999].sum()
        assert f"cells {total:,.1f}, raster over the cells {total:,.1f}" in shown
