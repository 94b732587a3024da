"""How a map's lon/lat becomes its frame's x and y: :class:`View`, chosen by :func:`view_for`
from the scope's smallest box on the sphere.

Four views, so that a scope anywhere on Earth draws whole and a scope that does not touch
±180 draws as it always did:

* ``lonlat``: longitude and latitude as given (every scope that stays within -180..180);
* ``across``: lon/lat with the longitudes made continuous across the antimeridian, those
  west of ``cut`` shown 360 degrees east (Fiji, ``--bbox 170,-30,-170,0``): the frame is
  the small region, not the world;
* ``world``: Equal Earth (EPSG:8857) for a scope wider than half the world, an equal-area
  projection whose edge is the antimeridian, so nothing crosses the frame;
* ``north``, ``south``: Lambert azimuthal equal-area on the pole for a scope as wide that
  lies in one hemisphere and reaches past 60 degrees (a polar cap), where Equal Earth
  would squeeze it into a thin band.

Cells are drawn pixel by pixel (each pixel centre taken back to lon/lat and looked up), so
a cell across ±180 is never a polygon to split; only lines (the scope's outline, the
graticule) are carried forward, densified so they bend with the projection.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from h3pipe import grid

LONLAT, ACROSS, WORLD, NORTH, SOUTH = "lonlat", "across", "world", "north", "south"
EQUAL_EARTH = "EPSG:8857"
CRS = {LONLAT: "EPSG:4326", ACROSS: "EPSG:4326", WORLD: EQUAL_EARTH,
       NORTH: "+proj=laea +lat_0=90 +lon_0=0 +datum=WGS84 +units=m +no_defs",
       SOUTH: "+proj=laea +lat_0=-90 +lon_0=0 +datum=WGS84 +units=m +no_defs"}
# A scope wider than this on the sphere is drawn projected: lon/lat stretched for its middle
# latitude would misshape its far sides.
WORLD_WIDTH = 180.0
# ... on its pole when it lies in one hemisphere and reaches this far from the equator.
POLAR_LATITUDE = 60.0
# Lines are densified to this many degrees before projection, so Equal Earth bends them.
STEP_DEGREES = 1.0
# A pixel whose centre does not come back to itself through the projection (by this many
# metres) lies outside the world's outline.
ROUND_TRIP_METRES = 1.0


@dataclass(frozen=True)
class View:
    """One of :data:`LONLAT`, :data:`ACROSS` (longitudes shown from ``cut`` to cut + 360),
    :data:`WORLD` (Equal Earth metres), :data:`NORTH` or :data:`SOUTH` (polar metres)."""

    kind: str = LONLAT
    cut: float = -180.0

    @property
    def crs(self) -> str:
        return CRS[self.kind]

    @property
    def projected(self) -> bool:
        return self.kind in (WORLD, NORTH, SOUTH)

    @property
    def latitudes(self) -> tuple[float, float]:
        """The latitudes the view shows."""
        return {NORTH: (0.0, 90.0), SOUTH: (-90.0, 0.0)}.get(self.kind, (-90.0, 90.0))

    def forward(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame x, y of lon/lat points (degrees within -180..180)."""
        lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        if self.kind == ACROSS:
            return np.where(lon < self.cut, lon + 360.0, lon), lat
        if self.projected:
            x, y = _transformer(self.crs, forward=True).transform(lon, np.clip(lat, -90, 90))
            return np.asarray(x), np.asarray(y)
        return lon, lat

    def inverse(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat of frame points; NaN where the frame shows no place on Earth (past a
        pole, outside the world's outline). Longitudes may lie past ±180 (H3 wraps them)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if not self.projected:
            off = np.abs(y) > 90
            return np.where(off, np.nan, x), np.where(off, np.nan, y)
        lon, lat = (np.asarray(v) for v in _transformer(self.crs, forward=False).transform(x, y))
        back_x, back_y = (np.asarray(v) for v in
                          _transformer(self.crs, forward=True).transform(lon, lat))
        off = ~(np.hypot(back_x - x, back_y - y) <= ROUND_TRIP_METRES)  # NaN is off too
        return np.where(off, np.nan, lon), np.where(off, np.nan, lat)

    def points(self, geom: Any) -> np.ndarray:
        """Every vertex of a lon/lat geometry (densified when projected) as frame (x, y)."""
        import shapely

        if self.projected:
            geom = shapely.segmentize(geom, STEP_DEGREES)
        return np.column_stack(self.forward(*shapely.get_coordinates(geom).T))

    def lines(self, geom: Any) -> list[np.ndarray]:
        """The boundary of a lon/lat (Multi)Polygon as lines of frame (x, y): across the
        antimeridian its two sides joined (no seam at 180); projected, densified and without
        the stretches along ±180 and the poles (where the plane, not the scope, ends)."""
        import shapely

        if self.kind == ACROSS:
            shifted = [shapely.transform(p, lambda xy: np.column_stack(self.forward(*xy.T)))
                       for p in shapely.get_parts(geom)]
            geom = shapely.union_all(shifted)
        elif self.projected:
            geom = shapely.segmentize(geom, STEP_DEGREES)
        out = []
        for line in shapely.get_parts(shapely.boundary(geom)):
            for part in shapely.get_parts(line):
                xy = np.asarray(part.coords)[:, :2]
                pieces = _off_the_edges(xy) if self.projected else [xy]
                out += [np.column_stack(self.forward(*p.T)) if self.projected else p
                        for p in pieces]
        return out


def _off_the_edges(xy: np.ndarray) -> list[np.ndarray]:
    """A lon/lat line cut where it runs along ±180 or a pole, those stretches dropped."""
    lon, lat = xy[:, 0], xy[:, 1]
    along = (((np.abs(lon[:-1]) == 180) & (lon[:-1] == lon[1:]))
             | ((np.abs(lat[:-1]) == 90) & (lat[:-1] == lat[1:])))
    pieces, start = [], 0
    for k in np.flatnonzero(along).tolist():  # segment k joins points k and k + 1
        pieces.append(xy[start:k + 1])
        start = k + 1
    pieces.append(xy[start:])
    return [p for p in pieces if len(p) > 1]


def view_for(boxes: np.ndarray) -> View:
    """The view of a scope whose parts (or cell centres) have these lon/lat boxes ((n, 4)
    west, south, east, north, within -180..180)."""
    if not len(boxes):
        return View()
    west, south, east, north = grid.arc_bounds(np.asarray(boxes, dtype=np.float64))
    width = east - west if west <= east else east + 360 - west
    if width > WORLD_WIDTH:
        if south >= 0 and north >= POLAR_LATITUDE:
            return View(NORTH)
        if north <= 0 and south <= -POLAR_LATITUDE:
            return View(SOUTH)
        return View(WORLD)
    if west > east:
        # Cut in the middle of the gap the scope leaves, so every part lands beside the rest.
        return View(ACROSS, cut=(east + west) / 2)
    return View()


@functools.cache
def _transformer(crs: str, *, forward: bool) -> Any:
    from pyproj import Transformer

    ends = ("EPSG:4326", crs)
    return Transformer.from_crs(*(ends if forward else ends[::-1]), always_xy=True)


__all__ = ["ACROSS", "CRS", "EQUAL_EARTH", "LONLAT", "NORTH", "SOUTH", "WORLD", "View",
           "view_for"]
