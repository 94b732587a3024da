"""Scopes: which H3 cells a run covers, and the errors for scopes that make no sense."""

from __future__ import annotations

import json
import math

import h3
import pytest
import shapely

from h3pipe.engine.scope import order_cells, resolve_scope, scope_cells
from h3pipe.errors import ScopeError, UsageError
from tests.conftest import SHARED_DATA


def _centres_in_box_by_hand(minx, miny, maxx, maxy, res):
    """Every cell near the box, kept when its centre lies strictly inside (tested by hand)."""
    centre = h3.latlng_to_cell((miny + maxy) / 2, (minx + maxx) / 2, res)
    edge_km = h3.average_hexagon_edge_length(res, "km")
    span_km = max(maxx - minx, maxy - miny) * 111.32
    k = math.ceil(span_km / edge_km) + 2
    out = set()
    for c in h3.grid_disk(centre, k):
        lat, lng = h3.cell_to_latlng(c)
        if minx < lng < maxx and miny < lat < maxy:
            out.add(c)
    return out


def test_bbox_cells_are_those_whose_centres_lie_inside():
    scope = resolve_scope(bbox="29.0,-2.2,29.4,-1.9")
    cells = set(scope_cells(scope, 7))
    assert cells == _centres_in_box_by_hand(29.0, -2.2, 29.4, -1.9, 7)
    # Partly covered cells on the edge are out unless their centre is in: some exist.
    outside_centre = {c for c in h3.grid_disk(next(iter(cells)), 30) if c not in cells}
    assert any(shapely.box(29.0, -2.2, 29.4, -1.9).intersects(
        shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]))
        for c in outside_centre)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "30,-2,29,-1", "29,-1,30,-2",
                                  "170,0,190,1", "nan,0,1,1"])
def test_bad_bbox_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--bbox"):
        resolve_scope(bbox=text)


def test_exactly_one_scope_option():
    with pytest.raises(UsageError, match="exactly one"):
        resolve_scope()
    with pytest.raises(UsageError, match="--iso3, --bbox"):
        resolve_scope(iso3="RWA", bbox="0,0,1,1")


def test_iso3_rwanda_cells_have_centres_in_the_country():
    scope = resolve_scope(iso3="rwa")
    assert scope.key == "iso3=RWA" and "Rwanda" in scope.label
    cells = scope_cells(scope, 6)
    poly = scope.geometry
    for c in cells:
        lat, lng = h3.cell_to_latlng(c)
        assert poly.contains(shapely.Point(lng, lat))
    # The cells tile the country: their total area is the polygon's geodesic area, within
    # the ragged edge of one ring of cells (Rwanda: ~26,300 km2, res-6 cells ~40 km2).
    from pyproj import Geod

    country_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(poly)[0]) / 1e6
    cells_km2 = sum(h3.cell_area(c, "km^2") for c in cells)
    assert 25_000 < country_km2 < 27_500
    assert abs(cells_km2 - country_km2) / country_km2 < 0.03


def test_unknown_iso3_suggests_close_matches():
    with pytest.raises(ScopeError) as err:
        resolve_scope(iso3="RWD")
    assert "RWA (Rwanda)" in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_scope_is_an_error():
    scope = resolve_scope(bbox="29.0,-2.0,29.001,-1.999")
    with pytest.raises(ScopeError, match="no H3 cell centre at resolution 3"):
        scope_cells(scope, 3)


def test_resolution_out_of_range():
    scope = resolve_scope(bbox="29.0,-2.0,29.1,-1.9")
    with pytest.raises(UsageError):
        scope_cells(scope, 16)


def _write_geojson(path, geom, crs=None):
    fc = {"type": "FeatureCollection",
          "features": [{"type": "Feature", "properties": {"name": "a"},
                        "geometry": shapely.geometry.mapping(geom)}]}
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(fc))
    return path


