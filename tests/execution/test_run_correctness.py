"""End to end: ``h3pipe run`` then ``h3pipe export``, compared cell by cell with exactextract.

Expected numbers come from ``exactextract.exact_extract`` called here on the raster file (or
on an array this test built), with cell polygons from ``h3.cell_to_boundary``; for projected
rasters the test reprojects the polygons itself with pyproj. Nothing is copied from h3pipe.
"""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from affine import Affine
from exactextract.raster import NumPyRasterSource
from pyproj import Transformer
from shapely.geometry import shape

from tests.conftest import cell_feature, raster_source, write_project, write_raster, zonal_pipeline
from tests.zonal_reference import ABS, ALL_STATS, DEFINED_WHEN_EMPTY, REL, assert_same, reference

WEST, NORTH, PX = 30.0, -1.6, 0.002  # 0.002 degree pixels: ~100 per resolution-7 cell


# --- helpers --------------------------------------------------------------------------------


def reference_file(path: Path, cells: list[str] | set[str],
                   stats: list[str] = ALL_STATS) -> dict[str, dict[str, Any]]:
    """exactextract on the file (for integer files it truncates median and quantiles to the
    raster's type, and h3pipe must agree)."""
    with rasterio.open(path) as ds:
        return reference(ds, cells, stats)


def cells_of(bbox: str, res: int = 7) -> set[str]:
    return set(h3.geo_to_cells(shapely.box(*(float(v) for v in bbox.split(","))), res))


def run(cli, project: Path, pipeline: str, bbox: str, *opts: str):
    r = cli("--project", project, "run", pipeline, "--bbox", bbox, *opts)
    assert r.exit_code == 0, r.stderr
    return r


def export(cli, project: Path, dataset: str, out: Path, stats: list[str] = ALL_STATS
           ) -> dict[str, dict[str, Any]]:
    r = cli("--project", project, "export", dataset, "-o", out)
    assert r.exit_code == 0, r.stderr
    table = pq.read_table(out)
    assert table.column_names == ["h3_index", "resolution", *stats]
    rows = table.to_pylist()
    ids = [r["h3_index"] for r in rows]
    assert len(ids) == len(set(ids)), "a cell appears more than once"
    return {r["h3_index"]: r for r in rows}


def assert_one_line_error(r, *needles: str) -> None:
    assert r.exit_code != 0
    for stream in (r.stdout, r.stderr):
        assert "Traceback" not in stream and 'File "' not in stream, stream
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def polygon(cell: str):
    return shape(cell_feature(cell)["geometry"])


def integer_field(shape_: tuple[int, int], seed: int) -> np.ndarray:
    """Integers 0..11 with an east-west trend: many values per cell, rarely tied."""
    rng = np.random.default_rng(seed)
    trend = np.arange(shape_[1])[None, :] * 6 // shape_[1]
    return rng.integers(0, 6, size=shape_) + trend


# --- 1. every statistic, one or two workers, several batches -------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_statistic_matches_exactextract(tmp_path, cli, workers):
    data = integer_field((150, 180), seed=1).astype("float32")
    data[40:80, 30:70] = -9999  # 0.08 degrees square of nodata: whole cells inside
    data[np.random.default_rng(2).random(data.shape) < 0.05] = np.nan
    tif = write_raster(tmp_path / "data" / "r.tif", data, west=WEST, north=NORTH, res=PX,
                       nodata=-9999)
    project = write_project(tmp_path / "proj", sources={"src": raster_source("src", str(tif))},
                            pipelines={"p": zonal_pipeline("p", "src", ALL_STATS)})
    bbox = "30.02,-1.93,30.4,-1.62"  # runs 0.04 degrees past the east edge
    run(cli, project, "p", bbox, "--workers", workers, "--batch-size", "25")
    actual = export(cli, project, "ds", tmp_path / "o.parquet")

    cells = cells_of(bbox)
    with sqlite3.connect(project / ".h3pipe" / "catalog.sqlite") as con:
        (tasks,) = con.execute("SELECT count(*) FROM tasks").fetchone()
    assert tasks == math.ceil(len(cells) / 25) >= 8  # several batches per worker
    assert {r["resolution"] for r in actual.values()} == {7}
    expected = reference_file(tif, cells)
    assert_same(actual, expected)

    counts = {c: r["count"] for c, r in expected.items()}
    inside = shapely.box(WEST, NORTH - 150 * PX, WEST + 180 * PX, NORTH)
    assert any(n == 0 and polygon(c).within(inside) for c, n in counts.items())  # nodata
    assert any(n == 0 and not polygon(c).intersects(inside) for c, n in counts.items())  # off
    assert any(0 < n < 50 for n in counts.values()) and max(counts.values()) > 90  # partial


