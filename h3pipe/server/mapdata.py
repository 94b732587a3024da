"""The cells behind the dashboard's interactive map: :class:`Layer`, one column of one
published result (one scenario of a sweep) held in memory as sorted cell ids with their
centres, and its coarser :class:`Level` s, made when first asked for. :meth:`Layer.view`
answers a map's view (a :class:`Box`) with at most a given number of cells: the published
ones, or their H3 ancestors at the finest resolution that fits, each with the value its
published descendants make by the column's :class:`Rule`.

Coarser cells rather than viewport tiles: a coarser cell is still an H3 cell, drawn and
hovered like any other, and its value is one the column's meaning allows (a sum of people,
a mean elevation); a tile would be a picture of cells whose values the browser could not
show. Ancestors come from the ids by bit arithmetic (:func:`h3pipe.grid.parents`), and
since sorted ids keep each ancestor's descendants together, a level is one pass of
``reduceat`` over the published cells: tens of milliseconds for a million.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import h3
import numpy as np

from h3pipe import grid
from h3pipe.errors import H3PipeError, UsageError
from h3pipe.report.maps import Colours, Style, colour_scale
from h3pipe.report.meaning import IN_UNITS, SHARES, Meaning

SUM, MEAN, MIN, MAX, MAJORITY = "sum", "mean", "min", "max", "majority"
# A zonal statistic (after its band's prefix) or an aggregation's function whose coarser
# value is not a mean: amounts add up, extremes stay extremes.
ZONAL = {"sum": SUM, "count": SUM, "cell_area_km2": SUM, "min": MIN, "max": MAX,
         "variety": MAX}
AGGREGATED = {"count": SUM, "sum": SUM, "min": MIN, "max": MAX}
EARTH_KM = 40_075.016686  # the equator, the width of a Web Mercator world
TILE_PIXELS = 256  # a Web Mercator world is 256 * 2**zoom pixels wide


@dataclass(frozen=True)
class Rule:
    """How a coarser cell's value comes from its published descendants': ``how`` is sum,
    mean, min, max or majority; a mean weighs each descendant by column ``weight`` (its
    valid pixels) or, without one, alike (an H3 cell's descendants have nearly one area,
    so that is the mean by area)."""

    how: str = MEAN
    weight: str | None = None

    @property
    def text(self) -> str:
        """What a coarser cell's value is, as the legend says it."""
        if self.how == MEAN:
            return "mean of the finer cells" + (f" weighted by {self.weight}"
                                                if self.weight else " by area")
        return {SUM: "sum of the finer cells", MIN: "least of the finer cells",
                MAX: "largest of the finer cells",
                MAJORITY: "the class most of the finer cells have"}[self.how]


def rule_of(project: Any, dataset: str, column: str, what: Meaning) -> Rule:
    """The rule of ``column``, read off the pipeline that made ``dataset``: sums for
    amounts (a zonal sum or count, a count of features), the extreme for min and max, the
    majority for classes, else a mean (a quantity per place: elevation, a share, a
    density), weighted by the valid pixels when a statistic of pixel values is beside
    their count. An unknown column is averaged: a mean never inflates a value."""
    if what.kind == "categorical":
        return Rule(MAJORITY)
    kind, stat = _made_by(project, dataset, column, what)
    if kind == "zonal" and stat in ZONAL:
        return Rule(ZONAL[stat])
    if kind == "aggregated" and stat in AGGREGATED:
        return Rule(AGGREGATED[stat])
    pixels = kind == "zonal" and IN_UNITS.match(stat) and not SHARES.match(stat)
    return Rule(MEAN, what.nodata_column if pixels else None)


def _made_by(project: Any, dataset: str, column: str, what: Meaning) -> tuple[str, str]:
    """("zonal", statistic) or ("aggregated", function) of the column; ("", "") unknown."""
    if what.source is not None:
        for band in what.source.band_names:
            if column.startswith(f"{band}_"):
                return "zonal", column[len(band) + 1:]
        return "zonal", column
    try:
        _, pipelines, _ = project.load()
    except H3PipeError:
        return "", ""
    for pipeline in (p for p in pipelines.values() if p.dataset == dataset):
        for step in pipeline.steps:
            for agg in step.params.get("aggregations", []) if step.output == "h3_stats" else ():
                name = str(agg.get("name"))
                if column == name or column.endswith(f"_{name}"):  # a band's prefix
                    return "aggregated", str(agg.get("function"))
    return "", ""


