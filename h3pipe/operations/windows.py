"""Statistics of many zones from one window of pixels: :class:`Wanted` and :func:`fill`.

``zonal_stats`` reads one window per group of neighbouring zones (cells or polygons) and
fills every column the step asks for from it: coverage-weighted moments and class or bin
areas from h3pipe's own kernel (:mod:`h3pipe.operations.coverage`), statistics that need
every value (median, quantiles, majority) from exactextract, and so do the moments of a
small run (:func:`small_work`: small work never loads the kernel). Each
zone also gets two working columns: ``_count`` (its weighted valid coverage: in pixels, or
in m2 with ``weights: area``) and ``_valid`` (its covered valid pixels, unweighted) from
which coverage and shares are derived (see :func:`h3pipe.operations.zonal_stats.finish`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from h3pipe.errors import OperationError
from h3pipe.operations import areas
from h3pipe.operations.shares import Bins

MOMENT_STATS = ("count", "sum", "mean", "min", "max", "stdev")
# Need every value of a zone: exactextract computes them.
QUANTILE = re.compile(r"^quantile_([1-9][0-9]?)$")
_INTERPOLATED = re.compile(r"^(median|quantile_\d+)$")
EXACTEXTRACT_STATS = ("median", "majority", "minority", "variety")
# Statistics that stay meaningful when no pixel is valid; the rest become null.
DEFINED_WHEN_EMPTY = {"count", "variety", "coverage", "cell_area_km2"}
_KERNEL_COLUMN = {"count": 0, "sum": 1, "mean": 2, "min": 3, "max": 4, "stdev": 5}
WORK = ("_count", "_valid", "_sum")

# Small work is computed with exactextract, so that the process never loads numba and the
# compiled kernel for it (0.3 s of CPU and 150 MB, more than a run over a few dozen cells
# spends on everything else). Both give the same moments (the kernel mirrors exactextract's
# coverage fractions and weighted variance: tests/operations/test_small_work.py holds them
# to 1e-9, not to the bit). exactextract costs about 0.15 ms a zone and 1/15e6 s a pixel
# of the window (measured on this machine's kind, 2 cores under load; its Python side
# included), the kernel a fraction of that once loaded. The choice is the run's, made once
# by its planner from all its cells and pixels (:func:`small_work`) and carried by every
# batch: a cell's numbers must not depend on which process computed it, in what order, or
# whether the run was resumed. Class fractions and histograms (only the kernel computes
# them) and ``weights: area`` (exactextract weighs by area only with the zones in degrees,
# where its float32 fractions round apart from the kernel's by a few 1e-9) always use the
# kernel.
KERNEL_LOAD_S = 0.3
_ZONE_S = 150e-6
_PIXEL_S = 1 / 15e6


def small_work(zones: int, pixels: int) -> bool:
    """Whether a run of ``zones`` zones over ``pixels`` pixels (all bands) in all costs
    exactextract less than loading the compiled kernel (see :data:`KERNEL_LOAD_S`)."""
    return zones * _ZONE_S + pixels * _PIXEL_S <= KERNEL_LOAD_S


def needs_exactextract(stat: str) -> bool:
    return stat in EXACTEXTRACT_STATS or bool(QUANTILE.match(stat))


@dataclass(frozen=True)
class Wanted:
    """What a step computes per zone, from its params."""

    stats: tuple[str, ...]
    weights: str = "fraction"  # or 'area'
    bins: tuple[Bins, ...] = ()  # fractions and/or histogram
    truncate: bool = True  # integer rasters: interpolated quantiles toward zero
    # Everything but bins through exactextract (zones the kernel cannot read: multipolygons).
    whole: bool = False
    # The run's work is small: its moments by exactextract too (see small_work).
    small: bool = False

    @classmethod
    def of(cls, params: dict[str, Any], small: bool = False) -> Wanted:
        stats = tuple(params["stats"])
        bins = []
        if "fractions" in stats:
            bins.append(Bins.of_classes(params.get("classes") or []))
        if "histogram" in stats:
            bins.append(Bins.of_edges(params["bins"]))
        return cls(stats, params.get("weights", "fraction"), tuple(bins),
                   params.get("integer_quantiles", "truncate") == "truncate", small=small)

    @property
    def exact(self) -> bool:
        """Whether exactextract computes the statistics (then the moments too, in one
        pass): when one needs every value, or the zones are not the kernel's."""
        return self.whole or any(needs_exactextract(s) for s in self.stats)

    @property
    def exact_stats(self) -> list[str]:
        return [s for s in self.stats if needs_exactextract(s) or s in MOMENT_STATS]

    def for_whole(self) -> Wanted:
        """The same but bins, for zones only exactextract reads."""
        return replace(self, bins=(), whole=True)

    def for_bins(self) -> Wanted:
        """Only the bins (and the working columns), through the kernel."""
        return replace(self, stats=())

    def names(self) -> list[str]:
        """Every column filled per band: the statistics asked for and the working ones."""
        plain = [s for s in self.stats if s not in ("fractions", "histogram")]
        return plain + [n for b in self.bins for n in b.names] + list(WORK)


