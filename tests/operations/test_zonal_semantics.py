"""What ``zonal_stats``' options mean (:class:`ZonalStats`): ``weights: area``, the
``coverage`` column and ``min_coverage``, ``cell_area_km2`` and ``density``, ``fractions``,
``histogram`` and ``integer_quantiles``.

Expected numbers come from exactextract called here on the same pixels (with its own
options: ``coverage_weight=area_spherical_m2``, ``frac``/``unique``), from ``h3.cell_area``,
from shapely areas, or from sums worked out by hand; never from h3pipe.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pyarrow as pa
import pytest
import rasterio
import shapely
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource

from h3pipe.operations.base import Batch
from h3pipe.operations.zonal_stats import ZonalStats
from h3pipe.sources.raster import describe_raster
from tests.conftest import cell_feature, write_raster

REL = 1e-6
R = 6378137.0  # exactextract's sphere for area_spherical_m2
AREA = "coverage_weight=area_spherical_m2"


def _cells(bbox: tuple[float, float, float, float], res: int) -> list[str]:
    return sorted(h3.geo_to_cells(shapely.box(*bbox), res))


def _over_cells(info: Any, cells: list[str], params: dict[str, Any]) -> dict[str, dict]:
    batch = Batch(run_id="r", step_id="stats", number=1, operation="zonal_stats",
                  params=params, cells=tuple(cells), resolution=h3.get_resolution(cells[0]),
                  source_id=info.source_id, raster=info)
    table = ZonalStats().run_batch(batch)
    return {r["h3_index"]: r for r in table.to_pylist()}


def _over_features(info: Any, geoms: list[Any], params: dict[str, Any]) -> list[dict]:
    rows = pa.table({"feature_id": [str(i) for i in range(len(geoms))],
                     "geometry": shapely.to_wkb(np.array(geoms))})
    batch = Batch(run_id="r", step_id="stats", number=1, operation="zonal_stats",
                  params=params, resolution=8, rows=rows, raster=info)
    return ZonalStats().run_batch(batch).to_pylist()


def _features(geoms: list[Any]) -> list[dict[str, Any]]:
    return [{"type": "Feature", "properties": {"cell": str(i)},
             "geometry": json.loads(shapely.to_geojson(g))} for i, g in enumerate(geoms)]


def _ee(source: Any, features: list[dict[str, Any]], ops: dict[str, str]) -> dict[str, dict]:
    """exactextract's answer per feature (by its 'cell' property), one field per key of
    ``ops`` ('name': 'op(options)'), NaN read as None."""
    result = exact_extract(source, features, [f"{k}={v}" for k, v in ops.items()],
                           include_cols=["cell"])
    out = {}
    for f in result:
        p = f["properties"]
        # exactextract appends '_<q>' to the name of a quantile: 'q25' comes back 'q25_25'.
        got = {k: p[k] if k in p else next(v for f, v in p.items() if f.startswith(k + "_"))
               for k in ops}
        out[p["cell"]] = {k: None if isinstance(v, float) and math.isnan(v) else v
                          for k, v in got.items()}
    return out


def _cell_area_px(cell: str, px2: float) -> float:
    """The cell's polygon area (lon/lat degrees squared, shapely) in pixels."""
    return shapely.geometry.shape(cell_feature(cell)["geometry"]).area / px2


def _share(frac: Any, unique: Any, value: float) -> float:
    """exactextract's frac of ``value`` (0 where the zone holds none of it)."""
    hit = np.asarray(unique) == value
    return float(np.asarray(frac)[hit].sum()) if hit.any() else 0.0


# --- weights: area ---------------------------------------------------------------------------

def _north(tmp_path: Path) -> Path:
    """1 x 1 degree at 60N (10..11E, 59.5..60.5N), 0.005-degree pixels: values grow
    southward (about 0.5 per row) with noise; a nodata block in the middle."""
    rng = np.random.default_rng(1)
    data = (np.arange(200)[:, None] * 0.5 + rng.normal(0, 1, (200, 200))).astype("float32")
    data[80:120, 80:120] = -9999
    return write_raster(tmp_path / "north.tif", data, west=10.0, north=60.5, res=0.005,
                        nodata=-9999)