# --- 2. cells across tile seams -------------------------------------------------------------


def _cut(tmp_path: Path, data: np.ndarray, rows: list[int], cols: list[int]) -> list[Path]:
    rb, cb = [0, *rows, data.shape[0]], [0, *cols, data.shape[1]]
    paths = []
    k = 0
    for i in range(len(rb) - 1):
        for j in range(len(cb) - 1):
            # Reverse alphabetical order: the glob lists the south-east tile first.
            name = f"{'zyxw'[k]}.tif"
            k += 1
            paths.append(write_raster(tmp_path / "tiles" / name,
                                      data[rb[i]:rb[i + 1], cb[j]:cb[j + 1]],
                                      west=WEST + cb[j] * PX, north=NORTH - rb[i] * PX, res=PX,
                                      nodata=-9999))
    return paths


@pytest.mark.parametrize(("rows", "cols", "workers"), [([], [50], "1"), ([50], [50], "2")],
                         ids=["two-tiles", "four-tiles"])
def test_cells_straddling_tile_seams_see_every_tile(tmp_path, cli, rows, cols, workers):
    data = integer_field((100, 100), seed=3).astype("float32")
    data[:, :50] += 20  # the west tile differs from the east one, so one tile alone is wrong
    data[np.random.default_rng(4).random(data.shape) < 0.03] = -9999
    whole = write_raster(tmp_path / "whole.tif", data, west=WEST, north=NORTH, res=PX,
                         nodata=-9999)
    tiles = _cut(tmp_path, data, rows, cols)
    project = write_project(tmp_path / "proj",
                            sources={"src": raster_source("src", str(tmp_path / "tiles/*.tif"))},
                            pipelines={"p": zonal_pipeline("p", "src", ALL_STATS)})
    bbox = "30.02,-1.78,30.18,-1.62"
    run(cli, project, "p", bbox, "--workers", workers, "--batch-size", "10")
    actual = export(cli, project, "ds", tmp_path / "o.parquet")

    cells = cells_of(bbox)
    expected = reference_file(whole, cells)
    assert_same(actual, expected)

    # The seams really cut cells, and any one tile alone would give another answer.
    boxes = {}
    for t in tiles:
        with rasterio.open(t) as ds:
            boxes[t] = shapely.box(*ds.bounds)
    straddling = {c: [t for t, b in boxes.items() if polygon(c).intersection(b).area > 0]
                  for c in cells}
    straddling = {c: ts for c, ts in straddling.items() if len(ts) > 1}
    assert len(straddling) >= 5
    if len(tiles) == 4:
        assert any(len(ts) == 4 for ts in straddling.values())
    for c, ts in straddling.items():
        for t in ts:
            with rasterio.open(t) as ds:
                alone = reference(ds, [c], ["count", "mean"])[c]
            assert alone["count"] < expected[c]["count"] - 0.05, (c, t)
            assert actual[c]["count"] == pytest.approx(expected[c]["count"], rel=REL)


# --- 3. nodata ------------------------------------------------------------------------------


