"""``h3pipe map`` of scopes that reach ±180 and the poles, on real runs over a 1-degree world
raster made here: the world in Equal Earth, a box across the antimeridian continuous around
180 in a frame of its own size, a polar cap on its pole. Pixels are placed with pyproj and
h3-py here, not with the code under test, and must show the colour of the cell there."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import shapely
import shapely.ops
from pyproj import Transformer

from h3pipe.cli import main
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.report.test_map_cli import _bar_colour, _close, _open

# Four bands of longitude, so that the two sides of ±180 differ from each other and from
# the rest: [-180, -160) 700, [-160, 0) 100, [0, 160) 300, [160, 180) 500.
BANDS = ((-180, -160, 700.0), (-160, 0, 100.0), (0, 160, 300.0), (160, 180, 500.0))
ACROSS = "170,-30,-170,0"
CAP = "-180,60,180,90"
WHITE = (255, 255, 255)


def _world_raster() -> np.ndarray:
    lon = np.arange(-180, 180) + 0.5
    row = np.zeros(360, dtype="float32")
    for west, east, value in BANDS:
        row[(lon >= west) & (lon < east)] = value
    return np.repeat(row[None, :], 180, axis=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One project, runs over the world (res 1), a box across ±180 (res 3) and the
    northern cap (res 1)."""
    tmp = tmp_path_factory.mktemp("world")
    tif = write_raster(tmp / "w.tif", _world_raster(), west=-180.0, north=90.0, res=1.0)
    root = write_project(tmp / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], batch_size=500)})
    for scope, res in (("world", "1"), (ACROSS, "3"), (CAP, "1")):
        code = main(["--project", str(root), "run", "p", "--bbox", scope, "-r", res,
                     "--workers", "1"])
        assert code == 0, scope
    return root


def _draw(cli, root, tmp_path, scope, res):
    out = tmp_path / "m.png"
    r = cli("--project", root, "map", "ds", "mean", "--bbox", scope, "-r", res, "-o", out)
    assert r.exit_code == 0, r.stderr
    return _open(out)


def _whole_cells(res: int, area: shapely.Geometry) -> dict[str, float]:
    """Cells (h3-py) whose outline lies inside ``area`` and inside one band, with the band's
    value; cells whose outline crosses ±180 left out."""
    out = {}
    cells = h3.geo_to_cells(area.__geo_interface__, res) if res > 1 else \
        [c for r in h3.get_res0_cells() for c in h3.cell_to_children(r, res)]
    for c in cells:
        poly = shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)])
        if poly.bounds[2] - poly.bounds[0] > 180 or not area.contains(poly):
            continue
        for west, east, value in BANDS:
            if shapely.box(west + 0.01, -90, east - 0.01, 90).contains(poly):
                out[c] = value
    return out


def _crossing(res: int, area: shapely.Geometry, reach: float
               ) -> list[tuple[str, tuple, tuple]]:
    """Cells across ±180 whose centre is in ``area``, each with a point (lon, lat) inside it
    on either side, at least ``reach`` degrees from its edges and from 180 (the point of each
    side farthest from them; checked with h3-py)."""
    out = []
    cells = h3.geo_to_cells(area.__geo_interface__, res) if res > 1 else \
        [c for r in h3.get_res0_cells() for c in h3.cell_to_children(r, res)]
    for c in cells:
        ring = [(lng + 360 if lng < 0 else lng, lat) for lat, lng in h3.cell_to_boundary(c)]
        lat, lng = h3.cell_to_latlng(c)
        if max(x for x, _ in ring) - min(x for x, _ in ring) > 180 \
                or not area.contains(shapely.Point(lng, lat)) or abs(lat) > 80:
            continue  # not across ±180 (or round a pole)
        poly = shapely.Polygon(ring)
        sides = []
        for west, east in ((0, 180), (180, 360)):
            part = poly.intersection(shapely.box(west, -90, east, 90))
            if part.is_empty or part.geom_type != "Polygon":
                break
            point = shapely.ops.polylabel(part, tolerance=reach / 10)
            if part.exterior.distance(point) < reach:
                break
            sides.append(((point.x + 180) % 360 - 180, point.y))
        if len(sides) == 2:
            assert all(h3.latlng_to_cell(y, x, res) == c for x, y in sides), (c, sides)
            out.append((c, sides[0], sides[1]))
    assert out, "the test's scope should hold cells across the antimeridian"
    return out