@dataclass(frozen=True)
class Box:
    """A view in longitude and latitude: ``west`` > ``east`` when it crosses the
    antimeridian (GeoJSON's rule); ``whole`` when it spans every longitude."""

    west: float
    south: float
    east: float
    north: float
    whole: bool = False

    @classmethod
    def parse(cls, text: str) -> Box:
        try:
            west, south, east, north = (float(v) for v in text.split(","))
        except ValueError:
            raise UsageError(f"bbox '{text}' is not W,S,E,N (four numbers in degrees)",
                             hint="e.g. bbox=28.8,-2.9,30.9,-1.0; W > E crosses 180") from None
        if not all(math.isfinite(v) for v in (west, south, east, north)):
            raise UsageError(f"bbox '{text}' holds a number that is not finite")
        if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south < north <= 90):
            raise UsageError(f"bbox '{text}': longitudes go from -180 to 180, latitudes "
                             "from -90 to 90, with S below N",
                             hint="a view across the antimeridian has W > E")
        return cls(west, south, east, north, whole=west == -180 and east == 180)

    def grown(self, degrees: float) -> Box:
        """The box with a margin (degrees of latitude; longitude's widened for the
        latitude), so that cells whose centre is just outside but whose edge is inside
        are drawn too."""
        south, north = max(self.south - degrees, -90.0), min(self.north + degrees, 90.0)
        far = max(abs(south), abs(north))
        across = degrees / max(math.cos(math.radians(min(far, 89.0))), 0.01)
        width = (self.east - self.west) % 360 or (360.0 if self.whole else 0.0)
        if self.whole or width + 2 * across >= 360:
            return Box(-180.0, south, 180.0, north, whole=True)
        west = (self.west - across + 180) % 360 - 180
        east = (self.east + across + 180) % 360 - 180
        return Box(west, south, east, north)

    def holds(self, lng: np.ndarray, lat: np.ndarray) -> np.ndarray:
        inside = (lat >= self.south) & (lat <= self.north)
        if self.whole:
            return inside
        if self.west <= self.east:
            return inside & (lng >= self.west) & (lng <= self.east)
        return inside & ((lng >= self.west) | (lng <= self.east))


@dataclass(frozen=True)
class Level:
    """One column's cells at one resolution: ids sorted, values (NaN: null), which nulls
    are for want of a valid pixel (nodata), and what each weighs in a coarser mean (the
    weight of its valued published cells)."""

    resolution: int
    cells: np.ndarray
    values: np.ndarray
    nodata: np.ndarray
    weights: np.ndarray = field(repr=False)


def published(cells: np.ndarray, values: np.ndarray, nodata: np.ndarray, resolution: int,
              weights: np.ndarray | None = None) -> Level:
    """The published level, sorted by id; ``weights`` (default 1) are 0 where null."""
    order = np.argsort(cells, kind="stable")
    values = values[order]
    w = np.ones(len(cells)) if weights is None else np.nan_to_num(weights[order], nan=0.0)
    return Level(resolution, cells[order], values, nodata[order],
                 np.where(np.isnan(values), 0.0, w))


def coarser(level: Level, resolution: int, how: str) -> Level:
    """``level``'s cells' ancestors at ``resolution``, each with the value of its cells
    by ``how``: null where none of them has a value; nodata where none has a valid pixel.
    A sum, an extreme and a weighted mean of a level made this way are those of the
    published cells under it, so coarser levels are made one from the next."""
    parents = grid.parents(level.cells, resolution)
    if not len(parents):
        return Level(resolution, parents, level.values[:0], level.nodata[:0],
                     level.weights[:0])
    starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
    values, count = reduce(level.values, level.weights, starts, how)
    sizes = np.diff(np.r_[starts, len(parents)])
    nodata = (count == 0) & (np.add.reduceat(level.nodata.astype(np.int64), starts) == sizes)
    return Level(resolution, parents[starts], values, nodata,
                 np.add.reduceat(level.weights, starts))