def _nodata_case(kind: str, tmp_path: Path) -> tuple[Path, dict[str, Any], Any]:
    """(file, extra source keys, what exactextract reads) for one way of marking nodata."""
    values = integer_field((100, 100), seed=5)
    hole = (slice(30, 70), slice(30, 70))  # 0.08 degrees square without a valid pixel
    extent = (WEST, NORTH - 100 * PX, WEST + 100 * PX, NORTH)
    if kind == "declared-float":
        data = values.astype("float32")
        data[hole] = -9999
        path = write_raster(tmp_path / "r.tif", data, west=WEST, north=NORTH, res=PX,
                            nodata=-9999)
        return path, {}, None
    if kind == "nan-float":
        data = values.astype("float64") * 0.5
        data[hole] = np.nan
        data[np.random.default_rng(6).random(data.shape) < 0.1] = np.nan
        path = write_raster(tmp_path / "r.tif", data, west=WEST, north=NORTH, res=PX)
        return path, {}, None
    if kind == "yaml-override":  # the file declares none
        data = values.astype("float32")
        data[hole] = -1
        path = write_raster(tmp_path / "r.tif", data, west=WEST, north=NORTH, res=PX)
        return path, {"nodata": -1}, NumPyRasterSource(data, *extent, nodata=-1)
    if kind == "int16":
        data = (values * 100 - 500).astype("int16")
        data[hole] = -32768
        path = write_raster(tmp_path / "r.tif", data, west=WEST, north=NORTH, res=PX,
                            nodata=-32768)
        return path, {}, None
    if kind == "uint8-yaml-zero":  # 0 marks nodata only because the source says so
        data = (values * 20 + 10).astype("uint8")
        data[hole] = 0
        data[0:10, 90:100] = 255
        path = write_raster(tmp_path / "r.tif", data, west=WEST, north=NORTH, res=PX)
        return path, {"nodata": 0}, NumPyRasterSource(data, *extent, nodata=0)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["declared-float", "nan-float", "yaml-override", "int16",
                                  "uint8-yaml-zero"])
def test_nodata_is_never_counted(tmp_path, cli, kind):
    path, extra, source = _nodata_case(kind, tmp_path)
    project = write_project(
        tmp_path / "proj", sources={"src": raster_source("src", str(path), **extra)},
        pipelines={"p": zonal_pipeline("p", "src", ALL_STATS)})
    bbox = "30.02,-1.78,30.18,-1.62"
    run(cli, project, "p", bbox, "--workers", "1")
    actual = export(cli, project, "ds", tmp_path / "o.parquet")

    cells = cells_of(bbox)
    expected = reference(source, cells) if source is not None else reference_file(path, cells)
    assert_same(actual, expected)
    hole = shapely.box(WEST + 30 * PX, NORTH - 70 * PX, WEST + 70 * PX, NORTH - 30 * PX)
    empty = [c for c in cells if polygon(c).within(hole)]
    assert empty
    for c in empty:
        assert actual[c]["count"] == 0 and actual[c]["variety"] == 0
        assert all(actual[c][s] is None for s in ALL_STATS if s not in DEFINED_WHEN_EMPTY)
    # Cells half in the hole are counted for their valid half only.
    assert any(0 < actual[c]["count"] < 0.8 * max(r["count"] for r in actual.values())
               for c in cells if polygon(c).intersects(hole))
    if extra:  # without the override the same file gives other answers
        with rasterio.open(path) as ds:
            plain = reference(ds, empty, ["count"])
        assert all(plain[c]["count"] > 50 for c in empty)


# --- 4. projected rasters -------------------------------------------------------------------

UTM = "EPSG:32735"  # UTM 35S, central meridian 27E: Rwanda sits 3 degrees east of it
RW_BBOX = "29.98,-2.03,30.14,-1.87"
UTM_PX = 100.0


def _utm_raster(tmp_path: Path, data: np.ndarray, **kw) -> tuple[Path, Transformer]:
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    cx, cy = to_utm.transform(30.06, -1.95)
    west = math.floor(cx / UTM_PX) * UTM_PX - data.shape[1] // 2 * UTM_PX
    north = math.floor(cy / UTM_PX) * UTM_PX + data.shape[0] // 2 * UTM_PX
    path = write_raster(tmp_path / "utm.tif", data, west=west, north=north, res=UTM_PX, crs=UTM,
                        **kw)
    return path, to_utm