def fill(reader: Any, bounds: tuple[float, float, float, float], want: Wanted,
         zones: Any, rows: np.ndarray, columns: dict[str, np.ndarray], where: str) -> None:
    """Fill ``columns[info.column(k, name)][rows]`` for every band ``k`` from one read of
    the window covering ``bounds``. ``zones``: :class:`Rings` for the kernel, and GeoJSON
    for exactextract when the step needs it."""
    stack, extent = reader.read_bands(bounds)
    info = reader.info
    # Moments alone of a small run: exactextract, and no kernel to load (see small_work).
    small = (want.small and not want.exact and not want.bins
             and want.weights == "fraction")
    weights = areas.row_weights(info, extent[3], stack.shape[1], want.weights)
    for k, values in enumerate(stack):
        def put(name: str, col: np.ndarray, k: int = k) -> None:
            columns[info.column(k, name)][rows] = col

        if want.exact or small:
            _exactextract(values, extent, info, want, zones, put, where)
            if not want.bins:
                continue
        u, v = zones.pixels(extent, values.shape, (info.x0, info.y0, info.xres, info.yres))
        if not want.exact:
            _moments(values, u, v, zones, weights, want, put)
        for b in want.bins:
            _binned(b, values, u, v, zones, weights, put)


@dataclass
class Rings:
    """Zones as rings, one after another in ``xy`` (raster CRS): ring ``i`` is
    ``xy[ring_starts[i]:ring_starts[i+1]]``, zone ``p`` owns rings
    ``poly_starts[p]:poly_starts[p+1]``, exterior first; ``shapes`` their GeoJSON."""

    xy: np.ndarray
    ring_starts: np.ndarray
    poly_starts: np.ndarray
    shapes: list[dict[str, Any]] | None = None

    def pixels(self, extent: tuple[float, float, float, float], shape: tuple[int, int],
               origin: tuple[float, float, float, float] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        return to_pixels(self.xy, extent, shape, origin)

    def geojson(self) -> list[dict[str, Any]]:
        if self.shapes is None:
            self.shapes = self._polygons(self.xy)
        return self.shapes

    def pixel_geojson(self, extent: tuple[float, float, float, float],
                      shape: tuple[int, int],
                      origin: tuple[float, float, float, float] | None = None
                      ) -> list[dict[str, Any]]:
        """The zones in pixels of the window (x = column, y = minus the row)."""
        u, v = self.pixels(extent, shape, origin)
        return self._polygons(np.column_stack([u, -v]))

    def _polygons(self, xy: np.ndarray) -> list[dict[str, Any]]:
        return [{"type": "Polygon", "coordinates": [
            xy[self.ring_starts[r]:self.ring_starts[r + 1]].tolist()
            for r in range(self.poly_starts[p], self.poly_starts[p + 1])]}
            for p in range(len(self.poly_starts) - 1)]


class Shapes:
    """Zones only exactextract reads (multipolygons): shapely geometries, raster CRS."""

    def __init__(self, geoms: np.ndarray) -> None:
        self.geoms = geoms

    def geojson(self) -> list[dict[str, Any]]:
        import shapely

        return [json.loads(shapely.to_geojson(g)) for g in self.geoms]

    def pixel_geojson(self, extent: tuple[float, float, float, float],
                      shape: tuple[int, int],
                      origin: tuple[float, float, float, float] | None = None
                      ) -> list[dict[str, Any]]:
        import shapely

        def flip(xy: np.ndarray) -> np.ndarray:
            u, v = to_pixels(xy, extent, shape, origin)
            return np.column_stack([u, -v])

        return [json.loads(shapely.to_geojson(g))
                for g in shapely.transform(self.geoms, flip)]


# A vertex this close to a pixel edge (in pixels) is on it: the window's extent and the
# vertex's own coordinates round differently, and a sliver of 1e-13 of the neighbouring
# pixel would decide min, max, minority, variety and the median.
_SNAP = 1e-9


def to_pixels(xy: np.ndarray, extent: tuple[float, float, float, float],
              shape: tuple[int, int], origin: tuple[float, float, float, float] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Column and row coordinates (from the window's top-left corner) of ``xy``, those
    within :data:`_SNAP` of a pixel edge put on it. With the raster grid's ``origin`` (x0,
    y0, xres, yres) they are measured from the grid's corner and moved by the window's
    whole pixels (exact), so a zone gets the same coordinates, and so the same coverage
    fractions to the bit, from whichever window holds it (a run of several resolutions
    reads other windows than a run of one)."""
    xmin, ymin, xmax, ymax = extent
    nrows, ncols = shape
    if origin is not None:
        x0, y0, xres, yres = origin
        c0, r0 = round((xmin - x0) / xres), round((y0 - ymax) / yres)
        u = (xy[:, 0] - x0) / xres - c0
        v = (y0 - xy[:, 1]) / yres - r0
    else:
        u = (xy[:, 0] - xmin) / ((xmax - xmin) / ncols)
        v = (ymax - xy[:, 1]) / ((ymax - ymin) / nrows)
    for a in (u, v):
        near = np.rint(a)
        on = np.abs(a - near) < _SNAP
        a[on] = near[on]
    return u, v


def _moments(values: np.ndarray, u: np.ndarray, v: np.ndarray, zones: Rings,
             weights: np.ndarray, want: Wanted, put: Any) -> None:
    # numba (0.2 s, 220 modules) loads with the first window computed, not with every
    # command that imports the operations to check a pipeline.
    from h3pipe.operations import coverage

    result = coverage.polygon_moments(values, u, v, zones.ring_starts, zones.poly_starts,
                                      weights)
    empty = ~(result[:, coverage.COUNT] > 0)
    for stat in [s for s in want.stats if s in MOMENT_STATS] + ["_sum"]:
        col = result[:, _KERNEL_COLUMN[stat.lstrip("_")]].copy()
        if stat not in DEFINED_WHEN_EMPTY:
            col[empty] = np.nan
        put(stat, col)
    put("_count", result[:, coverage.COUNT])
    put("_valid", result[:, coverage.VALID])


def _binned(bins: Bins, values: np.ndarray, u: np.ndarray, v: np.ndarray, zones: Rings,
            weights: np.ndarray, put: Any) -> None:
    # numba (0.2 s): as in _moments.
    from h3pipe.operations import coverage

    index = bins.index(values)
    area = coverage.polygon_bins(index, len(bins.names), u, v, zones.ring_starts,
                                 zones.poly_starts, weights)
    for j, name in enumerate(bins.names):
        put(name, area[:, j])  # an area until finish() divides by the valid area


def _exactextract(values: np.ndarray, extent: tuple[float, float, float, float], info: Any,
                  want: Wanted, zones: Any, put: Any, where: str) -> None:
    from exactextract import Operation as EEOperation
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    xmin, ymin, xmax, ymax = extent
    if not want.truncate and np.issubdtype(np.dtype(info.dtype), np.integer):
        # Integers arrive as float32: interpolated quantiles would be rounded to 7 digits.
        values = values.astype(np.float64)
    if want.weights == "area":  # exactextract needs the CRS for the pixels' areas
        raster = NumPyRasterSource(values, xmin, ymin, xmax, ymax, srs_wkt=info.crs_wkt)
        shapes = zones.geojson()
        weight = {"coverage_weight": "area_spherical_m2" if info.crs_is_wgs84
                  else "area_cartesian"}
    else:
        # In the window's own pixels, where pixel edges are whole numbers: a zone drawn
        # on the raster's grid covers no sliver of its neighbours.
        nrows, ncols = values.shape
        raster = NumPyRasterSource(values, 0, -nrows, ncols, 0)
        shapes, weight = zones.pixel_geojson(extent, values.shape,
                                             (info.x0, info.y0, info.xres, info.yres)), {}
    stats = want.exact_stats + ["sum"] * ("sum" not in want.exact_stats)
    # Each operation gets a field name of its own, f0, f1, ...: exactextract derives
    # quantile names from a truncated q*100 (0.29 becomes 'quantile_28', colliding with
    # 0.28) and appends "_<q>" to any field name given with options, so we match by prefix.
    ops = [EEOperation(name, f"f{i}", raster, None, {**options, **weight})
           for i, (name, options) in enumerate(map(stat_to_exactextract, stats))]
    ops += [EEOperation("count", "wcount", raster, None, weight),
            EEOperation("count", "valid", raster)]
    features = [{"type": "Feature", "properties": {"row": i}, "geometry": shape}
                for i, shape in enumerate(shapes)]
    try:
        result = exact_extract(raster, features, ops, include_cols=["row"])
    except Exception as exc:  # exactextract raises plain RuntimeError/ValueError
        raise OperationError(f"{where}: exactextract failed: {exc}") from exc
    integer = np.issubdtype(np.dtype(info.dtype), np.integer) and want.truncate
    cols = {s: np.full(len(shapes), np.nan) for s in [*stats, "_count", "_valid"]}
    for feature in result:
        props = feature["properties"]
        by_field = {k.split("_", 1)[0]: val for k, val in props.items() if k[:1] == "f"}
        row, empty = props["row"], not props["valid"]
        cols["_count"][row], cols["_valid"][row] = props["wcount"], props["valid"]
        for i, stat in enumerate(stats):
            value = _clean(by_field.get(f"f{i}"), stat, empty)
            if value is not None and integer and _INTERPOLATED.match(stat):
                value = float(math.trunc(value))
            cols[stat][row] = np.nan if value is None else value
    cols["_sum"] = cols["sum"]
    for name, col in cols.items():
        if name in want.stats or name in WORK:
            put(name, col)


def stat_to_exactextract(stat: str) -> tuple[str, dict[str, Any]]:
    """exactextract's statistic name and options for one of ours (``quantile_25``)."""
    m = QUANTILE.match(stat)
    if m:
        return "quantile", {"q": int(m.group(1)) / 100}
    return stat, {}


def _clean(value: Any, stat: str, empty: bool) -> Any:
    if empty and stat not in DEFINED_WHEN_EMPTY:
        return None
    if value is None:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    return int(value) if stat == "variety" else float(value)


__all__ = ["DEFINED_WHEN_EMPTY", "KERNEL_LOAD_S", "MOMENT_STATS", "QUANTILE", "Rings", "Shapes",
           "Wanted", "fill", "needs_exactextract", "small_work", "stat_to_exactextract",
           "to_pixels"]
