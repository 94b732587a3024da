"""``zonal_stats`` batch by batch (:class:`ZonalStats`), against exactextract called directly.

The expected numbers come from ``exactextract.exact_extract`` run by the test on the file
itself (or on a NumPy array the test built), with cell polygons from ``h3.cell_to_boundary``
(``cell_feature``), or from plane geometry worked out here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pytest
import rasterio
import shapely
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource
from shapely.geometry import shape

from h3pipe.operations.base import Batch
from h3pipe.operations.zonal_stats import ZonalStats
from h3pipe.sources.raster import describe_raster
from tests.conftest import cell_feature, write_raster
from tests.zonal_reference import (
    ABS,
    ALL_STATS,
    DEFINED_WHEN_EMPTY,
    EE_OP,
    REL,
    assert_same,
    reference,
)


def run_op(info, cells: list[str], stats: list[str]) -> dict[str, dict[str, Any]]:
    batch = Batch(run_id="r", step_id="stats", number=1, operation="zonal_stats",
                  params={"stats": stats}, cells=tuple(cells),
                  resolution=h3.get_resolution(cells[0]), source_id=info.source_id, raster=info)
    table = ZonalStats().run_batch(batch)
    assert table.column_names == ["h3_index", *stats]
    rows = table.to_pylist()
    assert [r["h3_index"] for r in rows] == list(cells)
    if "variety" in stats:
        assert str(table.schema.field("variety").type) == "int64"
    return {r["h3_index"]: r for r in rows}


def cells_in(bbox: tuple[float, float, float, float], res: int) -> list[str]:
    return sorted(h3.geo_to_cells(shapely.box(*bbox), res))


# --- all statistics against exactextract ------------------------------------------------------


def _layout(kind: str, tmp_path: Path) -> Path:
    """A 0.3 x 0.24 degree raster at 30.0E, 1.6S with nodata patches, NaNs and integer values."""
    rng = np.random.default_rng(7)
    values = rng.integers(0, 12, size=(120, 150))
    if kind == "float32_nodata_nan":
        data = values.astype("float32")
        data[40:80, 30:70] = -9999          # 0.08 degrees square: whole cells fall inside
        data[rng.random(data.shape) < 0.05] = np.nan
        return write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=0.002,
                            nodata=-9999)
    if kind == "float64_non_square":
        data = (values * 0.37 + 1000).astype("float64")
        data[40:80, 30:70] = np.nan
        return write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=0.002,
                            yres=0.001)
    if kind == "int16":
        data = (values * 1000 - 6000).astype("int16")
        data[40:80, 30:70] = -32768
        return write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=0.002,
                            nodata=-32768)
    if kind == "uint8":  # no nodata: 0 and 255 are values
        data = np.where(values < 6, 0, 255).astype("uint8")
        data[values == 11] = 7
        return write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=0.002)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["float32_nodata_nan", "float64_non_square", "int16", "uint8"])
@pytest.mark.parametrize("res", [6, 8])
def test_moment_statistics_through_the_fast_kernel_match_exactextract(tmp_path, kind, res):
    # Only count/sum/mean/min/max/stdev: run_batch takes h3pipe's own coverage kernel.
    moments = ["count", "sum", "mean", "min", "max", "stdev"]
    path = _layout(kind, tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = cells_in((30.02, -1.95, 30.35, -1.62), res)
    with rasterio.open(path) as ds:
        expected = reference(ds, cells, moments)
    assert_same(run_op(info, cells, moments), expected, moments)


@pytest.mark.parametrize("kind", ["float32_nodata_nan", "float64_non_square", "int16", "uint8"])
def test_every_statistic_matches_exactextract_on_the_file(tmp_path, kind):
    path = _layout(kind, tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    # Runs past the east and south edges, so some cells are partly or wholly off the raster.
    cells = cells_in((30.02, -1.95, 30.35, -1.62), 7)
    with rasterio.open(path) as ds:
        raster_box = shapely.box(*ds.bounds)
        # For integer rasters exactextract reports median and quantiles in the raster's
        # type (truncated); h3pipe must agree with it on the file.
        expected = reference(ds, cells, ALL_STATS)
    actual = run_op(info, cells, ALL_STATS)
    assert_same(actual, expected, ALL_STATS)

    counts = [r["count"] for r in expected.values()]
    assert max(counts) > 50  # cells see many pixels,
    assert any(0 < c < 0.9 * max(counts) for c in counts)  # some only in part,
    if kind != "uint8":
        assert min(counts) == 0  # and some none at all
        assert any(expected[c]["count"] == 0
                   and shape(cell_feature(c)["geometry"]).within(raster_box)
                   for c in cells)  # even inside the raster


def test_statistics_do_not_depend_on_the_order_or_grouping_of_cells(tmp_path):
    path = _layout("float32_nodata_nan", tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = cells_in((30.02, -1.8, 30.28, -1.62), 7)
    with rasterio.open(path) as ds:
        expected = reference(ds, cells, ALL_STATS)
    rng = np.random.default_rng(3)
    shuffled = [cells[i] for i in rng.permutation(len(cells))]
    assert_same(run_op(info, shuffled, ALL_STATS), expected, ALL_STATS)
    assert_same(run_op(info, shuffled[:5], ALL_STATS), {c: expected[c] for c in shuffled[:5]},
                ALL_STATS)


def test_stats_without_count_still_null_the_empty_cells(tmp_path):
    path = _layout("float32_nodata_nan", tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = cells_in((30.02, -1.95, 30.35, -1.62), 7)
    stats = ["sum", "variety", "majority"]
    with rasterio.open(path) as ds:
        expected = reference(ds, cells, stats)
    actual = run_op(info, cells, stats)
    assert_same(actual, expected, stats)
    empty = [c for c in cells if expected[c]["variety"] == 0]
    assert empty
    for c in empty:  # exactextract says sum 0 for these; the contract says null
        assert actual[c] == {"h3_index": c, "sum": None, "variety": 0, "majority": None}


# --- nodata -----------------------------------------------------------------------------------


def test_nodata_override_applies_where_the_file_declares_none(tmp_path):
    data = np.random.default_rng(5).integers(0, 9, size=(100, 100)).astype("float32")
    data[:, 50:] = -1
    path = write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=0.002)
    cells = cells_in((30.02, -1.78, 30.18, -1.62), 7)
    extent = (30.0, -1.8, 30.2, -1.6)
    with_override = reference(NumPyRasterSource(data, *extent, nodata=-1), cells, ALL_STATS)
    as_values = reference(NumPyRasterSource(data, *extent), cells, ALL_STATS)

    info = describe_raster("src", str(path), tmp_path, nodata=-1, nodata_override=True)
    assert_same(run_op(info, cells, ALL_STATS), with_override, ALL_STATS)
    # Without the override -1 is an ordinary value: the two answers really differ.
    info = describe_raster("src", str(path), tmp_path)
    assert_same(run_op(info, cells, ALL_STATS), as_values, ALL_STATS)
    assert any(with_override[c]["count"] == 0 and as_values[c]["count"] > 50 for c in cells)


def _area(ring: list[tuple[float, float]]) -> float:
    """Shoelace area of a closed ring, in the ring's units squared."""
    edges = zip(ring, ring[1:], strict=False)
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in edges)) / 2