def _utm_features(cells: set[str], to_utm: Transformer) -> list[dict[str, Any]]:
    """Cell rings densified every 1e-4 degrees along their straight lon/lat edges, in UTM."""
    out = []
    for c in sorted(cells):
        ring = cell_feature(c)["geometry"]["coordinates"][0]
        pts = []
        for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False):
            n = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / 1e-4))
            t = np.arange(n) / n
            pts.append(np.column_stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t]))
        pts.append(np.array([ring[0]]))
        lonlat = np.vstack(pts)
        xs, ys = to_utm.transform(lonlat[:, 0], lonlat[:, 1])
        out.append({"type": "Feature", "properties": {"cell": c}, "geometry": {
            "type": "Polygon", "coordinates": [np.column_stack([xs, ys]).tolist()]}})
    return out


def test_projected_constant_raster_counts_the_cell_area(tmp_path, cli):
    path, to_utm = _utm_raster(tmp_path, np.full((250, 250), 42.0, dtype="float32"))
    project = write_project(tmp_path / "proj", sources={"src": raster_source("src", str(path))},
                            pipelines={"p": zonal_pipeline("p", "src", ["count", "mean",
                                                                        "stdev", "variety"])})
    run(cli, project, "p", RW_BBOX, "--workers", "1")
    actual = export(cli, project, "ds", tmp_path / "o.parquet", ["count", "mean", "stdev",
                                                                  "variety"])
    cells = cells_of(RW_BBOX)
    assert set(actual) == cells and len(cells) > 40

    with rasterio.open(path) as ds:
        raster_box = shapely.box(*ds.bounds)
    for f in _utm_features(cells, to_utm):
        c = f["properties"]["cell"]
        poly = shape(f["geometry"])
        assert poly.within(raster_box)  # every cell wholly on the raster
        row = actual[c]
        assert row["mean"] == pytest.approx(42.0, rel=REL)
        assert row["stdev"] == pytest.approx(0.0, abs=ABS) and row["variety"] == 1
        # Exactly: the cell's area in the raster's plane, in pixels.
        assert row["count"] == pytest.approx(poly.area / UTM_PX**2, rel=REL)
        # Roughly: H3's own area. UTM enlarges areas by k^2 ~ 1.0021 three degrees from its
        # central meridian, and a lon/lat polygon on the WGS84 ellipsoid is ~0.45% smaller
        # near the equator than on H3's authalic sphere; the net is ~ -0.24%, so 1% has
        # margin yet catches degrees taken for metres or a missed reprojection.
        ratio = row["count"] * UTM_PX**2 / h3.cell_area(c, "m^2")
        assert 0.99 < ratio < 1.01, (c, ratio)