def reduce(values: np.ndarray, weights: np.ndarray, starts: np.ndarray, how: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """The value of each group of ``values`` (groups begin at ``starts``) by ``how``, NaN
    where none of the group has one, and how many of each group have one."""
    valid = ~np.isnan(values)
    count = np.add.reduceat(valid.astype(np.int64), starts)
    if how == MAJORITY:
        out = _majority(values, valid, starts)
    elif how in (MIN, MAX):
        fill = np.inf if how == MIN else -np.inf
        ufunc = np.minimum if how == MIN else np.maximum
        out = ufunc.reduceat(np.where(valid, values, fill), starts)
    elif how == SUM:
        out = np.add.reduceat(np.where(valid, values, 0.0), starts)
    else:
        out = _mean(values, valid, weights, starts, count)
    return np.where(count > 0, out, np.nan), count


def _mean(values: np.ndarray, valid: np.ndarray, weights: np.ndarray, starts: np.ndarray,
          count: np.ndarray) -> np.ndarray:
    """Weighted means; a cell whose valued descendants all weigh nothing takes their plain
    mean (a value beside a count of 0 pixels should not be, but is not lost)."""
    w = np.where(valid, weights, 0.0)
    total = np.add.reduceat(w, starts)
    weighted = np.add.reduceat(np.where(valid, values, 0.0) * w, starts)
    plain = np.add.reduceat(np.where(valid, values, 0.0), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weighted / total, plain / count)


def _majority(values: np.ndarray, valid: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The value most descendants have (the smallest of those tied)."""
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    g, v = group[valid], values[valid]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    out = np.full(len(starts), np.nan)
    if not len(g):
        return out
    runs = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])])
    sizes = np.diff(np.r_[runs, len(g)])
    rg, rv = g[runs], v[runs]
    best = np.lexsort((rv, -sizes, rg))
    first = np.r_[True, rg[best][1:] != rg[best][:-1]]
    out[rg[best][first]] = rv[best][first]
    return out


@dataclass(frozen=True)
class Scale:
    """A level's colour scale over all its cells (so colours hold as the view pans) and
    the legend's entries beside it."""

    colours: Colours
    legend: list[tuple[str, str]]


class Places:
    """Where the cells of one result are, shared by its layers (every column, and mostly
    every scenario, has the same cells): each resolution's centres, computed when a view
    first looks at that resolution, the costliest step of a first view."""

    def __init__(self) -> None:
        self._kept: dict[tuple[int, int], tuple[np.ndarray, tuple[np.ndarray, ...]]] = {}
        self._lock = threading.Lock()

    def centres(self, level: Level) -> tuple[np.ndarray, np.ndarray]:
        lng, lat = self._of(level, -1, lambda: grid.centres(level.cells))
        return lng, lat

    def ancestors(self, level: Level, resolution: int) -> np.ndarray:
        """The level's cells' ancestors at ``resolution`` (sorted, as the cells are)."""
        return self._of(level, resolution,
                        lambda: (grid.parents(level.cells, resolution),))[0]

    def _of(self, level: Level, what: int, make: Any) -> tuple[np.ndarray, ...]:
        key = (level.resolution, what)
        with self._lock:
            found = self._kept.get(key)
        if found is not None and np.array_equal(found[0], level.cells):
            return found[1]
        made = tuple(make())
        with self._lock:
            self._kept[key] = (level.cells, made)
        return made


class Layer:
    """One column of one published result (one scenario): the published :class:`Level`
    and the coarser ones, each made from the next finer when a view first needs it (a
    majority from the published cells: the majority of majorities is not theirs)."""

    def __init__(self, native: Level, rule: Rule, style: Style, places: Places | None = None
                 ) -> None:
        self.native, self.rule, self.style = native, rule, style
        self.places = places or Places()
        self._levels: dict[int, Level] = {native.resolution: native}
        self._scales: dict[int, Scale] = {}
        self._lock = threading.Lock()

    def level(self, resolution: int) -> Level:
        with self._lock:
            found = self._levels.get(resolution)
        if found is None:
            finer = (self.native if self.rule.how == MAJORITY
                     else self.level(resolution + 1))
            found = coarser(finer, resolution, self.rule.how)
            with self._lock:
                self._levels[resolution] = found
        return found

    def scale(self, resolution: int) -> Scale:
        with self._lock:
            found = self._scales.get(resolution)
        if found is None:
            level = self.level(resolution)
            found = Scale(*colour_scale(level.values, level.nodata, self.style))
            with self._lock:
                self._scales[resolution] = found
        return found

    def view(self, box: Box, max_cells: int, finest: int | None = None
             ) -> tuple[Level, np.ndarray]:
        """The finest level (at most ``finest``) with at most ``max_cells`` cells in the
        box, and the positions of those cells in it."""
        top = self.native.resolution if finest is None else min(finest,
                                                                self.native.resolution)
        for resolution in range(max(top, 0), -1, -1):
            if resolution > 0 and self._far_over(box, resolution, max_cells):
                continue
            level, inside = self._inside(box, resolution)
            if len(inside) <= max_cells:
                return level, inside
        return level, inside[:max_cells]

    def _inside(self, box: Box, resolution: int) -> tuple[Level, np.ndarray]:
        level = self.level(resolution)
        lng, lat = self.places.centres(level)
        return level, np.flatnonzero(box.grown(_margin(resolution)).holds(lng, lat))

    def _far_over(self, box: Box, resolution: int, max_cells: int) -> bool:
        """Whether the box holds far more than ``max_cells`` cells at ``resolution``:
        more than twice as many under its cells two resolutions coarser (whose centres
        cost a 49th). A level too fine is passed over without the centres of its cells."""
        level = self.level(resolution)
        if len(level.cells) <= max_cells:
            return False
        probe = max(resolution - 2, 0)
        coarse, inside = self._inside(box, probe)
        ancestors = self.places.ancestors(level, probe)
        mine = coarse.cells[inside]
        under = np.searchsorted(ancestors, mine, "right") - np.searchsorted(ancestors, mine)
        return int(under.sum()) > 2 * max_cells


def _margin(resolution: int) -> float:
    """Degrees of latitude within which a cell's centre may lie outside a box its edge
    reaches into: twice the resolution's average edge."""
    return 2 * float(h3.average_hexagon_edge_length(resolution, unit="km")) / 111.32


def finest_for(zoom: float, latitude: float) -> int:
    """The finest resolution whose cells are at least a pixel across at this Web Mercator
    zoom and latitude: finer cells would be drawn under one another."""
    pixel_km = EARTH_KM * max(math.cos(math.radians(latitude)), 0.01) / (
        TILE_PIXELS * 2 ** max(zoom, 0.0))
    for resolution in range(15, -1, -1):
        if 2 * h3.average_hexagon_edge_length(resolution, unit="km") >= pixel_km:
            return resolution
    return 0


__all__ = ["Box", "Layer", "Level", "Places", "Rule", "coarser", "finest_for", "published",
           "reduce", "rule_of"]