def _px(facts: dict, x: float, y: float) -> tuple[int, int]:
    left, top, width, height = facts["axes"]
    west, east, south, north = facts["extent"]
    return (int(left + (x - west) / (east - west) * width),
            int(top + (north - y) / (north - south) * height))


def _shows(image, place: tuple[int, int], colour: tuple, tol: int = 12) -> bool:
    """Whether the picture shows ``colour`` at ``place`` or a pixel or two from it (the
    graticule's faint lines cross the cells)."""
    x, y = place
    return any(_close(image.getpixel((x + dx, y + dy))[:3], colour, tol=tol)
               for dx in range(-2, 3) for dy in range(-2, 3))


def _row(image, facts: dict, py: int) -> list[tuple[int, tuple]]:
    """(pixel x, colour) of every pixel of the frame's row ``py``."""
    left, _, width, _ = facts["axes"]
    return [(px, image.getpixel((px, py))[:3]) for px in range(left + 2, left + width - 2)]


def _is_cell(colour: tuple) -> bool:
    """Cells are viridis colours, never grey: white, the outline and graticule are."""
    return max(colour) - min(colour) > 12


EQUAL_EARTH = Transformer.from_crs("EPSG:4326", "EPSG:8857", always_xy=True)
FROM_EQUAL_EARTH = Transformer.from_crs("EPSG:8857", "EPSG:4326", always_xy=True)


def test_the_world_is_drawn_in_equal_earth_with_cells_across_180_on_both_edges(
        world, cli, tmp_path):
    image, facts = _draw(cli, world, tmp_path, "world", "1")
    assert facts["crs"] == "EPSG:8857"
    assert (facts["vmin"], facts["vmax"]) == (pytest.approx(100.0), pytest.approx(700.0))
    temperate = shapely.box(-180, -55, 180, 55)
    whole = _whole_cells(1, temperate)
    assert set(whole.values()) == {100.0, 300.0, 500.0, 700.0}
    for cell, value in whole.items():
        lat, lng = h3.cell_to_latlng(cell)
        place = _px(facts, *EQUAL_EARTH.transform(lng, lat))
        assert _shows(image, place, _bar_colour(image, facts, value)), (cell, value)
    for cell, east_side, west_side in _crossing(1, temperate, reach=1.0):
        east = image.getpixel(_px(facts, *EQUAL_EARTH.transform(*east_side)))[:3]
        west = image.getpixel(_px(facts, *EQUAL_EARTH.transform(*west_side)))[:3]
        assert _is_cell(east) and _close(east, west, tol=6), (cell, east, west)
        # Across the frame at the cell's latitude: its colour and the colours of the bands
        # beside ±180 only near the edges, never smeared across the middle.
        py = _px(facts, *EQUAL_EARTH.transform(*east_side))[1]
        for px, colour in _row(image, facts, py):
            if _close(colour, east, tol=2) or _close(colour, _bar_colour(image, facts, 700),
                                                     tol=2):
                x = facts["extent"][0] + (px + 0.5 - facts["axes"][0]) * (
                    facts["extent"][1] - facts["extent"][0]) / facts["axes"][2]
                lon, _ = FROM_EQUAL_EARTH.transform(x, EQUAL_EARTH.transform(0, east_side[1])[1])
                assert abs(lon) > 150, (cell, px, colour, lon)


