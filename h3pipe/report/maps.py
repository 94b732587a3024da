"""Choropleth maps of H3 cells: :func:`draw` writes a :class:`CellMap` as PNG, SVG or PDF.

Cells are rasterised at the output's own pixel size: every pixel of the map frame takes the
colour of the cell its centre lies in (one H3 lookup per pixel, then a binary search among
the cells), so the cost is the picture's, not the scope's: a million cells draw as fast as a
hundred. A cell smaller than a pixel shows only where a pixel centre falls in it, as any
raster view of fine data does. The frame is plate carree stretched by 1/cos of the middle
latitude, so shapes near the map's centre are true and the scale bar holds there; a scope
across the antimeridian is drawn with its longitudes continuous across 180, and one wider
than half the world in Equal Earth (:mod:`h3pipe.report.projection`).

matplotlib draws the frame, colour bar, legend and text: it writes PNG, SVG and PDF from one
figure, its colour maps are perceptually uniform (viridis) or made for the purpose (RdBu,
tab10), and it is the plotting library a GIS user's Python already has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe import extras, grid
from h3pipe.config.schemas import suggest
from h3pipe.errors import UsageError
from h3pipe.report.projection import LONLAT, WORLD, View, view_for
from h3pipe.results.formats import atomic
from h3pipe.results.outputs import is_stdout, target

FORMATS = (".png", ".svg", ".pdf")
# The largest picture side, in pixels: 10,000 x 10,000 is 400 MB of RGBA while drawing.
MAX_SIDE = 10_000
NULL_COLOUR = "#c8c8c8"    # a cell without a value
NODATA_COLOUR = "#5a5a5a"  # a cell whose every pixel was the raster's nodata
EDGE_COLOUR = "#1a1a1a"    # the scope's outline
# Qualitative classes: tab10 without its grey, which would read as null or nodata.
CLASS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a",
                 "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
OTHER_COLOUR = "#000000"   # a categorical value that is none of the declared classes
KM_PER_DEGREE = 111.32


@dataclass(frozen=True)
class Style:
    """How values become colours: ``kind`` sequential, diverging (about ``center``) or
    categorical (``classes``: value and name)."""

    kind: str = "sequential"
    label: str = ""
    classes: tuple[tuple[float, str], ...] = ()
    vmin: float | None = None
    vmax: float | None = None
    center: float = 0.0
    cmap: str | None = None


@dataclass(frozen=True)
class CellMap:
    """What to draw: the cells (uint64) with their values (NaN: null) and which of them
    had no valid pixel at all; the scope's outline (shapely) when known."""

    cells: np.ndarray
    values: np.ndarray
    nodata: np.ndarray
    resolution: int
    title: str
    subtitle: str = ""
    outline: Any | None = None


@dataclass(frozen=True)
class Frame:
    """Where the map sits in the picture (pixels, top-left origin) and what it shows."""

    left: int
    top: int
    width: int
    height: int
    extent: tuple[float, float, float, float]  # west, east, south, north (in the view's units)
    view: View = View()

    def lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """Longitude and latitude of every pixel centre, row by row from the top (NaN where
        the pixel shows no place on Earth)."""
        west, east, south, north = self.extent
        x = west + (np.arange(self.width) + 0.5) * (east - west) / self.width
        y = north - (np.arange(self.height) + 0.5) * (north - south) / self.height
        return self.view.inverse(np.tile(x, self.height), np.repeat(y, self.width))


def check_format(out: Path) -> str:
    """The picture format ``out`` asks for; refused when it is none of :data:`FORMATS`, or
    when ``out`` cannot be written (:func:`h3pipe.results.outputs.target`)."""
    if is_stdout(out):
        raise UsageError("map -o -: a map is written to a file, not to standard output",
                         hint="give a file ending in " + ", ".join(FORMATS))
    target(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"cannot draw a map as '{out.name}': give a file ending in "
                         + ", ".join(FORMATS))
    return suffix