def test_projected_gradient_matches_exactextract_on_reprojected_cells(tmp_path, cli):
    data = integer_field((250, 250), seed=8).astype("float32")
    data += (np.arange(250)[:, None] // 25).astype("float32")  # and a north-south trend
    data[100:160, 100:160] = -9999
    path, to_utm = _utm_raster(tmp_path, data, nodata=-9999)
    project = write_project(tmp_path / "proj", sources={"src": raster_source("src", str(path))},
                            pipelines={"p": zonal_pipeline("p", "src", ALL_STATS)})
    run(cli, project, "p", RW_BBOX, "--workers", "1", "--batch-size", "15")
    actual = export(cli, project, "ds", tmp_path / "o.parquet")

    cells = cells_of(RW_BBOX)
    with rasterio.open(path) as ds:
        expected = reference(ds, cells, features=_utm_features(cells, to_utm))
    assert_same(actual, expected)
    assert any(r["count"] == 0 for r in expected.values())
    assert any(0 < r["count"] < 400 for r in expected.values())


def _write_raw(path: Path, transform: Affine, crs: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1,
                       dtype="float32", crs=crs, transform=transform) as ds:
        ds.write(np.ones((100, 100), dtype="float32"), 1)
    return path


@pytest.mark.parametrize("case", ["no-crs", "rotated", "pixel-size", "misaligned"])
def test_unusable_rasters_are_refused_in_one_line(tmp_path, cli, case):
    grid = Affine(PX, 0, WEST, 0, -PX, NORTH)
    if case == "no-crs":
        bad = _write_raw(tmp_path / "t" / "b.tif", grid, None)
    elif case == "rotated":
        bad = _write_raw(tmp_path / "t" / "b.tif", Affine(PX, 0.0002, WEST, 0.0002, -PX, NORTH),
                         "EPSG:4326")
    else:
        _write_raw(tmp_path / "t" / "a.tif", grid, "EPSG:4326")
        if case == "pixel-size":
            other = Affine(PX / 2, 0, WEST + 100 * PX, 0, -PX / 2, NORTH)
        else:
            other = Affine(PX, 0, WEST + 100.4 * PX, 0, -PX, NORTH)
        bad = _write_raw(tmp_path / "t" / "b.tif", other, "EPSG:4326")
    project = write_project(tmp_path / "proj",
                            sources={"src": raster_source("src", str(tmp_path / "t" / "*.tif"))},
                            pipelines={"p": zonal_pipeline("p", "src", ["mean"])})
    r = cli("--project", project, "run", "p", "--bbox", "30.02,-1.78,30.18,-1.62",
            "--workers", "1")
    assert r.exit_code == 2
    assert_one_line_error(r, str(bad), "source 'src'")


# --- 5. failures ----------------------------------------------------------------------------


def test_raster_outside_the_scope_is_a_config_error(tmp_path, cli):
    tif = write_raster(tmp_path / "r.tif", np.ones((50, 50), dtype="float32"), west=WEST,
                       north=NORTH, res=PX)
    project = write_project(tmp_path / "proj", sources={"faraway": raster_source("faraway",
                                                                               str(tif))},
                            pipelines={"p": zonal_pipeline("p", "faraway", ["mean"])})
    r = cli("--project", project, "run", "p", "--bbox", "10.0,5.0,10.2,5.2", "--workers", "1")
    assert r.exit_code == 2
    assert_one_line_error(r, "source 'faraway'", "does not overlap")
    assert not (project / ".h3pipe" / "results").exists()


SCOPE_WEST = "30.01,-1.79,30.07,-1.61"  # well inside the west tile (seam at 30.1)
SCOPE_EAST = "30.13,-1.79,30.19,-1.61"  # well inside the east tile


def _two_tile_project(tmp_path: Path) -> tuple[Path, Path, Path]:
    data = integer_field((100, 100), seed=9).astype("float32")
    west = write_raster(tmp_path / "tiles" / "w.tif", data[:, :50], west=WEST, north=NORTH,
                        res=PX)
    # Big enough to span several 256x256 blocks, so a cut file still opens.
    east_data = np.tile(data[:, 50:], (6, 6))
    east = write_raster(tmp_path / "tiles" / "e.tif", east_data, west=WEST + 50 * PX,
                        north=NORTH, res=PX)
    project = write_project(tmp_path / "proj",
                            sources={"src": raster_source("src", str(tmp_path / "tiles/*.tif"))},
                            pipelines={"p": zonal_pipeline("p", "src", ["count", "mean"])})
    return project, west, east


def test_garbage_tile_fails_the_run_and_keeps_other_results(tmp_path, cli):
    project, west, east = _two_tile_project(tmp_path)
    run(cli, project, "p", SCOPE_WEST, "--workers", "1")
    before = export(cli, project, "ds", tmp_path / "a.parquet", ["count", "mean"])
    assert set(before) == cells_of(SCOPE_WEST)

    east.write_bytes(os.urandom(4096))
    r = cli("--project", project, "run", "p", "--bbox", SCOPE_EAST, "--workers", "1")
    assert_one_line_error(r, str(east))

    after = export(cli, project, "ds", tmp_path / "b.parquet", ["count", "mean"])
    assert after == before


def test_truncated_tile_fails_the_run_and_keeps_other_results(tmp_path, cli):
    project, west, east = _two_tile_project(tmp_path)
    size = east.stat().st_size
    with east.open("r+b") as f:
        f.truncate(size // 8)
    with rasterio.open(east):  # the header survives: the failure comes while reading
        pass

    run(cli, project, "p", SCOPE_WEST, "--workers", "1")  # never reads the east tile
    before = export(cli, project, "ds", tmp_path / "a.parquet", ["count", "mean"])
    with rasterio.open(west) as ds:
        assert_same(before, reference(ds, cells_of(SCOPE_WEST), ["count", "mean"]),
                    ["count", "mean"])

    r = cli("--project", project, "run", "p", "--bbox", SCOPE_EAST, "--workers", "2",
            "--batch-size", "5")
    assert_one_line_error(r, str(east))
    after = export(cli, project, "ds", tmp_path / "b.parquet", ["count", "mean"])
    assert after == before


# --- 6. re-runs and scopes ------------------------------------------------------------------


def _simple_project(tmp_path: Path, value_seed: int = 10) -> tuple[Path, Path]:
    data = integer_field((100, 100), seed=value_seed).astype("float32")
    tif = write_raster(tmp_path / "data" / "r.tif", data, west=WEST, north=NORTH, res=PX)
    project = write_project(tmp_path / "proj", sources={"src": raster_source("src", str(tif))},
                            pipelines={"p": zonal_pipeline("p", "src", ["count", "mean"])})
    return project, tif


def test_rerunning_a_scope_replaces_its_rows(tmp_path, cli):
    project, tif = _simple_project(tmp_path)
    bbox = "30.02,-1.78,30.18,-1.62"
    run(cli, project, "p", bbox, "--workers", "1", "--batch-size", "9")
    run(cli, project, "p", bbox, "--workers", "1", "--batch-size", "13")
    actual = export(cli, project, "ds", tmp_path / "o.parquet", ["count", "mean"])
    assert set(actual) == cells_of(bbox)  # export() already refused duplicates
    with rasterio.open(tif) as ds:
        assert_same(actual, reference(ds, cells_of(bbox), ["count", "mean"]), ["count", "mean"])


def test_two_scopes_coexist_and_overlap_once(tmp_path, cli):
    project, tif = _simple_project(tmp_path)
    a, b = "30.02,-1.78,30.12,-1.62", "30.08,-1.78,30.18,-1.62"
    run(cli, project, "p", a, "--workers", "1")
    run(cli, project, "p", b, "--workers", "1")
    actual = export(cli, project, "ds", tmp_path / "o.parquet", ["count", "mean"])
    assert cells_of(a) & cells_of(b)  # they overlap
    assert set(actual) == cells_of(a) | cells_of(b)
    with rasterio.open(tif) as ds:
        assert_same(actual, reference(ds, set(actual), ["count", "mean"]), ["count", "mean"])


def test_rerun_after_the_raster_changed_reads_the_new_pixels(tmp_path, cli):
    # In one process (the programmatic entry point): a dataset cached by path once kept
    # serving the replaced file's pixels.
    project, tif = _simple_project(tmp_path)
    bbox = "30.02,-1.78,30.18,-1.62"
    run(cli, project, "p", bbox, "--workers", "1")
    new = integer_field((100, 100), seed=11).astype("float32") + 100
    fresh = write_raster(tmp_path / "data" / "new.tif", new, west=WEST, north=NORTH, res=PX)
    os.replace(fresh, tif)  # how a data refresh lands a new file
    run(cli, project, "p", bbox, "--workers", "1")
    actual = export(cli, project, "ds", tmp_path / "o.parquet", ["count", "mean"])
    with rasterio.open(tif) as ds:
        assert_same(actual, reference(ds, cells_of(bbox), ["count", "mean"]), ["count", "mean"])