def _clip_east(ring: list[tuple[float, float]], xb: float) -> list[tuple[float, float]]:
    """The part of a convex ring with x >= xb (one Sutherland-Hodgman pass), closed."""
    out = []
    for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False):
        if x0 >= xb:
            out.append((x0, y0))
        if (x0 - xb) * (x1 - xb) < 0:
            out.append((xb, y0 + (y1 - y0) * (xb - x0) / (x1 - x0)))
    return [*out, out[0]] if out else []


def test_count_is_the_valid_area_in_pixels(tmp_path):
    # West of 30.1E every pixel is nodata, east of it every pixel is 1: a cell's count is
    # the area of its part east of 30.1E divided by the pixel area (all in degrees).
    px = 0.001
    data = np.ones((200, 200), dtype="int16")
    data[:, :100] = -32768
    path = write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=px, nodata=-32768)
    info = describe_raster("src", str(path), tmp_path)
    cells = cells_in((30.02, -1.78, 30.18, -1.62), 7)
    actual = run_op(info, cells, ["count", "sum", "mean", "variety", "min"])

    seen = {"west": 0, "east": 0, "across": 0}
    for c in cells:
        ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(c)]
        ring.append(ring[0])
        east = _clip_east(ring, 30.1)
        expected = _area(east) / px**2 if east else 0.0
        row = actual[c]
        assert row["count"] == pytest.approx(expected, rel=REL, abs=ABS), c
        if expected == 0:
            seen["west"] += 1
            assert row == {"h3_index": c, "count": 0.0, "sum": None, "mean": None,
                           "variety": 0, "min": None}
        else:
            seen["east" if math.isclose(expected, _area(ring) / px**2) else "across"] += 1
            assert row["sum"] == pytest.approx(expected, rel=REL)  # every valid pixel is 1
            assert (row["mean"], row["variety"], row["min"]) == (1.0, 1, 1.0)
    assert min(seen.values()) >= 2, seen


# --- quantile names ---------------------------------------------------------------------------