def check_request(size: tuple[int, int], vmin: float | None, vmax: float | None) -> None:
    """Refuse a picture too large to draw in bounded memory, and a colour scale that is
    empty or runs backwards, before any data is read."""
    for name, side in zip(("--width", "--height"), size, strict=True):
        if side > MAX_SIDE:
            raise UsageError(f"{name} {side}: a picture side is at most {MAX_SIDE:,} pixels",
                             hint="draw a smaller picture, or a PDF or SVG, which scale")
    bad = [(n, v) for n, v in (("--vmin", vmin), ("--vmax", vmax))
           if v is not None and not math.isfinite(v)]
    if bad:
        raise UsageError(f"{bad[0][0]} {bad[0][1]} is not a finite number")
    if vmin is not None and vmax is not None and vmin >= vmax:
        raise UsageError(f"--vmin {vmin:g} is not below --vmax {vmax:g}",
                         hint="give the colour scale's low end as --vmin, its high end as "
                         "--vmax")


def draw(data: CellMap, style: Style, out: Path, *, size: tuple[int, int] = (1200, 900)
         ) -> dict[str, Any]:
    """Write the map to ``out`` (by its extension) and return where its parts are (the
    same facts a PNG carries in its ``h3pipe`` text chunk)."""
    suffix = check_format(out)
    fig, facts = figure(data, style, size)
    meta = {"h3pipe": json.dumps(facts)} if suffix == ".png" else None
    atomic(out, "picture", lambda tmp: fig.savefig(tmp, format=suffix[1:], dpi=100,
                                                   metadata=meta))
    return facts


def figure(data: CellMap, style: Style, size: tuple[int, int]) -> tuple[Any, dict[str, Any]]:
    """The matplotlib figure of a map (not saved) and the facts about its layout."""
    extras.require("report")  # every other matplotlib import here is reached from here
    from matplotlib.figure import Figure

    width, height = size
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    frame = _frame(data, width, height)
    ax = fig.add_axes(_fraction(frame.left, frame.top, frame.width, frame.height, size))
    colours, legend = colour_scale(data.values, data.nodata, style)
    ax.imshow(_raster(data, frame, colours), extent=frame.extent, origin="upper",
              interpolation="nearest", aspect="auto", zorder=1)
    ax.set_xlim(frame.extent[0], frame.extent[1])
    ax.set_ylim(frame.extent[2], frame.extent[3])
    _outline(ax, data.outline, frame.view)
    if frame.view.projected:
        _projected_graticule(ax, frame.view)
    else:
        _graticule(ax, frame.view)
        _scale_bar(ax, frame)
    facts: dict[str, Any] = {"axes": [frame.left, frame.top, frame.width, frame.height],
                             "extent": list(frame.extent), "crs": frame.view.crs,
                             "kind": style.kind,
                             "null_colour": NULL_COLOUR, "nodata_colour": NODATA_COLOUR}
    facts |= _key(fig, size, style, legend, colours)
    fig.text(frame.left / width, 1 - 22 / height, data.title, fontsize=15, weight="bold")
    if data.subtitle:
        fig.text(frame.left / width, 1 - 44 / height, data.subtitle, fontsize=10,
                 color="#444444")
    return fig, facts


# -- layout -----------------------------------------------------------------------------------

MARGIN = {"left": 70, "right": 250, "top": 64, "bottom": 48}


def _frame(data: CellMap, width: int, height: int) -> Frame:
    """The map frame, as large as the margins allow, with the cells' (and the outline's)
    extent widened on one side so that a degree of latitude is true to a degree of
    longitude times cos(middle latitude) (projected, a metre to a metre)."""
    # Every cell's centre is inside the scope: its outline bounds them, and costs nothing
    # where the cells' centres would cost a second per ten million.
    centres = None if _has_outline(data) else grid.centres(data.cells)
    view = view_for(_boxes(data, centres))
    west, south, east, north = (_bounds(data, centres) if view.kind == LONLAT
                                else _view_bounds(data, view, centres))
    aw = width - MARGIN["left"] - MARGIN["right"]
    ah = height - MARGIN["top"] - MARGIN["bottom"]
    mid = (south + north) / 2
    k = 1.0 if view.projected else max(math.cos(math.radians(mid)), 0.05)
    w, h = max((east - west) * k, 1e-6), max(north - south, 1e-6)
    if w / h > aw / ah:
        h = w * ah / aw
    else:
        w = h * aw / ah
    cx, cy = (west + east) / 2, mid
    extent = (cx - w / 2 / k, cx + w / 2 / k, cy - h / 2, cy + h / 2)
    return Frame(MARGIN["left"], MARGIN["top"], aw, ah, extent, view)


Centres = tuple[np.ndarray, np.ndarray] | None


def _has_outline(data: CellMap) -> bool:
    return data.outline is not None and not data.outline.is_empty