# 'median' sends the moments through exactextract rather than h3pipe's kernel.
@pytest.mark.parametrize("extra", [[], ["median"]], ids=["kernel", "exactextract"])
def test_area_weights_match_exactextract_area_spherical_m2_over_cells(tmp_path, extra):
    path = _north(tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((10.1, 59.6, 11.1, 60.4), 5)  # past the east edge, over the nodata block
    stats = ["count", "sum", "mean", "stdev", *extra]
    got = _over_cells(info, cells, {"stats": stats, "weights": "area"})
    with rasterio.open(path) as ds:
        want = _ee(ds, [cell_feature(c) for c in cells], {s: f"{s}({AREA})" for s in stats})
    for c in cells:
        for s in stats:
            assert got[c][s] == pytest.approx(want[c][s], rel=REL), (c, s)
    counts = [want[c]["count"] for c in cells]
    assert min(counts) < 0.5 * max(counts) and max(counts) > 1e8  # m2, partly covered cells


def test_area_weighted_mean_of_a_pixel_aligned_box_is_worked_out_by_hand(tmp_path):
    # Each row's value is its latitude: with weights: area the mean over rows 10..29 and
    # columns 5..14 is sum(lat * A) / sum(A), A = R^2 * dlon * (sin top - sin bottom).
    res, north = 0.01, 61.0
    lat = north - res * (np.arange(40) + 0.5)
    data = np.repeat(lat[:, None], 20, axis=1).astype("float64")
    path = write_raster(tmp_path / "lat.tif", data, west=10.0, north=north, res=res)
    info = describe_raster("src", str(path), tmp_path)
    box = shapely.box(10.05, north - 0.30, 10.15, north - 0.10)
    top = north - res * np.arange(10, 30)
    a = R**2 * math.radians(res) * (np.sin(np.radians(top)) - np.sin(np.radians(top - res)))
    rows = slice(10, 30)

    [area] = _over_features(info, [box], {"stats": ["count", "sum", "mean"],
                                          "weights": "area"})
    [plain] = _over_features(info, [box], {"stats": ["count", "sum", "mean"]})

    assert area["count"] == pytest.approx(10 * a.sum(), rel=1e-9)
    assert area["sum"] == pytest.approx(10 * (lat[rows] * a).sum(), rel=1e-9)
    assert area["mean"] == pytest.approx((lat[rows] * a).sum() / a.sum(), rel=1e-12)
    assert plain["count"] == pytest.approx(200)
    assert plain["mean"] == pytest.approx(lat[rows].mean(), rel=1e-12)
    # Southern rows are larger, so they pull the mean south; the gap is far above round-off.
    assert plain["mean"] - area["mean"] > 5e-5  # 1.04e-4 degrees


def test_area_weighted_mean_differs_from_the_plain_one_on_a_latitude_gradient(tmp_path):
    path = _north(tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((10.1, 59.6, 10.9, 60.4), 5)
    area = _over_cells(info, cells, {"stats": ["mean"], "weights": "area"})
    plain = _over_cells(info, cells, {"stats": ["mean"]})
    with rasterio.open(path) as ds:
        want = _ee(ds, [cell_feature(c) for c in cells],
                   {"wmean": f"mean({AREA})", "mean": "mean", "count": "count"})
    seen = [c for c in cells if want[c]["count"] > 100]
    assert len(seen) > 10
    for c in seen:
        assert area[c]["mean"] == pytest.approx(want[c]["wmean"], rel=REL)
        assert plain[c]["mean"] == pytest.approx(want[c]["mean"], rel=REL)
        # Values grow southward, where pixels are larger: the weighted mean is higher.
        assert area[c]["mean"] - plain[c]["mean"] > 1e-3, c


def test_area_weights_over_feature_polygons_match_exactextract(tmp_path):
    path = _north(tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    rng = np.random.default_rng(4)
    geoms = []
    for _ in range(8):
        x, y = rng.uniform(10.05, 10.95), rng.uniform(59.55, 60.45)
        geoms.append(shapely.Point(x, y).buffer(rng.uniform(0.02, 0.08), quad_segs=4)
                     .difference(shapely.Point(x, y).buffer(0.01, quad_segs=3)))
    geoms.append(shapely.MultiPolygon([shapely.box(10.11, 59.61, 10.2, 59.7),
                                       shapely.box(10.6, 60.3, 10.75, 60.42)]))
    geoms.append(shapely.box(10.9, 60.0, 11.2, 60.1))  # half off the raster
    stats = ["count", "sum", "mean", "stdev"]
    got = _over_features(info, geoms, {"stats": stats, "weights": "area"})
    with rasterio.open(path) as ds:
        want = _ee(ds, _features(geoms), {s: f"{s}({AREA})" for s in stats})
    for i, row in enumerate(got):
        for s in stats:
            assert row[s] == pytest.approx(want[str(i)][s], rel=REL), (i, s)


# --- coverage and min_coverage --------------------------------------------------------------

PX = 0.002


def _patchy(tmp_path: Path) -> Path:
    """0.3 x 0.24 degrees at 30E, 1.6S: a nodata block that holds whole res-7 cells, and
    5% NaN pixels."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 12, size=(120, 150)).astype("float32")
    data[40:80, 30:70] = -9999
    data[rng.random(data.shape) < 0.05] = np.nan
    return write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=PX, nodata=-9999)


def _expected_coverage(path: Path, cells: list[str]) -> dict[str, float]:
    with rasterio.open(path) as ds:
        counts = _ee(ds, [cell_feature(c) for c in cells], {"count": "count"})
    return {c: counts[c]["count"] / _cell_area_px(c, PX**2) for c in cells}


# Whatever the weights, coverage counts pixels; 'median' takes the exactextract route.
@pytest.mark.parametrize(("weights", "extra"), [("fraction", []), ("area", []),
                                                ("area", ["median"])],
                         ids=["fraction", "area", "exactextract"])
def test_coverage_is_the_valid_covered_share_of_the_cell(tmp_path, weights, extra):
    path = _patchy(tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((30.02, -1.95, 30.35, -1.62), 7)  # past the east and south edges
    stats = ["count", "coverage", *extra]
    got = _over_cells(info, cells, {"stats": stats, "weights": weights})
    want = _expected_coverage(path, cells)

    for c in cells:
        assert got[c]["coverage"] == pytest.approx(min(want[c], 1.0), rel=REL, abs=1e-9), c
    empty = [c for c in cells if want[c] == 0]
    half = [c for c in cells if 0.2 < want[c] < 0.8]
    with rasterio.open(path) as ds:
        raster = shapely.box(*ds.bounds)
    block = shapely.box(30.06, -1.76, 30.14, -1.68)  # the nodata block
    shapes = {c: shapely.geometry.shape(cell_feature(c)["geometry"]) for c in cells}
    inside = [c for c in cells if shapes[c].within(raster) and shapes[c].disjoint(block)]
    assert empty and half and len(inside) > 5
    for c in empty:
        assert (got[c]["count"], got[c]["coverage"]) == (0.0, 0.0)
    for c in inside:  # only the scattered NaN pixels missing: 5% of them, roughly
        assert 0.85 < got[c]["coverage"] < 1.0


def test_coverage_of_a_cell_wholly_over_valid_pixels_is_one(tmp_path):
    data = np.ones((120, 150), "float32")
    path = write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=PX)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((30.05, -1.78, 30.25, -1.66), 7)
    got = _over_cells(info, cells, {"stats": ["coverage"], "weights": "area"})
    assert len(cells) > 5
    for c in cells:
        assert got[c]["coverage"] == pytest.approx(1.0, abs=1e-6)


def test_coverage_over_feature_polygons_is_worked_out_by_hand(tmp_path):
    # 0.01-degree pixels, 20 x 20, top-left (29, -1.9); nodata in rows 0..4, cols 0..4.
    data = np.full((20, 20), 3.0, "float32")
    data[:5, :5] = -1
    path = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.01, nodata=-1)
    info = describe_raster("src", str(path), tmp_path)
    geoms = [
        shapely.box(29.0, -1.95, 29.05, -1.90),    # the nodata block: 0
        shapely.box(29.15, -2.05, 29.25, -2.00),   # half east of the raster: 0.5
        shapely.box(29.02, -1.95, 29.07, -1.90),   # 3 of its 5 columns nodata: 0.4
        shapely.MultiPolygon([shapely.box(29.0, -1.95, 29.05, -1.90),
                              shapely.box(29.1, -2.0, 29.15, -1.95)]),  # 0 and 1: 0.5
    ]
    got = _over_features(info, geoms, {"stats": ["count", "coverage", "mean"],
                                       "min_coverage": 0.45})
    assert [r["coverage"] for r in got] == pytest.approx([0.0, 0.5, 0.4, 0.5], abs=1e-9)
    assert [r["count"] for r in got] == pytest.approx([0, 25, 10, 25])
    means = [r["mean"] for r in got]
    assert [m is None for m in means] == [True, False, True, False]
    assert (means[1], means[3]) == pytest.approx((3.0, 3.0))


def test_min_coverage_nulls_the_statistics_of_cells_below_it(tmp_path):
    path = _patchy(tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((30.02, -1.95, 30.35, -1.62), 7)
    stats = ["count", "coverage", "cell_area_km2", "sum", "mean", "median", "variety",
             "density", "fractions"]
    params = {"stats": stats, "classes": [{"value": 3, "name": "three"}]}
    floored = _over_cells(info, cells, {**params, "min_coverage": 0.5})
    free = _over_cells(info, cells, params)
    cover = _expected_coverage(path, cells)
    assert not any(abs(v - 0.5) < 0.01 for v in cover.values())  # no cell on the fence
    low = [c for c in cells if cover[c] < 0.5]
    assert sum(0 < cover[c] for c in low) >= 2 and sum(cover[c] == 0 for c in low) >= 2
    assert len(cells) - len(low) >= 10

    kept = ("count", "coverage", "cell_area_km2")
    nulled = ("sum", "mean", "median", "variety", "density", "frac_three")
    for c in cells:
        if c in low:
            assert {k: floored[c][k] for k in kept} == {k: free[c][k] for k in kept}
            # variety too: a 0 would say the cell holds no value at all.
            assert all(floored[c][k] is None for k in nulled), floored[c]
            if cover[c] > 0:  # values were there: the floor is what nulled them
                assert free[c]["mean"] is not None and free[c]["variety"] > 0
        else:
            assert floored[c] == free[c]


# --- cell_area_km2 and density --------------------------------------------------------------

def test_cell_area_is_h3s_and_density_is_the_sum_per_km2(tmp_path):
    path = _patchy(tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((30.02, -1.95, 30.35, -1.62), 7)
    got = _over_cells(info, cells, {"stats": ["sum", "cell_area_km2", "density"]})
    with rasterio.open(path) as ds:
        want = _ee(ds, [cell_feature(c) for c in cells], {"sum": "sum", "count": "count"})
    empty = 0
    for c in cells:
        km2 = h3.cell_area(c, "km^2")
        assert got[c]["cell_area_km2"] == pytest.approx(km2, rel=1e-12)
        if want[c]["count"] == 0:
            empty += 1
            assert got[c]["density"] is None and got[c]["sum"] is None
        else:
            assert got[c]["density"] == pytest.approx(want[c]["sum"] / km2, rel=REL)
    assert empty >= 1


# --- fractions --------------------------------------------------------------------------------

CLASSES = [{"value": 1, "name": "water"}, {"value": 2, "name": "forest"},
           {"value": 3, "name": "urban"}]  # 4 is a value in no class


def _landcover(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Classes 1..4 in patches of 4 x 4 pixels, 0 (nodata) in a block and scattered."""
    patches = rng.integers(1, 5, size=(shape[0] // 4 + 1, shape[1] // 4 + 1))
    data = np.kron(patches, np.ones((4, 4)))[:shape[0], :shape[1]].astype("uint8")
    data[40:80, 30:70] = 0
    data[rng.random(shape) < 0.03] = 0
    return data


@pytest.mark.parametrize("weights", ["fraction", "area"])
def test_fractions_match_exactextract_frac_per_class(tmp_path, weights):
    data = _landcover(np.random.default_rng(2), (120, 150))
    path = write_raster(tmp_path / "lc.tif", data, west=30.0, north=-1.6, res=PX, nodata=0)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((30.02, -1.95, 30.35, -1.62), 7)
    table = ZonalStats().run_batch(Batch(
        run_id="r", step_id="s", number=1, operation="zonal_stats",
        params={"stats": ["count", "fractions"], "classes": CLASSES, "weights": weights},
        cells=tuple(cells), resolution=7, source_id="src", raster=info))
    assert table.column_names == ["h3_index", "count", "frac_water", "frac_forest",
                                  "frac_urban"]
    got = {r["h3_index"]: r for r in table.to_pylist()}
    opt = f"({AREA})" if weights == "area" else ""
    with rasterio.open(path) as ds:
        want = _ee(ds, [cell_feature(c) for c in cells],
                   {"frac": f"frac{opt}", "unique": "unique", "count": "count"})

    unlisted = 0
    for c in cells:
        if want[c]["count"] == 0:
            assert [got[c][f"frac_{k['name']}"] for k in CLASSES] == [None] * 3
            continue
        shares = [_share(want[c]["frac"], want[c]["unique"], k["value"]) for k in CLASSES]
        assert [got[c][f"frac_{k['name']}"] for k in CLASSES] == pytest.approx(
            shares, rel=REL, abs=1e-9), c
        four = _share(want[c]["frac"], want[c]["unique"], 4)
        unlisted += four > 0.05
        # Class 4 counts in the denominator only: the three shares leave its share out.
        assert sum(shares) == pytest.approx(1 - four, abs=1e-6)
    assert unlisted > 5


def test_fractions_over_multipolygons_sum_their_parts(tmp_path):
    data = _landcover(np.random.default_rng(5), (120, 150))
    path = write_raster(tmp_path / "lc.tif", data, west=30.0, north=-1.6, res=PX, nodata=0)
    info = describe_raster("src", str(path), tmp_path)
    ring = shapely.Point(30.1, -1.7).buffer(0.03, quad_segs=6)
    geoms = [
        shapely.MultiPolygon([shapely.box(30.011, -1.651, 30.043, -1.613),
                              shapely.box(30.2, -1.75, 30.231, -1.7)]),
        shapely.MultiPolygon([ring.difference(shapely.Point(30.1, -1.7).buffer(0.01)),
                              shapely.box(30.25, -1.8, 30.32, -1.76)]),  # half off east
        ring,
    ]
    got = _over_features(info, geoms, {"stats": ["fractions", "majority"],
                                       "classes": CLASSES})
    with rasterio.open(path) as ds:
        want = _ee(ds, _features(geoms), {"frac": "frac", "unique": "unique",
                                          "majority": "majority"})
    for i, row in enumerate(got):
        w = want[str(i)]
        assert [row[f"frac_{k['name']}"] for k in CLASSES] == pytest.approx(
            [_share(w["frac"], w["unique"], k["value"]) for k in CLASSES], rel=REL, abs=1e-9)
        assert row["majority"] == w["majority"]
    assert len({round(r["frac_water"], 6) for r in got}) == 3


def test_fractions_of_each_band_of_a_multiband_source(tmp_path):
    rng = np.random.default_rng(9)
    bands = np.stack([_landcover(rng, (120, 150)), _landcover(rng, (120, 150))])
    path = tmp_path / "two.tif"
    with rasterio.open(path, "w", driver="GTiff", width=150, height=120, count=2,
                       dtype="uint8", crs="EPSG:4326", nodata=0,
                       transform=rasterio.transform.from_origin(30.0, -1.6, PX, PX)) as ds:
        ds.write(bands)
    info = describe_raster("src", str(path), tmp_path, bands=(1, 2), band_names=("now", "then"))
    cells = _cells((30.02, -1.83, 30.2, -1.62), 7)
    table = ZonalStats().run_batch(Batch(
        run_id="r", step_id="s", number=1, operation="zonal_stats",
        params={"stats": ["fractions"], "classes": CLASSES[:2]}, cells=tuple(cells),
        resolution=7, source_id="src", raster=info))
    assert table.column_names == ["h3_index", "now_frac_water", "now_frac_forest",
                                  "then_frac_water", "then_frac_forest"]
    got = {r["h3_index"]: r for r in table.to_pylist()}
    differ = 0
    for name, band in zip(("now", "then"), bands, strict=True):
        values = np.where(band == 0, np.nan, band.astype("float64"))
        source = NumPyRasterSource(values, 30.0, -1.6 - 120 * PX, 30.0 + 150 * PX, -1.6)
        want = _ee(source, [cell_feature(c) for c in cells],
                   {"frac": "frac", "unique": "unique", "count": "count"})
        for c in cells:
            for k in CLASSES[:2]:
                actual = got[c][f"{name}_frac_{k['name']}"]
                if want[c]["count"] == 0:
                    assert actual is None
                else:
                    assert actual == pytest.approx(
                        _share(want[c]["frac"], want[c]["unique"], k["value"]), rel=REL,
                        abs=1e-9)
        differ = sum(got[c]["now_frac_water"] != got[c]["then_frac_water"] for c in cells)
    assert differ > len(cells) // 2


def test_majority_and_minority_break_ties_as_exactextract_does(tmp_path):
    # Boxes on whole pixels over two values in equal numbers: exact ties. Pixels of 1/8
    # degree, so that every edge is exact in binary (see the xfail below for 0.01).
    res = 0.125
    data = np.array([[5, 5, 3, 3, 8, 2],
                     [7, 7, 7, 1, 2, 8]], dtype="float32")
    path = write_raster(tmp_path / "r.tif", data, west=29.0, north=-2.0, res=res)
    info = describe_raster("src", str(path), tmp_path)
    geoms = [shapely.box(29.0, -2.0 - res, 29.0 + 4 * res, -2.0),          # 5 5 3 3
             shapely.box(29.0 + 4 * res, -2.0 - 2 * res, 29.75, -2.0),     # 8 2 / 2 8
             shapely.box(29.0 + 2 * res, -2.0 - 2 * res, 29.5, -2.0)]      # 3 3 / 7 1
    stats = ["majority", "minority", "median", "variety"]
    got = _over_features(info, geoms, {"stats": stats})
    with rasterio.open(path) as ds:
        want = _ee(ds, _features(geoms), {**{s: s for s in stats}, "frac": "frac"})
    for i, row in enumerate(got):
        assert {s: row[s] for s in stats} == {s: want[str(i)][s] for s in stats}, i
    assert list(want["0"]["frac"]) == [0.5, 0.5]  # the ties are real
    # exactextract (0.3) resolves a tie toward the larger value for majority and the smaller
    # for minority, wherever the pixels lie.
    assert [(r["majority"], r["minority"]) for r in got] == [(5, 3), (8, 2), (3, 1)]


def test_a_polygon_on_pixel_edges_sees_no_neighbouring_pixel(tmp_path):
    # Pixel coordinates from the window's extent once left such a polygon slivers of 1e-13
    # of its neighbours, which decided min, minority, variety and the median.
    data = np.array([[5, 5, 3, 3, 8, 2],
                     [7, 7, 7, 1, 2, 8]], dtype="float32")
    path = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.01)
    info = describe_raster("src", str(path), tmp_path)
    box = shapely.box(29.04, -1.92, 29.06, -1.9)  # columns 4 and 5 exactly: 8 2 / 2 8
    stats = ["min", "minority", "variety", "median"]
    [got] = _over_features(info, [box], {"stats": stats})
    with rasterio.open(path) as ds:
        want = _ee(ds, _features([box]), {s: s for s in stats})["0"]
    assert (want["min"], want["variety"], want["median"]) == (2.0, 2, 5.0)
    assert {s: got[s] for s in stats} == {s: want[s] for s in stats}
    [alone] = _over_features(info, [box], {"stats": ["min", "max", "count"]})  # the kernel
    assert (alone["min"], alone["max"], alone["count"]) == (2.0, 8.0, 4.0)


# --- histogram --------------------------------------------------------------------------------

def test_histogram_shares_match_exactextract_on_the_binned_raster(tmp_path):
    edges = [0, 1, 2.5, 10]
    rng = np.random.default_rng(6)
    # Values on the edges themselves, inside each bin, and outside all of them.
    choices = np.array([-1, 0, 0.5, 1, 2, 2.5, 3, 9.5, 10, 11], "float32")
    data = choices[rng.integers(0, len(choices), (120, 150))]
    data[40:80, 30:70] = np.nan
    path = write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=PX)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((30.02, -1.95, 30.35, -1.62), 7)
    table = ZonalStats().run_batch(Batch(
        run_id="r", step_id="s", number=1, operation="zonal_stats",
        params={"stats": ["histogram"], "bins": edges}, cells=tuple(cells), resolution=7,
        source_id="src", raster=info))
    names = ["hist_0_1", "hist_1_2p5", "hist_2p5_10"]
    assert table.column_names == ["h3_index", *names]
    got = {r["h3_index"]: r for r in table.to_pylist()}

    # Bin by hand: [0, 1) -> 0, [1, 2.5) -> 1, [2.5, 10] -> 2, anything else valid -> 9.
    binned = np.full(data.shape, 9.0)
    binned[(data >= 0) & (data < 1)] = 0
    binned[(data >= 1) & (data < 2.5)] = 1
    binned[(data >= 2.5) & (data <= 10)] = 2
    binned[np.isnan(data)] = np.nan
    source = NumPyRasterSource(binned, 30.0, -1.6 - 120 * PX, 30.0 + 150 * PX, -1.6)
    want = _ee(source, [cell_feature(c) for c in cells],
               {"frac": "frac", "unique": "unique", "count": "count"})
    outside = 0
    for c in cells:
        if want[c]["count"] == 0:
            assert [got[c][n] for n in names] == [None] * 3
            continue
        assert [got[c][n] for n in names] == pytest.approx(
            [_share(want[c]["frac"], want[c]["unique"], j) for j in range(3)], rel=REL,
            abs=1e-9), c
        outside += _share(want[c]["frac"], want[c]["unique"], 9) > 0.1
    assert outside > 5  # -1 and 11 fall in no bin, and only shrink the others


# --- integer_quantiles ------------------------------------------------------------------------

def test_integer_quantiles_interpolate_or_truncate_toward_zero(tmp_path):
    rng = np.random.default_rng(12)
    data = rng.choice(np.array([-7, -4, -3, 2, 5, 6], "int16"), size=(120, 150))
    data[:, :60] = -np.abs(data[:, :60])  # the west mostly negative: truncation rounds up
    data[40:80, 30:70] = -32768
    path = write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=PX,
                        nodata=-32768)
    info = describe_raster("src", str(path), tmp_path)
    cells = _cells((30.02, -1.95, 30.35, -1.62), 7)
    stats = ["median", "quantile_25", "quantile_90"]
    ops = {"median": "median", "quantile_25": "quantile(q=0.25)",
           "quantile_90": "quantile(q=0.9)", "count": "count"}
    truncated = _over_cells(info, cells, {"stats": stats})
    interpolated = _over_cells(info, cells, {"stats": stats, "integer_quantiles": "interpolate"})
    with rasterio.open(path) as ds:
        on_ints = _ee(ds, [cell_feature(c) for c in cells], ops)
    floats = np.where(data == -32768, np.nan, data.astype("float64"))
    on_floats = _ee(NumPyRasterSource(floats, 30.0, -1.6 - 120 * PX, 30.0 + 150 * PX, -1.6),
                    [cell_feature(c) for c in cells], ops)

    differ = negative = 0
    for c in cells:
        for s in stats:
            if on_ints[c]["count"] == 0:
                assert truncated[c][s] is None and interpolated[c][s] is None
                continue
            assert truncated[c][s] == on_ints[c][s], (c, s)
            assert interpolated[c][s] == pytest.approx(on_floats[c][s], rel=1e-10), (c, s)
            x = on_floats[c][s]
            assert truncated[c][s] == math.trunc(x)
            differ += x != math.trunc(x)
            negative += x < 0 and math.floor(x) != math.trunc(x)
    assert differ > 10 and negative > 3
