"""h3pipe's exact-coverage kernel against exactextract on the same pixels and polygons.

Polygons here are deliberately not hexagons: random stars (non-convex), polygons with
holes, slivers, polygons hanging off the raster, and cells of several H3 resolutions.
"""

from __future__ import annotations

import math

import h3
import numpy as np
import pytest
import shapely
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource

from h3pipe.operations import coverage

STATS = ["count", "sum", "mean", "min", "max", "stdev"]
COLUMN = {"count": coverage.COUNT, "sum": coverage.SUM, "mean": coverage.MEAN,
          "min": coverage.MIN, "max": coverage.MAX, "stdev": coverage.STDEV}
# Raster: 0.01-degree pixels, top-left corner (10, 5), 300 x 400.
X0, Y0, RES, NROWS, NCOLS = 10.0, 5.0, 0.01, 300, 400


def _raster(seed=1, nan_share=0.05):
    rng = np.random.default_rng(seed)
    values = rng.normal(500, 80, (NROWS, NCOLS))
    values[rng.random(values.shape) < nan_share] = np.nan
    values[100:130, 200:260] = np.nan  # a block without data
    return values


def _kernel(values, polygons):
    us, vs, ring_starts, poly_starts = [], [], [0], [0]
    for poly in polygons:
        for ring in [poly.exterior, *poly.interiors]:
            xy = np.asarray(ring.coords)
            us.append((xy[:, 0] - X0) / RES)
            vs.append((Y0 - xy[:, 1]) / RES)
            ring_starts.append(ring_starts[-1] + len(xy))
        poly_starts.append(len(ring_starts) - 1)
    return coverage.polygon_moments(values, np.concatenate(us), np.concatenate(vs),
                                    np.array(ring_starts, dtype=np.int64),
                                    np.array(poly_starts, dtype=np.int64),
                                    np.ones(values.shape[0]))


def _reference(values, polygons):
    src = NumPyRasterSource(values, X0, Y0 - NROWS * RES, X0 + NCOLS * RES, Y0)
    feats = [{"type": "Feature", "properties": {"i": i},
              "geometry": shapely.geometry.mapping(p)} for i, p in enumerate(polygons)]
    return {f["properties"]["i"]: f["properties"]
            for f in exact_extract(src, feats, STATS, include_cols=["i"])}


def _assert_agree(values, polygons, rel=1e-9):
    ours = _kernel(values, polygons)
    ref = _reference(values, polygons)
    assert len(ref) == len(polygons)
    for i in range(len(polygons)):
        e = ref[i]
        assert ours[i, coverage.COUNT] == pytest.approx(e["count"], rel=rel, abs=1e-12)
        if e["count"] == 0:
            assert math.isnan(ours[i, coverage.MEAN]) and math.isnan(ours[i, coverage.MIN])
            continue
        for s in STATS:
            assert ours[i, COLUMN[s]] == pytest.approx(e[s], rel=rel, abs=1e-9), (i, s)


def _star(cx, cy, r_out, r_in, points, rot=0.0):
    pts = []
    for k in range(2 * points):
        r = r_out if k % 2 == 0 else r_in
        a = rot + math.pi * k / points
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return shapely.Polygon(pts)


def test_non_convex_polygons_agree_with_exactextract():
    rng = np.random.default_rng(3)
    polys = [_star(rng.uniform(10.3, 13.7), rng.uniform(2.3, 4.7), rng.uniform(0.05, 0.3),
                   rng.uniform(0.01, 0.05), int(rng.integers(3, 9)), rng.uniform(0, 3))
             for _ in range(60)]
    assert not all(p.convex_hull.equals(p) for p in polys)
    _assert_agree(_raster(), polys)


def test_holes_and_both_orientations():
    outer = shapely.box(11.003, 3.004, 11.517, 3.611)
    hole = shapely.box(11.1, 3.1, 11.3, 3.3).buffer(0.05)
    with_hole = shapely.Polygon(outer.exterior.coords, [hole.exterior.coords])
    reversed_rings = shapely.Polygon(list(outer.exterior.coords)[::-1],
                                     [list(hole.exterior.coords)[::-1]])
    _assert_agree(_raster(), [with_hole, reversed_rings, outer])
    ours = _kernel(np.ones((NROWS, NCOLS)), [with_hole])
    assert ours[0, coverage.COUNT] == pytest.approx(with_hole.area / RES**2, rel=1e-9)


