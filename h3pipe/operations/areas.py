"""Pixel and zone areas for ``zonal_stats``: :func:`row_weights`, :func:`pixel_areas`.

``weights: area`` weighs each pixel by its area on the sphere of radius 6378137 m, with
the definition exactextract calls ``area_spherical_m2``: the band of a pixel row between
latitudes a and b covers R^2 * dlon * (sin b - sin a). In a projected CRS every pixel has
the same planar area (true on an equal-area projection). ``coverage`` divides a zone's
covered valid pixels by its own area in pixels of the raster's grid, so a zone wholly over
valid pixels has coverage 1 whatever the sphere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# exactextract's sphere for area_spherical_m2 (WGS84's semi-major axis).
SPHERE_RADIUS_M = 6378137.0


def row_weights(info: Any, ymax: float, nrows: int, weights: str) -> np.ndarray:
    """The weight of a pixel in each of the ``nrows`` rows of a window whose top edge is
    ``ymax`` (in the raster's CRS): ones, or each row's pixel area in m2."""
    if weights != "area":
        return np.ones(nrows)
    if not info.crs_is_wgs84:
        return np.full(nrows, abs(info.xres * info.yres))
    top = ymax - info.yres * np.arange(nrows)
    bottom = top - info.yres
    band = np.sin(np.radians(np.clip(top, -90, 90))) - np.sin(np.radians(np.clip(bottom, -90,
                                                                                 90)))
    return SPHERE_RADIUS_M ** 2 * math.radians(info.xres) * band


def ring_pixel_areas(xy: np.ndarray, starts: np.ndarray, info: Any) -> np.ndarray:
    """Area of each closed ring (vertices ``xy[starts[i]:starts[i+1]]``, raster CRS) in
    pixels of ``info``'s grid."""
    if len(starts) < 2:
        return np.zeros(0)
    x, y = xy[:, 0], xy[:, 1]
    cross = x[:-1] * y[1:] - x[1:] * y[:-1]
    # Drop the term joining one ring's last vertex to the next ring's first.
    cross = np.append(cross, 0.0)
    cross[starts[1:-1] - 1] = 0.0
    cross[-1] = 0.0
    sums = np.add.reduceat(cross, starts[:-1]) if len(cross) else np.zeros(len(starts) - 1)
    return np.abs(sums) / 2 / abs(info.xres * info.yres)


def pixel_areas(geoms: np.ndarray, info: Any) -> np.ndarray:
    """Area of each polygon (raster CRS, holes subtracted) in pixels of ``info``'s grid."""
    import shapely

    return np.asarray(shapely.area(geoms)) / abs(info.xres * info.yres)


def cell_areas_km2(cells: np.ndarray) -> np.ndarray:
    """The exact area of each H3 cell (uint64 ids) in km2, as H3 computes it."""
    import h3

    return np.array([h3.cell_area(h3.int_to_str(int(c)), "km^2") for c in cells])


__all__ = ["SPHERE_RADIUS_M", "cell_areas_km2", "pixel_areas", "ring_pixel_areas",
           "row_weights"]