def _single_quantile(source: Any, cells: list[str], q: float) -> dict[str, float | None]:
    """exactextract's quantile, read as the only statistic of its call (whatever its name);
    None where the cell has no valid pixel."""
    out = {}
    for f in exact_extract(source, [cell_feature(c) for c in cells], [f"quantile(q={q})"],
                           include_cols=["cell"]):
        p = dict(f["properties"])
        cell = p.pop("cell")
        (value,) = p.values()
        out[cell] = None if value is None or math.isnan(value) else value
    return out


# 29, 57 and 58: exactextract names quantile(q=0.29) 'quantile_28' (it truncates
# 28.999...), so looking results up by a rounded name once left these quantiles null.
@pytest.mark.parametrize("n", [1, 10, 25, 29, 50, 57, 58, 75, 90, 99])
def test_quantiles_match_exactextract(tmp_path, n):
    path = _layout("float32_nodata_nan", tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = cells_in((30.02, -1.72, 30.18, -1.62), 7)
    with rasterio.open(path) as ds:
        expected = _single_quantile(ds, cells, n / 100)
    actual = run_op(info, cells, [f"quantile_{n}"])
    assert any(v is None for v in expected.values())
    assert sum(v is not None for v in expected.values()) > 10
    for c in cells:
        if expected[c] is None:
            assert actual[c][f"quantile_{n}"] is None
        else:
            assert actual[c][f"quantile_{n}"] == pytest.approx(expected[c], rel=REL)


def test_neighbouring_quantiles_are_kept_apart(tmp_path):
    # exactextract names both quantile(q=0.28) and quantile(q=0.29) 'quantile_28'.
    path = _layout("float32_nodata_nan", tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = cells_in((30.02, -1.72, 30.18, -1.62), 7)
    with rasterio.open(path) as ds:
        q28 = _single_quantile(ds, cells, 0.28)
        q29 = _single_quantile(ds, cells, 0.29)
    assert any(q28[c] != q29[c] for c in cells)  # the two really differ somewhere
    actual = run_op(info, cells, ["quantile_28", "quantile_29"])
    for c in cells:
        if q28[c] is not None:
            assert actual[c]["quantile_28"] == pytest.approx(q28[c], rel=REL), c
            assert actual[c]["quantile_29"] == pytest.approx(q29[c], rel=REL), c


# --- projected rasters ------------------------------------------------------------------------


def test_web_mercator_raster_matches_exactextract_on_reprojected_cells(tmp_path):
    from pyproj import Transformer

    to_merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    x0, y0 = to_merc.transform(30.0, -1.6)
    x0, y0 = math.floor(x0 / 250) * 250, math.ceil(y0 / 250) * 250
    rng = np.random.default_rng(11)
    cols = np.arange(120)
    data = (cols[None, :] // 6 + rng.integers(0, 4, size=(120, 120))).astype("float32")
    data[50:70, 50:70] = -1
    path = write_raster(tmp_path / "m.tif", data, west=x0, north=y0, res=250, crs="EPSG:3857",
                        nodata=-1)
    info = describe_raster("src", str(path), tmp_path)
    assert not info.crs_is_wgs84
    cells = cells_in((30.03, -1.84, 30.22, -1.63), 7)

    features = []
    for c in cells:
        ring = _densified(cell_feature(c)["geometry"]["coordinates"][0], 1e-4)
        xs, ys = to_merc.transform(ring[:, 0], ring[:, 1])
        features.append({"type": "Feature", "properties": {"cell": c}, "geometry": {
            "type": "Polygon", "coordinates": [np.column_stack([xs, ys]).tolist()]}})
    ops = ["count"] + [EE_OP.get(s, s) for s in ALL_STATS if s != "count"]
    with rasterio.open(path) as ds:
        result = exact_extract(ds, features, ops, include_cols=["cell"])
    expected = {}
    for f in result:
        p = f["properties"]
        expected[p["cell"]] = {s: (None if (p["count"] == 0 and s not in DEFINED_WHEN_EMPTY)
                                   or (isinstance(p[s], float) and math.isnan(p[s])) else p[s])
                               for s in ALL_STATS}
    assert_same(run_op(info, cells, ALL_STATS), expected, ALL_STATS)
    assert any(r["count"] == 0 for r in expected.values())
    assert max(r["count"] for r in expected.values()) > 50


def _densified(ring: list[list[float]], step: float) -> np.ndarray:
    """The ring with points every ``step`` degrees along each straight lon/lat edge."""
    pts = []
    for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False):
        n = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step))
        t = np.arange(n) / n
        pts.append(np.column_stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t]))
    pts.append(np.array([ring[0]]))
    return np.vstack(pts)