def _bounds(data: CellMap, centres: Centres) -> tuple[float, float, float, float]:
    """West, south, east, north of the outline (or the cells' centres), with a margin of a
    cell."""
    boxes = []
    if data.outline is not None and not data.outline.is_empty:
        boxes.append(data.outline.bounds)
    elif centres is not None and len(centres[0]):
        lng, lat = centres
        boxes.append((lng.min(), lat.min(), lng.max(), lat.max()))
    if not boxes:
        return (-1.0, -1.0, 1.0, 1.0)
    west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)
    east, north = max(b[2] for b in boxes), max(b[3] for b in boxes)
    pad = 2 * _edge_degrees(data.resolution) + 0.02 * max(east - west, north - south)
    return west - pad, south - pad, east + pad, north + pad


def _boxes(data: CellMap, centres: Centres) -> np.ndarray:
    """Lon/lat boxes of the outline's parts (or of the cells' centres, a box per degree of
    longitude they occupy), to choose the view by."""
    import shapely

    if _has_outline(data):
        return np.asarray(shapely.bounds(shapely.get_parts(data.outline)))
    if centres is None or not len(centres[0]):
        return np.zeros((0, 4))
    lng, lat = centres
    degree = np.flatnonzero(np.bincount(np.clip(np.floor(lng) + 180, 0, 359).astype(np.int64),
                                        minlength=360)) - 180.0
    return np.column_stack([degree, np.full(len(degree), lat.min()), degree + 1,
                            np.full(len(degree), lat.max())])


def _view_bounds(data: CellMap, view: View, centres: Centres
                 ) -> tuple[float, float, float, float]:
    """Like :func:`_bounds`, in the view's units: the outline (or the cells' centres)
    carried into the view, with a margin of a cell."""
    if _has_outline(data):
        x, y = view.points(data.outline).T
    else:
        assert centres is not None
        x, y = view.forward(*centres)
    west, south, east, north = float(x.min()), float(y.min()), float(x.max()), float(y.max())
    edge = _edge_degrees(data.resolution) * (KM_PER_DEGREE * 1000 if view.projected else 1)
    pad = 2 * edge + 0.02 * max(east - west, north - south)
    return west - pad, south - pad, east + pad, north + pad


def _edge_degrees(resolution: int) -> float:
    import h3

    return float(h3.average_hexagon_edge_length(resolution, unit="km")) / KM_PER_DEGREE


def _fraction(left: float, top: float, w: float, h: float, size: tuple[int, int]
              ) -> tuple[float, float, float, float]:
    """A pixel box (top-left origin) as the figure fractions matplotlib places axes by."""
    width, height = size
    return (left / width, 1 - (top + h) / height, w / width, h / height)


# -- colours ----------------------------------------------------------------------------------

def _rgba(colour: str) -> np.ndarray:
    from matplotlib.colors import to_rgba_array

    return (to_rgba_array(colour)[0] * 255).round().astype(np.uint8)


@dataclass(frozen=True)
class Colours:
    """How a cell's value becomes its colour, worked out only for the cells a picture
    shows (a pixel's worth, however many cells there are)."""

    values: np.ndarray
    null: np.ndarray
    nodata: np.ndarray
    cmap: Any = None
    norm: Any = None
    classes: tuple[tuple[float, str], ...] = ()

    def of(self, cells: np.ndarray) -> np.ndarray:
        """The RGBA (uint8) of the cells at these positions."""
        values = self.values[cells]
        if self.cmap is None:
            rgba = np.tile(_rgba(OTHER_COLOUR), (len(cells), 1))
            for k, (value, _) in enumerate(self.classes):
                rgba[values == value] = _rgba(CLASS_COLOURS[k % len(CLASS_COLOURS)])
        else:
            rgba = self.cmap(self.norm(np.where(np.isnan(values), 0.0, values)), bytes=True)
        rgba[self.null[cells]] = _rgba(NULL_COLOUR)
        rgba[self.nodata[cells]] = _rgba(NODATA_COLOUR)
        return np.asarray(rgba, dtype=np.uint8)