def test_nothing_is_drawn_past_the_poles_or_outside_the_world(world, cli, tmp_path):
    image, facts = _draw(cli, world, tmp_path, "world", "1")
    left, top, width, height = facts["axes"]
    _, y_pole = EQUAL_EARTH.transform(0.0, 90.0)
    _, pole_row = _px(facts, 0.0, y_pole)
    corners = [(left + 3, top + 3), (left + width - 4, top + 3), (left + 3, top + height - 4),
               (left + width // 2, pole_row - 4)]
    for place in corners:
        assert image.getpixel(place)[:3] == WHITE, place
    # The cells round the pole are drawn up to it: just below the pole's line, coloured.
    assert _is_cell(image.getpixel((left + width // 2, pole_row + 3))[:3])


def test_a_box_across_the_antimeridian_is_drawn_continuous_in_a_frame_of_its_size(
        world, cli, tmp_path):
    image, facts = _draw(cli, world, tmp_path, ACROSS, "3")
    west, east, south, north = facts["extent"]
    assert facts["crs"] == "EPSG:4326"
    # The frame holds 170E..170W as 170..190, and is about the box's size, not the world's.
    assert 150 < west < 170 and 190 < east < 210 and east - west < 50, facts["extent"]
    assert -40 < south < -30 and 0 < north < 10
    area = shapely.MultiPolygon([shapely.box(170, -30, 180, 0), shapely.box(-180, -30, -170, 0)])
    whole = _whole_cells(3, area)
    assert set(whole.values()) == {500.0, 700.0}
    for cell, value in whole.items():
        lat, lng = h3.cell_to_latlng(cell)
        place = _px(facts, lng % 360, lat)
        assert _shows(image, place, _bar_colour(image, facts, value)), (cell, value)
    crossing = _crossing(3, area, reach=0.1)
    for cell, east_side, west_side in crossing:
        a = image.getpixel(_px(facts, east_side[0], east_side[1]))[:3]
        b = image.getpixel(_px(facts, west_side[0] % 360, west_side[1]))[:3]
        assert _is_cell(a) and _close(a, b, tol=6), (cell, a, b)
    # A row across a crossing cell: cells only over the box (170..190 and a cell's reach),
    # the 500 band west of 180 and the 700 band east of it, as on the globe.
    _, east_side, _ = crossing[len(crossing) // 2]
    py = _px(facts, *east_side)[1]
    lons = {px: west + (px + 0.5 - facts["axes"][0]) * (east - west) / facts["axes"][2]
            for px, _ in _row(image, facts, py)}
    drawn = [(lons[px], c) for px, c in _row(image, facts, py) if _is_cell(c)]
    assert min(lon for lon, _ in drawn) > 168 and max(lon for lon, _ in drawn) < 192
    for lon, colour in drawn:
        if _close(colour, _bar_colour(image, facts, 500), tol=2):
            assert lon < 181, lon
        if _close(colour, _bar_colour(image, facts, 700), tol=2):
            assert lon > 179, lon


def test_a_polar_cap_is_drawn_on_its_pole(world, cli, tmp_path):
    image, facts = _draw(cli, world, tmp_path, CAP, "1")
    assert "+proj=laea" in facts["crs"] and "+lat_0=90" in facts["crs"]
    to_cap = Transformer.from_crs("EPSG:4326", facts["crs"], always_xy=True)
    # The frame is the cap: latitude 60 is a circle of about 3,300 km round the pole.
    radius = to_cap.transform(0.0, 60.0)[1] * -1
    west, east, south, north = facts["extent"]
    assert 3.2e6 < radius < 3.4e6 and min(-west, east, -south, north) > radius
    assert max(-west, east, -south, north) < 1.5 * radius
    # The pole's cell, drawn round the pole: its colour at its centre and on every side of
    # the pole (between the graticule's meridians, which meet there).
    pole_cell = h3.latlng_to_cell(90.0, 0.0, 1)
    lat, lng = h3.cell_to_latlng(pole_cell)
    colour = image.getpixel(_px(facts, *to_cap.transform(lng, lat)))[:3]
    assert _is_cell(colour)
    for side in ((15.0, 89.3), (-165.0, 89.3), (105.0, 89.3), (-75.0, 89.3)):
        assert h3.latlng_to_cell(side[1], side[0], 1) == pole_cell
        assert _shows(image, _px(facts, *to_cap.transform(*side)), colour, tol=6), side
    for cell, value in _whole_cells(1, shapely.box(-180, 62, 180, 80)).items():
        lat, lng = h3.cell_to_latlng(cell)
        place = _px(facts, *to_cap.transform(lng, lat))
        assert _shows(image, place, _bar_colour(image, facts, value)), (cell, value)
    # Outside the cap, in the frame's corner (latitude 55), nothing.
    x, y = to_cap.transform(45.0, 55.0)
    assert west < x < east and south < y < north
    assert image.getpixel(_px(facts, x, y))[:3] == WHITE