def test_aoi_geojson_geopackage_and_projected_give_the_same_cells(tmp_path):
    import pyogrio
    from pyproj import Transformer

    poly = shapely.Polygon([(29.0, -2.0), (29.3, -2.05), (29.35, -1.8), (29.05, -1.75)])
    gj = _write_geojson(tmp_path / "a.geojson", poly)
    expected = _centres_in_poly_by_hand(poly, 7)
    assert set(scope_cells(resolve_scope(aoi=gj), 7)) == expected

    gpkg = tmp_path / "a.gpkg"
    pyogrio.raw.write(gpkg, geometry=shapely.to_wkb([poly]), field_data=[], fields=[],
                      geometry_type="Polygon", crs="EPSG:4326", driver="GPKG")
    assert set(scope_cells(resolve_scope(aoi=gpkg), 7)) == expected

    tr = Transformer.from_crs(4326, 3857, always_xy=True)
    merc = shapely.Polygon([tr.transform(x, y) for x, y in shapely.segmentize(
        poly, 0.001).exterior.coords])
    gpkg3857 = tmp_path / "merc.gpkg"
    pyogrio.raw.write(gpkg3857, geometry=shapely.to_wkb([merc]), field_data=[], fields=[],
                      geometry_type="Polygon", crs="EPSG:3857", driver="GPKG")
    got = set(scope_cells(resolve_scope(aoi=gpkg3857), 7))
    # Reprojection moves edges by well under a metre; at most a borderline cell may differ.
    assert len(got ^ expected) <= 2 and len(expected) > 50


def _centres_in_poly_by_hand(poly, res):
    minx, miny, maxx, maxy = poly.bounds
    return {c for c in _centres_in_box_by_hand(minx, miny, maxx, maxy, res)
            if poly.contains(shapely.Point(*reversed(h3.cell_to_latlng(c))))}


def test_aoi_errors(tmp_path):
    with pytest.raises(ScopeError, match="not found"):
        resolve_scope(aoi=tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(ScopeError, match="bad.geojson"):
        resolve_scope(aoi=bad)
    pts = tmp_path / "pts.geojson"
    pts.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point",
                                                             "coordinates": [29, -2]}}]}))
    with pytest.raises(ScopeError, match="no polygon"):
        resolve_scope(aoi=pts)


def test_order_cells_is_a_permutation_that_keeps_tiles_together():
    cells = list(h3.geo_to_cells(shapely.box(28.2, -2.8, 30.8, -1.2), 5))
    ordered = order_cells(list(reversed(cells)))
    assert sorted(ordered) == sorted(cells)
    # Grouped by the 1-degree tile of each cell's resolution-4 ancestor's centre.
    tiles = [tuple(math.floor(v) for v in h3.cell_to_latlng(h3.cell_to_parent(c, 4)))
             for c in ordered]
    # Each 1-degree tile appears as one contiguous run.
    runs = [t for i, t in enumerate(tiles) if i == 0 or tiles[i - 1] != t]
    assert len(runs) == len(set(tiles))


@pytest.mark.realdata
def test_shared_natural_earth_rwanda_matches_the_packaged_boundary():
    path = SHARED_DATA / "admin0" / "rwa_and_neighbours_ne_10m_v5.1.1.geojson"
    if not path.exists():
        pytest.skip("../shared/data is absent")
    data = json.loads(path.read_text())
    rwa = [f for f in data["features"] if f["properties"].get("ADM0_A3") == "RWA"]
    ref = shapely.geometry.shape(rwa[0]["geometry"])
    ours = resolve_scope(iso3="RWA").geometry
    # Same Natural Earth 10m boundary (different release packaging): near-identical areas.
    assert abs(ours.area - ref.area) / ref.area < 0.01
    assert ours.symmetric_difference(ref).area / ref.area < 0.01


@pytest.mark.parametrize("res, parent_res", [(8, 4), (9, 4), (5, 4), (15, 0), (4, 4)])
def test_ancestors_by_bit_arithmetic_match_h3(res, parent_res):
    import numpy as np

    from h3pipe.engine.scope import _ancestors

    cells = sorted(h3.grid_disk(h3.latlng_to_cell(-2.0, 29.0, res), 3))
    ints = np.array([int(c, 16) for c in cells], dtype=np.uint64)
    got = _ancestors(ints, res, parent_res)
    assert [h3.int_to_str(int(g)) for g in got] == [h3.cell_to_parent(c, parent_res)
                                                    for c in cells]


@pytest.mark.parametrize("res", [3, 5, 8, 10])
def test_cells_bounds_hold_every_vertex(res):
    from h3pipe.engine.scope import cells_bounds

    cells = list(h3.geo_to_cells(shapely.box(29.0, -2.6, 30.4, -1.2), res))[:3000]
    minx, miny, maxx, maxy = cells_bounds(cells)
    for c in cells:
        for lat, lng in h3.cell_to_boundary(c):
            assert minx <= lng <= maxx and miny <= lat <= maxy