def colour_scale(values: np.ndarray, nodata: np.ndarray, style: Style
                 ) -> tuple[Colours, list[tuple[str, str]]]:
    """How cells with these values (NaN: null; ``nodata``: null for want of a valid pixel)
    are coloured, and the legend entries (colour, text) beside the colour bar: the maps
    drawn here and the dashboard's interactive map (:mod:`h3pipe.server.maps`) alike."""
    values = np.asarray(values, dtype=np.float64)
    null = np.isnan(values)
    nodata = null & np.asarray(nodata, dtype=bool)
    if style.kind == "categorical":
        classes = tuple(style.classes) or tuple((float(v), f"{v:g}")
                                                for v in np.unique(values[~null]))
        colours = Colours(values, null, nodata, classes=classes)
        legend = _class_legend(values, classes)
    else:
        cmap, norm = _scale(values[~null], style)
        colours, legend = Colours(values, null, nodata, cmap, norm), []
    plain = int(null.sum() - nodata.sum())
    legend += [(NULL_COLOUR, f"null (no value): {plain:,}"),
               (NODATA_COLOUR, f"nodata (no valid pixel): {int(nodata.sum()):,}")]
    return colours, legend


def _scale(valid: np.ndarray, style: Style) -> tuple[Any, Any]:
    """The colour map and normalisation: the data's range unless given."""
    import matplotlib
    from matplotlib.colors import Normalize, TwoSlopeNorm

    lo = style.vmin if style.vmin is not None else (float(valid.min()) if len(valid) else 0.0)
    hi = style.vmax if style.vmax is not None else (float(valid.max()) if len(valid) else 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    name = style.cmap or ("RdBu_r" if style.kind == "diverging" else "viridis")
    if name not in matplotlib.colormaps:
        raise UsageError(f"unknown colour map '{name}'" + suggest(name, list(matplotlib.colormaps))
                         + " (any matplotlib colour map name)")
    if style.kind == "diverging":
        reach = max(abs(hi - style.center), abs(style.center - lo))
        norm: Any = TwoSlopeNorm(style.center, style.center - reach, style.center + reach)
        return matplotlib.colormaps[name], norm
    return matplotlib.colormaps[name], Normalize(lo, hi, clip=True)


def _class_legend(values: np.ndarray, classes: tuple[tuple[float, str], ...]
                  ) -> list[tuple[str, str]]:
    """A legend entry per class, by name, and one for values that are none of them."""
    legend = []
    for k, (value, name) in enumerate(classes):
        colour = CLASS_COLOURS[k % len(CLASS_COLOURS)]
        legend.append((colour, f"{name} ({value:g})" if name != f"{value:g}" else name))
    declared = np.isin(values, [v for v, _ in classes]) | np.isnan(values)
    if not declared.all():
        legend.append((OTHER_COLOUR, f"other value: {int((~declared).sum()):,} cells"))
    return legend


def _raster(data: CellMap, frame: Frame, colours: Colours) -> np.ndarray:
    """The frame's pixels: the colour of the cell under each pixel centre, transparent
    where no cell of the map is (or no place on Earth: past a pole, outside the world)."""
    lon, lat = frame.lonlat()
    on_earth = np.flatnonzero(~np.isnan(lat))
    under = grid.cells_at(lon[on_earth], lat[on_earth], data.resolution)
    order = np.argsort(data.cells, kind="stable")
    ranked = data.cells[order]
    at = np.clip(np.searchsorted(ranked, under), 0, max(len(ranked) - 1, 0))
    image = np.zeros((frame.height * frame.width, 4), dtype=np.uint8)
    if len(ranked):
        hit = ranked[at] == under
        shown, where = np.unique(order[at[hit]], return_inverse=True)
        image[on_earth[hit]] = colours.of(shown)[where]
    return image.reshape(frame.height, frame.width, 4)


# -- decoration -------------------------------------------------------------------------------

def _outline(ax: Any, outline: Any | None, view: View) -> None:
    """The scope's boundary, every part of it, above the cells."""
    if outline is None or outline.is_empty:
        return
    for x, y in (line.T for line in view.lines(outline)):
        # Dark on a light halo: readable over any colour map and any class colour.
        ax.plot(x, y, color="white", linewidth=2.6, alpha=0.8, zorder=3)
        ax.plot(x, y, color=EDGE_COLOUR, linewidth=1.0, zorder=3)


def _degrees(hemispheres: str, *, wrap: bool = False) -> Any:
    """Tick labels in degrees; ``wrap``: longitudes past 180 named as those they show."""
    from matplotlib.ticker import FuncFormatter

    def label(v: float, _: Any) -> str:
        if wrap:
            v = (v + 180) % 360 - 180
            if v == -180:
                return "180°"
        return f"{abs(v):g}°{hemispheres[int(v < 0)]}" if v else "0°"

    return FuncFormatter(label)


def _graticule(ax: Any, view: View) -> None:
    """Degree ticks on the frame and faint lines across it."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(7))
    ax.yaxis.set_major_locator(MaxNLocator(7))
    ax.xaxis.set_major_formatter(_degrees("EW", wrap=view.kind != LONLAT))
    ax.yaxis.set_major_formatter(_degrees("NS"))
    ax.tick_params(labelsize=8, colors="#444444")
    ax.grid(True, color="#999999", linewidth=0.4, alpha=0.5, zorder=2)
    ax.set_axisbelow(False)


WORLD_GRATICULE = 30.0  # degrees between the lines of a world map's graticule


def _projected_graticule(ax: Any, view: View) -> None:
    """Faint meridians and parallels every 30 degrees over the latitudes the view shows, and
    the world's edge on a world map; no ticks (a projected frame has no degree scale along
    its sides)."""
    import shapely

    ax.set_xticks([])
    ax.set_yticks([])
    south, north = view.latitudes
    meridians = np.arange(-180.0, 180.0, WORLD_GRATICULE)
    parallels = np.arange(-90.0 + WORLD_GRATICULE, 90.0, WORLD_GRATICULE)
    faint = [shapely.LineString([(x, south), (x, north)]) for x in meridians]
    faint += [shapely.LineString([(-180.0, y), (180.0, y)]) for y in parallels
              if south <= y <= north]
    edge = [shapely.box(*grid.WORLD).exterior] if view.kind == WORLD else []
    for lines, colour, width in ((faint, "#999999", 0.4), (edge, "#555555", 0.8)):
        for line in shapely.segmentize(np.asarray(lines, dtype=object), 1.0):
            x, y = view.forward(*np.asarray(line.coords).T)
            ax.plot(x, y, color=colour, linewidth=width, alpha=0.6, zorder=2)


def nice_length(km: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``km``."""
    if km <= 0:
        return 0.0
    power = 10 ** math.floor(math.log10(km))
    return max(m * power for m in (1, 2, 5) if m * power <= km)


