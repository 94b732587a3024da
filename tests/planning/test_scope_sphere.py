"""Scopes anywhere on the sphere: every country of the shipped Natural Earth file, boxes and
areas across the antimeridian, around the poles, and the whole world. Expected cells come
from h3-py's own polyfill (centre containment) on the same polygons, cut into pieces
narrower than 180 degrees (h3 reads a wider polygon as crossing the antimeridian)."""

from __future__ import annotations

import json

import h3
import numpy as np
import pyogrio
import pytest
import shapely

from h3pipe import grid
from h3pipe.errors import ScopeError
from h3pipe.planning import scope as scopes
from h3pipe.planning.scope import Scope, resolve_scope, scope_cells

_STRIPS = [shapely.box(x, -90, x + 90, 90) for x in (-180, -90, 0, 90)]


def _h3_cells(geometry, res: int) -> set[str]:
    """h3-py's polyfill of a lon/lat geometry (within -180..180), piece by piece."""
    out: set[str] = set()
    for part in shapely.get_parts(geometry):
        wide = part.bounds[2] - part.bounds[0] >= 180
        pieces = [q for s in _STRIPS for q in shapely.get_parts(part.intersection(s))
                  if q.geom_type == "Polygon"] if wide else [part]
        for q in pieces:
            shape = h3.LatLngPoly([(y, x) for x, y in q.exterior.coords],
                                  *[[(y, x) for x, y in r.coords] for r in q.interiors])
            out.update(h3.h3shape_to_cells(shape, res))
    return out


def _ours(scope: Scope, res: int) -> set[str]:
    try:
        return {h3.int_to_str(int(c)) for c in scope_cells(scope, res).ids()}
    except ScopeError:
        return set()


def test_every_natural_earth_country_gives_h3s_cells_at_res_3_and_4():
    _, _, wkb, fields = pyogrio.raw.read(scopes._admin0_file(), columns=["ADM0_A3"])
    wrong = []
    for code, geom in zip(fields[0], shapely.from_wkb(wkb), strict=True):
        geom = shapely.make_valid(geom)
        for res in (3, 4):
            ours, theirs = _ours(Scope("iso3", code, code, geom), res), _h3_cells(geom, res)
            if ours != theirs:
                wrong.append((code, res, len(ours - theirs), len(theirs - ours)))
    assert not wrong
    assert len(fields[0]) > 240  # every country was looked at


@pytest.mark.parametrize("code", ["USA", "RUS", "NZL", "FJI", "KIR", "ATA"])
def test_countries_across_the_antimeridian_and_poles_resolve_with_their_cells(code):
    scope = resolve_scope(iso3=code)
    cells = _ours(scope, 5)
    assert cells and cells == _h3_cells(scope.geometry, 5)
    lng = np.array([h3.cell_to_latlng(c)[1] for c in cells])
    if code in ("RUS", "FJI", "NZL", "KIR", "USA"):
        assert (lng > 170).any() and (lng < -170).any()  # both sides of the antimeridian


@pytest.mark.parametrize("res", [0, 1, 2, 3, 4])
def test_the_world_is_every_cell(res):
    for name in ("world", "-180,-90,180,90"):
        scope = resolve_scope(bbox=name)
        assert scope.key == "bbox=-180.000000_-90.000000_180.000000_90.000000"
        assert len(scope_cells(scope, res)) == 2 + 120 * 7 ** res == h3.get_num_cells(res)
    assert set(_ours(resolve_scope(bbox="world"), 2)) == set(
        h3.uncompact_cells(h3.get_res0_cells(), 2))


def test_a_box_across_the_antimeridian_is_its_two_sides():
    scope = resolve_scope(bbox="170,-25,-170,-10")
    sides = shapely.MultiPolygon([shapely.box(170, -25, 180, -10),
                                  shapely.box(-180, -25, -170, -10)])
    assert scope.geometry.equals(sides)
    assert scope.boxes == [(170.0, -25.0, 180.0, -10.0), (-180.0, -25.0, -170.0, -10.0)]
    for res in (2, 4):
        cells = _ours(scope, res)
        assert cells == _h3_cells(sides, res) and cells


def test_wide_boxes_keep_their_cells():
    for text, res in (("0,-10,60,10", 3), ("-170,-60,170,60", 2), ("-180,60,180,90", 3)):
        west, south, east, north = (float(v) for v in text.split(","))
        assert _ours(resolve_scope(bbox=text), res) == _h3_cells(
            shapely.box(west, south, east, north), res)


def _aoi(tmp_path, name, rings):
    path = tmp_path / f"{name}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": rings}}]}))
    return resolve_scope(aoi=path)


def test_an_aoi_drawn_across_the_antimeridian_is_cut_there(tmp_path):
    sides = shapely.MultiPolygon([shapely.box(175, -20, 180, -15),
                                  shapely.box(-180, -20, -175, -15)])
    past = _aoi(tmp_path, "past", [[[175, -20], [185, -20], [185, -15], [175, -15], [175, -20]]])
    jump = _aoi(tmp_path, "jump", [[[175, -20], [-175, -20], [-175, -15], [175, -15],
                                    [175, -20]]])
    for scope in (past, jump):
        assert scope.geometry.symmetric_difference(sides).area < 1e-9
        assert _ours(scope, 4) == _h3_cells(sides, 4)


def test_an_aoi_ring_round_a_pole_reaches_the_pole(tmp_path):
    # A ring at 75N drawn eastwards all the way round, as GIS tools export a polar cap.
    lon = np.linspace(-180, 180, 37)[:-1]
    ring = [[float(x), 75.0] for x in lon] + [[-180.0, 75.0]]
    scope = _aoi(tmp_path, "arctic", [ring])
    cap = shapely.box(-180, 75, 180, 90)
    assert scope.geometry.symmetric_difference(cap).area < 1e-9
    cells = _ours(scope, 3)
    assert cells == _h3_cells(cap, 3)
    assert h3.latlng_to_cell(90, 0, 3) in cells  # the cell on the pole itself


def test_cell_shapes_across_the_antimeridian_and_round_the_poles_are_true_on_the_plane():
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    for res in (0, 2, 5):
        for lat, lng in ((90, 0), (-90, 0), (0, -179.999), (-16.5, 179.99)):
            cell = h3.latlng_to_cell(lat, lng, res)
            shape = grid.shapes(np.array([h3.str_to_int(cell)], dtype=np.uint64))[0]
            assert shape.is_valid
            assert -180 <= shape.bounds[0] and shape.bounds[2] <= 180
            assert shapely.contains_xy(shape, lng if abs(lat) < 90 else 0.0,
                                       np.clip(lat, -89.999, 89.999))
            # Its area on the ellipsoid is the cell's (edges drawn straight in lon/lat, so
            # within a few per cent at the coarsest resolution).
            area = abs(geod.geometry_area_perimeter(shape)[0]) / 1e6
            assert area == pytest.approx(h3.cell_area(cell, "km^2"), rel=0.06)


def test_the_world_at_res_6_is_listed_in_bounded_memory():
    scope = scope_cells(resolve_scope(bbox="world"), 6)
    assert len(scope.parents) == h3.get_num_cells(3)
    total = sum(block.count for block in scope.blocks(1 << 20))
    assert total == h3.get_num_cells(6) == 14_117_882


def test_a_scope_too_large_to_list_is_refused_before_any_listing():
    with pytest.raises(ScopeError, match=r"the world holds about 33,89\d,\d{3},\d{3} cells at "
                                         r"resolution 10.*coarser resolution"):
        scope_cells(resolve_scope(bbox="world"), 10)  # h3: 33,897,029,882 cells