def test_polygons_off_the_raster_slivers_and_pixel_aligned_edges():
    polys = [
        shapely.box(9.5, 4.0, 10.2, 6.0),            # hangs off the west and north edges
        shapely.box(13.9, 1.5, 14.5, 2.1),           # off the east and south edges
        shapely.box(20, 20, 21, 21),                 # entirely outside: count 0
        shapely.box(11.0, 3.0, 11.2, 3.2),           # edges on pixel boundaries
        shapely.Polygon([(11.5, 3.5), (11.9, 3.500001), (11.5, 3.500002)]),  # a sliver
        shapely.box(12.0, 3.75, 12.6, 3.99),         # inside the block without data
    ]
    values = _raster()
    _assert_agree(values, polys)
    ours = _kernel(values, polys)
    assert ours[2, coverage.COUNT] == 0 and math.isnan(ours[2, coverage.MEAN])
    assert ours[5, coverage.COUNT] == 0


@pytest.mark.parametrize("res", [5, 7, 8, 9])
def test_h3_cells_agree_with_exactextract(res):
    cells = list(h3.geo_to_cells(shapely.box(10.5, 2.5, 13.5, 4.5), res))[:4000]
    polys = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)])
             for c in cells]
    _assert_agree(_raster(seed=res), polys)


def test_constant_cells_have_zero_stdev_exactly():
    values = np.full((NROWS, NCOLS), 1288.1335, dtype=np.float32)
    cells = list(h3.geo_to_cells(shapely.box(11, 3, 11.5, 3.5), 9))[:200]
    polys = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)])
             for c in cells]
    ours = _kernel(values, polys)
    assert (ours[:, coverage.STDEV] == 0).all()
    assert (ours[:, coverage.MEAN] == np.float64(np.float32(1288.1335))).all()


def test_a_sliver_of_a_pixel_still_decides_min_and_max():
    # Found by the benchmark: at resolution 9 an edge of this cell passes ~1e-7 pixel from
    # a corner of the 1-arcsecond Copernicus grid, leaving a pixel covered by ~3e-15 of
    # its area. exactextract counts any positive float32 coverage for min and max; so
    # must we, or max differs by a whole pixel value.
    cell = "896ad8348abffff"
    px = 1 / 3600
    x0, y0 = 29.0 - 0.5 * px, -1.0 + 0.5 * px  # the E029/S02 tile's grid
    lat, lng = h3.cell_to_latlng(cell)
    col0 = int((lng - x0) / px) - 40
    row0 = int((y0 - lat) / px) - 40
    west, north = x0 + col0 * px, y0 - row0 * px
    values = np.random.default_rng(0).uniform(1000, 1100, (80, 80))
    ring = [(lo, la) for la, lo in h3.cell_to_boundary(cell)] + [None]
    ring[-1] = ring[0]
    poly = shapely.Polygon(ring)
    src = NumPyRasterSource(values, west, north - 80 * px, west + 80 * px, north)
    feat = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(poly)}
    ref = exact_extract(src, [feat], ["coverage", "cell_id"])[0]["properties"]
    cov = np.asarray(ref["coverage"])
    slivers = np.asarray(ref["cell_id"])[(cov > 0) & (cov < 1e-9)]
    assert len(slivers) >= 1, "the grid no longer reproduces the sliver"
    for cid in slivers:
        values.flat[int(cid)] = 5000.0  # the sliver pixel holds the maximum
    expected = exact_extract(src, [feat], ["max", "count"])[0]["properties"]
    assert expected["max"] == 5000.0
    u = (np.asarray(poly.exterior.coords)[:, 0] - west) / px
    v = (north - np.asarray(poly.exterior.coords)[:, 1]) / px
    ours = coverage.polygon_moments(values, u, v, np.array([0, len(u)], dtype=np.int64),
                                    np.array([0, 1], dtype=np.int64), np.ones(values.shape[0]))
    assert ours[0, coverage.MAX] == 5000.0
    assert ours[0, coverage.COUNT] == pytest.approx(expected["count"], rel=1e-9)


def test_a_nearly_vertical_edge_costs_no_precision():
    # A real building edge 5e-12 pixel off vertical: dividing by that du once cost 2e-5 of
    # the polygon's area.
    from h3pipe.operations import coverage

    x0, x1, y0, y1 = 30.88975439999782, 30.937754400013056, 11.17543217880695, 11.27863218
    u = np.array([x0 + 5e-12, x1, x1, x0, x0 + 5e-12])
    v = np.array([y0, y0, y1, y1, y0])
    got = coverage.polygon_moments(np.ones((13, 32)), u, v, np.array([0, 5]),
                                   np.array([0, 1]), np.ones(13))[0, coverage.COUNT]
    area = (x1 - x0) * (y1 - y0)
    assert got == pytest.approx(area, rel=1e-7)