def _scale_bar(ax: Any, frame: Frame) -> None:
    """A bar of a round number of kilometres, true at the map's middle latitude."""
    west, east, south, north = frame.extent
    km_per_lon = KM_PER_DEGREE * math.cos(math.radians((south + north) / 2))
    km = nice_length((east - west) * km_per_lon / 5)
    if km <= 0:
        return
    x0 = west + 0.04 * (east - west)
    y0 = south + 0.05 * (north - south)
    length = km / km_per_lon
    ax.plot([x0, x0 + length], [y0, y0], color="black", linewidth=3, zorder=4,
            solid_capstyle="butt")
    ax.text(x0 + length / 2, y0 + 0.022 * (north - south), f"{km:g} km", ha="center",
            va="bottom", fontsize=9, zorder=4,
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})


def _key(fig: Any, size: tuple[int, int], style: Style, legend: list[tuple[str, str]],
         colours: Colours) -> dict[str, Any]:
    """The colour bar (quantities) and the legend (classes, null, nodata), at the right."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.patches import Patch

    width, height = size
    left = width - MARGIN["right"] + 24
    facts: dict[str, Any] = {}
    top = MARGIN["top"]
    if colours.cmap is not None:  # a scale of quantities, not classes
        norm = colours.norm
        bar = (left, top, 22, int(height * 0.5))
        cax = fig.add_axes(_fraction(*bar, size))
        cb = fig.colorbar(ScalarMappable(norm=norm, cmap=colours.cmap), cax=cax)
        cb.set_label(style.label, fontsize=10)
        cax.tick_params(labelsize=8)
        facts |= {"colorbar": list(bar), "vmin": float(norm.vmin), "vmax": float(norm.vmax)}
        top += bar[3] + 24
    handles = [Patch(facecolor=c, edgecolor="#777777", label=t) for c, t in legend]
    title = style.label if style.kind == "categorical" else None
    fig.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, title=title,
               bbox_to_anchor=(left / width - 0.01, 1 - top / height))
    return facts


__all__ = ["CellMap", "Colours", "Style", "check_format", "draw", "figure", "nice_length",
           "colour_scale"]
