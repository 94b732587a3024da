"""Scopes: which H3 cells a run covers, and the errors for scopes that make no sense."""

from __future__ import annotations

import json
import math

import h3
import numpy as np
import pytest
import shapely

from h3pipe.errors import ScopeError, UsageError
from h3pipe.planning.scope import resolve_scope, scope_cells
from tests.conftest import SHARED_DATA


def _cells(scope, res):
    """The scope's cells as hex strings, in the order the run takes them."""
    return [h3.int_to_str(int(c)) for c in scope_cells(scope, res).ids()]


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
    cells = set(_cells(scope, 7))
    assert cells == _centres_in_box_by_hand(29.0, -2.2, 29.4, -1.9, 7)
    # Partly covered cells on the edge are out unless their centre is in: some exist.
    outside_centre = {c for c in h3.grid_disk(next(iter(cells)), 30) if c not in cells}
    assert any(shapely.box(29.0, -2.2, 29.4, -1.9).intersects(
        shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]))
        for c in outside_centre)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "30,-2,30,-1", "29,-1,30,-2",
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
    cells = _cells(scope, 6)
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
    assert set(_cells(resolve_scope(aoi=gj), 7)) == expected

    gpkg = tmp_path / "a.gpkg"
    pyogrio.raw.write(gpkg, geometry=shapely.to_wkb([poly]), field_data=[], fields=[],
                      geometry_type="Polygon", crs="EPSG:4326", driver="GPKG")
    assert set(_cells(resolve_scope(aoi=gpkg), 7)) == expected

    tr = Transformer.from_crs(4326, 3857, always_xy=True)
    merc = shapely.Polygon([tr.transform(x, y) for x, y in shapely.segmentize(
        poly, 0.001).exterior.coords])
    gpkg3857 = tmp_path / "merc.gpkg"
    pyogrio.raw.write(gpkg3857, geometry=shapely.to_wkb([merc]), field_data=[], fields=[],
                      geometry_type="Polygon", crs="EPSG:3857", driver="GPKG")
    got = set(_cells(resolve_scope(aoi=gpkg3857), 7))
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


@pytest.mark.parametrize("scope, res", [("28.2,-2.8,30.8,-1.2", 5), ("RWA", 8),
                                        ("-5.0,50.0,2.0,59.0", 7), ("RWA", 2)])
def test_scope_cells_are_h3s_polyfill_in_tile_order(scope, res):
    """The same cells as h3-py's polyfill (the reference library), each once, in an order
    that visits each 1-degree tile (of the cells' coarse ancestors) in one run."""
    s = resolve_scope(iso3=scope) if scope.isalpha() else resolve_scope(bbox=scope)
    cells = scope_cells(s, res)
    ordered = _cells(s, res)
    assert len(ordered) == len(set(ordered)) == len(cells)
    assert set(ordered) == set(h3.geo_to_cells(s.geometry, res))
    tiles = [tuple(math.floor(v) for v in h3.cell_to_latlng(h3.cell_to_parent(c, max(0, res - 3))))
             for c in ordered]
    runs = [t for i, t in enumerate(tiles) if i == 0 or tiles[i - 1] != t]
    assert len(runs) == len(set(tiles))


@pytest.mark.parametrize("size", [1, 7, 500, 4096])
def test_blocks_cut_the_ordered_cells_into_consecutive_batches(size):
    cells = scope_cells(resolve_scope(iso3="RWA"), 7)
    blocks = list(cells.blocks(size))
    assert [b.count for b in blocks[:-1]] == [size] * (len(blocks) - 1)
    assert 0 < blocks[-1].count <= size
    got = [c for b in blocks for c in b.cells().tolist()]
    assert got == cells.ids().tolist()
    assert any(not b.whole.all() for b in blocks) and any(b.whole.any() for b in blocks)


@pytest.mark.parametrize("res", [3, 5, 8, 10])
def test_block_bounds_hold_every_vertex(res):
    cells = scope_cells(resolve_scope(bbox="29.0,-2.6,30.4,-1.2"), res)
    for block in list(cells.blocks(3000))[:3]:
        minx, miny, maxx, maxy = block.bounds
        for c in block.cells().tolist():
            for lat, lng in h3.cell_to_boundary(h3.int_to_str(c)):
                assert minx <= lng <= maxx and miny <= lat <= maxy


def test_contains_is_the_centre_rule():
    scope = resolve_scope(bbox="29.0,-2.2,29.4,-1.9")
    cells = scope_cells(scope, 7)
    near = sorted(h3.grid_disk(h3.latlng_to_cell(-2.05, 29.2, 7), 40))
    ids = np.array([h3.str_to_int(c) for c in near], dtype=np.uint64)
    expected = [29.0 < h3.cell_to_latlng(c)[1] < 29.4 and -2.2 < h3.cell_to_latlng(c)[0] < -1.9
                for c in near]
    assert cells.contains(ids).tolist() == expected
    assert 0 < sum(expected) < len(near)


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
