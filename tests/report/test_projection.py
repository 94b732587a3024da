"""Which view a map takes by its scope's extent on the sphere, and what the views do to
points and outlines at ±180 and the poles."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import Transformer

from h3pipe.report.projection import ACROSS, LONLAT, NORTH, SOUTH, WORLD, View, view_for


@pytest.mark.parametrize("boxes, kind", [
    ([(28.8, -2.9, 30.9, -1.0)], LONLAT),                          # Rwanda
    ([(-10.0, 30.0, 60.0, 60.0)], LONLAT),
    ([(170.0, -30.0, 180.0, 0.0), (-180.0, -30.0, -170.0, 0.0)], ACROSS),
    ([(19.6, 41.2, 180.0, 81.9), (-180.0, 64.0, -169.0, 71.5)], ACROSS),  # Russia's parts
    ([(-180.0, -90.0, 180.0, 90.0)], WORLD),
    ([(-180.0, 0.0, 180.0, 30.0)], WORLD),                          # a band round the tropics
    ([(-170.0, -10.0, 0.0, 10.0), (10.0, -10.0, 170.0, 10.0)], WORLD),
    ([(-180.0, 60.0, 180.0, 90.0)], NORTH),
    ([(-180.0, -90.0, 180.0, -60.0)], SOUTH),
])
def test_the_view_follows_the_scope_on_the_sphere(boxes, kind):
    assert view_for(np.array(boxes)).kind == kind


def test_across_the_antimeridian_longitudes_continue_past_180():
    view = view_for(np.array([(170.0, -30.0, 180.0, 0.0), (-180.0, -30.0, -170.0, 0.0)]))
    x, y = view.forward(np.array([175.0, -175.0]), np.array([-10.0, -10.0]))
    assert list(x) == [175.0, 185.0] and list(y) == [-10.0, -10.0]
    # The box's two sides are one outline: no seam drawn along 180.
    (line,) = view.lines(shapely.MultiPolygon([shapely.box(170, -30, 180, 0),
                                               shapely.box(-180, -30, -170, 0)]))
    along_180 = (line[:-1, 0] == 180.0) & (line[1:, 0] == 180.0)
    assert not along_180.any() and line[:, 0].min() == 170.0 and line[:, 0].max() == 190.0


def test_equal_earth_pixels_outside_the_world_are_no_place():
    view = View(WORLD)
    to = Transformer.from_crs("EPSG:4326", "EPSG:8857", always_xy=True)
    x, y = to.transform([0.0, 179.0, 0.0], [0.0, 45.0, 89.9])
    lon, lat = view.inverse(np.array([*x, 1.8e7, 0.0]), np.array([*y, 0.0, 9.0e6]))
    assert lon[:3] == pytest.approx([0.0, 179.0, 0.0], abs=1e-6)
    assert lat[:3] == pytest.approx([0.0, 45.0, 89.9], abs=1e-6)
    assert np.isnan(lat[3:]).all()  # past the 180th meridian, above the pole


def test_the_world_outline_keeps_no_line_along_its_edges():
    # The world's edges are the map's: an outline along ±180 or a pole is not the scope's.
    assert View(WORLD).lines(shapely.box(-180, -90, 180, 90)) == []
    lines = View(NORTH).lines(shapely.box(-180, 60, 180, 90))
    assert len(lines) == 1
    radius = np.hypot(*lines[0].T)
    assert radius.std() < 1e-6 * radius.mean()  # the 60th parallel only, no radius at 180


def test_lon_lat_past_a_pole_is_no_place():
    lon, lat = View().inverse(np.array([10.0, 10.0]), np.array([89.0, 91.0]))
    assert lat[0] == 89.0 and np.isnan(lat[1]) and np.isnan(lon[1])
