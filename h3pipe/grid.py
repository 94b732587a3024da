"""H3 cells in bulk, as ``uint64`` arrays: the scope's cells, their centres and outlines.

Every hot path that touches many cells goes through here, never one Python string per
cell: :class:`CellBlock` is how a batch names its cells (a few coarse parents and, where
the scope's edge crosses them, the scope's outline near them), and the functions below
turn ids into centres, outlines and strings with one call per array.

The bulk work is done by h3ronpy (Rust bindings of h3o, a port of the H3 library), chosen
on measurements (issue 12): the cells of DR Congo at resolution 8 in 1.6 s against 47 s
with h3-py's ``h3shape_to_cells`` and 65 s with its ``h3shape_to_cells_experimental``;
outlines of 16,807 cells in 56 ms against 112 ms for a loop over h3-py. h3ronpy asks for
new maintainers, so it is pinned, used in this module only, and tested against h3-py (the
reference implementation) on the same inputs: swapping it for h3-py's vectorised API or
another binding touches only this file. h3-py stays the library for single cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

# A parent's descendants (at any depth) have their centres inside the parent's outline
# scaled by 1.24 about its centre, for parents of resolution 2 and finer anywhere up to 85
# degrees of latitude (measured over 1,500 random parents, 4 levels down; tests/test_grid.py
# checks it). Resolutions 0 and 1 are distorted more (2.36 near the poles in lon/lat
# degrees). 1.5 and 3 leave room.
DESCENDANT_SCALE = 1.5
COARSE_DESCENDANT_SCALE = 3.0


# A parent's outline scaled by 1.25 about its centre holds its descendants' outlines (1 to
# 4 levels down) for parents of resolution 2 and finer whose centre is within 80 degrees
# of the equator, and the outline's bounding box their boxes up to 88 degrees (measured
# over 1,700 parents: the outline 1.22, and 1.54 for resolution 2 beyond 85 degrees; the
# box 1.17, and 1.25 for resolution 2 near the poles; tests/test_grid.py checks it). 1.3
# leaves room; resolutions 0 and 1 take COARSE_DESCENDANT_SCALE.
OUTLINE_SAFE_LATITUDE = 80.0
DESCENDANT_BOX_SCALE = 1.3


def descendant_scale(parent_resolution: int) -> float:
    """How much to grow a parent's outline so it holds its descendants' centres."""
    return DESCENDANT_SCALE if parent_resolution >= 2 else COARSE_DESCENDANT_SCALE


def descendant_box_scale(parent_resolution: int) -> float:
    """How much to grow a parent's outline so its box holds its descendants' boxes."""
    return DESCENDANT_BOX_SCALE if parent_resolution >= 2 else COARSE_DESCENDANT_SCALE


def _h3ronpy() -> Any:
    import h3ronpy

    return h3ronpy


def ids(cells: Any) -> np.ndarray:
    """``uint64`` ids of cells given as ids, hex strings or an Arrow array of either."""
    if isinstance(cells, np.ndarray) and cells.dtype == np.uint64:
        return cells
    arr = pa.array(cells) if not isinstance(cells, pa.Array | pa.ChunkedArray) else cells
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type):
        return np.asarray(arr.cast(pa.uint64()))
    if len(arr) == 0:
        return np.array([], dtype=np.uint64)
    return np.asarray(_h3ronpy().cells_parse(arr, set_failing_to_invalid=False)
                      ).astype(np.uint64)


def strings(cells: np.ndarray) -> pa.Array:
    """The cells' hex strings, as an Arrow string array."""
    if len(cells) == 0:
        return pa.array([], pa.string())
    return pa.array(_h3ronpy().cells_to_string(cells)).cast(pa.string())


def base_cells() -> np.ndarray:
    """The 122 cells of resolution 0."""
    import h3

    return np.array(sorted(h3.str_to_int(c) for c in h3.get_res0_cells()), dtype=np.uint64)


def children(parents: np.ndarray, resolution: int) -> np.ndarray:
    """Every descendant at ``resolution`` of each parent, parent by parent, each parent's
    sorted by id."""
    if len(parents) == 0:
        return np.array([], dtype=np.uint64)
    lists = _h3ronpy().change_resolution_list(parents, resolution)
    return _flat(pa.array(lists)).astype(np.uint64)


def _flat(lists: pa.Array) -> np.ndarray:
    """The values of a list array without nulls, in order: ``lists.flatten()`` without
    pyarrow.compute, which it imports (0.1 s of CPU) for the first run's scope."""
    if lists.null_count:
        return np.asarray(lists.flatten())
    offsets = lists.offsets.to_numpy()
    return lists.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]


def resolutions(cells: np.ndarray) -> np.ndarray:
    """Each cell's resolution (its id's resolution field)."""
    return ((cells >> np.uint64(52)) & np.uint64(0xF)).astype(np.int64)


def parents(cells: np.ndarray, resolution: int) -> np.ndarray:
    """Each cell's ancestor at ``resolution``, by bit arithmetic (resolution field and
    digits), for cells of one finer resolution."""
    if len(cells) == 0:
        return cells
    res = int((int(cells[0]) >> 52) & 0xF)
    if resolution >= res:
        return cells
    cleared = cells & ~np.uint64(0xF << 52)
    return (cleared | np.uint64(resolution << 52)
            | np.uint64((1 << (3 * (15 - resolution))) - 1))


def centres(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lng, lat) of the cells' centres, in degrees."""
    if len(cells) == 0:
        return np.array([]), np.array([])
    from h3ronpy.vector import cells_to_coordinates

    batch = pa.record_batch(cells_to_coordinates(cells))
    return (np.asarray(batch.column("lng")), np.asarray(batch.column("lat")))


def cells_at(lng: np.ndarray, lat: np.ndarray, resolution: int) -> np.ndarray:
    """The cells at ``resolution`` holding each point (degrees), as uint64 ids."""
    from h3ronpy.vector import coordinates_to_cells

    if len(lng) == 0:
        return np.zeros(0, dtype=np.uint64)
    res = np.full(len(lng), resolution, dtype=np.uint8)
    return np.asarray(coordinates_to_cells(np.asarray(lat, dtype=np.float64),
                                           np.asarray(lng, dtype=np.float64), res),
                      dtype=np.uint64)


def disks(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell with its neighbours (ring 1), flat, and the index of the cell each came
    from."""
    if len(cells) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    lists = pa.array(_h3ronpy().grid_disk(cells, 1))
    return (np.asarray(lists.flatten()).astype(np.uint64),
            np.asarray(lists.value_parent_indices()).astype(np.int64))


def outlines(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cells' closed (lon, lat) rings as one ``(n, 2)`` array and the start of each ring
    (``len(cells) + 1`` offsets), as H3 draws them (great-circle arcs ignored)."""
    from h3ronpy.vector import cells_to_wkb_polygons

    if len(cells) == 0:
        return np.zeros((0, 2)), np.zeros(1, dtype=np.int64)
    wkb = pa.array(cells_to_wkb_polygons(cells))
    return _rings_of_wkb(wkb)


def crossing(xy: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Whether each ring of :func:`outlines` (rings ``xy[starts[i]:starts[i + 1]]``, at
    least one) jumps across ±180 as H3 gives it: its longitudes span more than 180
    degrees."""
    lon = xy[:, 0]
    return (np.maximum.reduceat(lon, starts[:-1]) - np.minimum.reduceat(lon, starts[:-1])) > 180


def plane_rings(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cells' outlines as :func:`outlines` gives them, but each one closed ring on the
    lon/lat plane: a cell across the antimeridian keeps its vertices continuous (past ±180
    on the side of its centre; lon/lat rasters wrap there), a cell round a pole is closed
    over the pole along ±180 (RFC 7946's rule)."""
    xy, starts = outlines(cells)
    if not len(cells):
        return xy, starts
    odd = np.flatnonzero(crossing(xy, starts))
    if not len(odd):
        return xy, starts
    lng, lat = centres(cells[odd])
    pieces = np.split(xy, starts[1:-1])
    for k, i in enumerate(odd.tolist()):
        ring = pieces[i]
        cont = _continuous(ring)
        if abs(cont[-1] - cont[0]) > 180:
            polar = _round_pole(ring, 90.0 if lat[k] > 0 else -90.0)
            pieces[i] = np.asarray(polar.exterior.coords)
        else:
            cont += 360 * np.round((lng[k] - cont.mean()) / 360)
            pieces[i] = np.column_stack([cont, ring[:, 1]])
    counts = np.array([len(p) for p in pieces])
    out = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return np.concatenate(pieces), out


def _rings_of_wkb(wkb: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Rings of single-ring WKB polygons, read straight from the Arrow buffers (parsing
    them into shapely objects first costs more than the rest of a cell's statistics).
    Each value: byte order (1), type (4), ring count (4), point count (4), then x, y
    doubles."""
    offsets = np.frombuffer(wkb.buffers()[1], dtype=np.int64)[wkb.offset:wkb.offset + len(wkb) + 1]
    data = np.frombuffer(wkb.buffers()[2], dtype=np.uint8)
    head = offsets[:-1]
    if not (data[head] == 1).all() or not (_u32(data, head + 1) == 3).all() \
            or not (_u32(data, head + 5) == 1).all():
        raise ValueError("expected little-endian single-ring WKB polygons")
    points = _u32(data, head + 9).astype(np.int64)
    starts = np.zeros(len(wkb) + 1, dtype=np.int64)
    np.cumsum(points, out=starts[1:])
    if (np.diff(offsets) != 13 + 16 * points).any():
        raise ValueError("expected WKB polygons of one ring and nothing after it")
    # Values lie end to end: drop each one's 13 header bytes and the rest are the points'
    # doubles, in order (one mask over the bytes; indexing all 16 of each point's bytes
    # took 1.7 s of 2.9 for 823,543 cells).
    body = np.ones(int(offsets[-1] - offsets[0]), dtype=bool)
    body[((head - offsets[0])[:, None] + np.arange(13)).ravel()] = False
    raw = data[offsets[0]:offsets[-1]][body]
    return raw.view("<f8").reshape(-1, 2).astype(np.float64), starts


def _u32(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Little-endian uint32 values at byte positions ``at`` of ``data``."""
    b = data[at[:, None] + np.arange(4)].astype(np.uint32)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)


# The lon/lat plane's edges: a shape is cut here and its pieces beyond moved back in.
WORLD = (-180.0, -90.0, 180.0, 90.0)


def shapes(cells: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The cells' outlines (scaled by ``scale`` about their centres) as shapely geometries on
    the lon/lat plane, within -180..180 and -90..90: a cell across the antimeridian becomes
    a MultiPolygon of its two sides, and a cell around a pole a polygon reaching the pole
    along every meridian (RFC 7946's rule). Grown outlines (``scale`` > 1) of cells within
    :data:`POLE_CAP_LATITUDE` of a pole are the whole cap of latitudes they reach, because
    lon/lat distorts too much there for scaling to hold their descendants."""
    import shapely

    xy, starts = outlines(cells)
    lng, lat = centres(cells)
    counts = np.diff(starts)
    if not len(cells):
        return np.empty(0, dtype=object)
    cx, cy = np.repeat(lng, counts), np.repeat(lat, counts)
    grown = np.column_stack([cx + scale * (xy[:, 0] - cx), cy + scale * (xy[:, 1] - cy)])
    rings = shapely.linearrings(grown, indices=np.repeat(np.arange(len(cells)), counts))
    out = shapely.polygons(rings)
    across = crossing(xy, starts)
    capped = (np.abs(lat) > POLE_CAP_LATITUDE) & (scale > 1)
    for i in np.flatnonzero(across | capped).tolist():
        ring = xy[starts[i]:starts[i + 1]]
        out[i] = (_cap(ring, lat[i], scale) if capped[i]
                  else _unwrapped_shape(ring, lng[i], lat[i], scale))
    box = shapely.bounds(out)
    outside = ((box[:, 0] < WORLD[0]) | (box[:, 1] < WORLD[1]) | (box[:, 2] > WORLD[2])
               | (box[:, 3] > WORLD[3])) & ~across & ~capped
    for i in np.flatnonzero(outside).tolist():
        out[i] = on_plane(out[i])
    return out


# Grown outlines of cells whose centre lies beyond this latitude are caps (see shapes).
POLE_CAP_LATITUDE = 80.0


def _cap(ring: np.ndarray, centre_lat: float, scale: float) -> Any:
    """Every longitude, from the latitude a grown cell near a pole reaches to the pole."""
    import shapely

    if centre_lat > 0:
        return shapely.box(-180.0, max(-90.0, 90 - scale * (90 - ring[:, 1].min())), 180.0, 90.0)
    return shapely.box(-180.0, -90.0, 180.0, min(90.0, -90 + scale * (ring[:, 1].max() + 90)))


def _unwrapped_shape(ring: np.ndarray, centre_lng: float, centre_lat: float,
                     scale: float) -> Any:
    """A cell's ring that H3 gives with longitudes jumping at ±180, made continuous, scaled
    about its centre and cut back onto the plane; round a pole, closed over it."""
    import shapely

    lon = _continuous(ring)
    if abs(lon[-1] - lon[0]) > 180:
        return (_cap(ring, centre_lat, scale) if scale > 1
                else _round_pole(ring, 90.0 if centre_lat > 0 else -90.0))
    cx = centre_lng + 360 * np.round((lon.mean() - centre_lng) / 360)
    x = cx + scale * (lon - cx)
    y = np.clip(centre_lat + scale * (ring[:, 1] - centre_lat), -90, 90)
    return on_plane(shapely.Polygon(np.column_stack([x, y])))


def on_plane(geom: Any) -> Any:
    """``geom`` (lon/lat, perhaps reaching past ±180 or ±90) cut at the plane's edges, the
    pieces beyond ±180 moved back by 360 degrees."""
    import shapely
    import shapely.affinity

    geom = shapely.make_valid(geom) if not geom.is_valid else geom
    world = shapely.box(*WORLD)
    pieces = [shapely.intersection(shapely.affinity.translate(geom, xoff=k * 360.0), world)
              for k in (-1, 0, 1)]
    polys = [p for piece in pieces for p in shapely.get_parts(piece)
             if p.geom_type == "Polygon" and p.area > 0]
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def plane_polygon(ring: np.ndarray, pole: float | None = None) -> Any:
    """A closed lon/lat ring as a geometry on the plane: longitudes that jump at ±180 (an edge
    between two points on ±180 is the plane's edge, not a jump) are made continuous and the
    shape cut at ±180; a ring that goes round a pole is closed over ``pole`` (by default
    the pole on the side of its mean latitude)."""
    import shapely

    lon = _continuous(ring)
    if abs(lon[-1] - lon[0]) < 180:
        return on_plane(shapely.Polygon(np.column_stack([lon, ring[:, 1]])))
    wrapped = np.column_stack([(lon + 180) % 360 - 180, ring[:, 1]])
    return _round_pole(wrapped, pole if pole is not None
                       else (90.0 if ring[:, 1].mean() > 0 else -90.0))


def _continuous(ring: np.ndarray) -> np.ndarray:
    """The ring's longitudes without jumps of more than 180 degrees between points."""
    lon = ring[:, 0]
    step = np.diff(lon)
    border = (np.abs(lon[:-1]) == 180) & (np.abs(lon[1:]) == 180)
    shift = np.where(border, 0.0, -360 * np.round(step / 360))
    # Whole turns added to the points themselves: sums of steps would leave a closed ring
    # a rounding error open.
    return lon + np.concatenate([[0.0], np.cumsum(shift)])


def _round_pole(ring: np.ndarray, pole: float) -> Any:
    """A closed ring (longitudes in -180..180) that goes once round a pole, as the polygon
    between it and the pole: cut where it crosses ±180, with no seam."""
    import shapely

    lon = ring[:-1, 0]
    jump = int(np.flatnonzero(np.abs(np.diff(np.append(lon, lon[0]))) > 180)[0])
    pts = np.roll(ring[:-1], -(jump + 1), axis=0)  # from just after the jump to just before
    (ax, ay), (bx, by) = pts[-1], pts[0]
    edge = 180.0 if ax > 0 else -180.0
    bx_near = bx + 360 * np.round((ax - bx) / 360)
    cross = ay + (edge - ax) / (bx_near - ax) * (by - ay)
    closing = [(edge, cross), (edge, pole), (-edge, pole), (-edge, cross)]
    return shapely.make_valid(shapely.Polygon(np.vstack([pts, closing])))


@dataclass(frozen=True)
class CellBlock:
    """The cells of one batch, named by their coarse parents: for each parent ``parents[i]``
    the slice ``lo[i]:hi[i]`` of its descendants at ``resolution`` that lie in the scope (in
    id order). A ``whole`` parent lies entirely inside the scope, so its slice is taken from
    all its descendants; the others' cells are ``listed``, slice after slice. Small, so it
    pickles to workers and queues: a batch of a few thousand cells well inside a country is
    a few parent ids. ``also``: cells of coarser resolutions computed with them (a run of
    several resolutions reads each window once for all of them), after the block's own."""

    resolution: int
    parents: np.ndarray = field(compare=False)
    whole: np.ndarray = field(compare=False)
    lo: np.ndarray = field(compare=False)
    hi: np.ndarray = field(compare=False)
    listed: np.ndarray = field(compare=False)
    also: np.ndarray = field(compare=False, default_factory=lambda: np.array([], np.uint64))

    @property
    def count(self) -> int:
        return int((self.hi - self.lo).sum()) + len(self.also)

    def cells(self) -> np.ndarray:
        """The block's cell ids, in order (whole parents expanded in one call)."""
        n = self.hi - self.lo
        out = np.empty(int(n.sum()), dtype=np.uint64)
        at = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        whole = self.whole.astype(bool)
        if whole.any():
            kids = children(self.parents[whole], self.resolution)
            per = children_count(self.parents[whole], self.resolution)
            first = np.concatenate([[0], np.cumsum(per)[:-1]]).astype(np.int64)
            out[_ranges(at[whole], n[whole])] = kids[_ranges(first + self.lo[whole], n[whole])]
        if not whole.all():
            out[_ranges(at[~whole], n[~whole])] = self.listed
        return np.concatenate([out, self.also]) if len(self.also) else out

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """A lon/lat box holding every cell of the block entirely; across the antimeridian
        its east lies past 180 (lon/lat rasters wrap there: see ``RasterInfo.period``)."""
        import shapely

        res = int((int(self.parents[0]) >> 52) & 0xF)
        boxes = shapely.bounds(shapes(self.parents, descendant_scale(res)))
        if len(self.also):  # coarser cells reach beyond their anchors' descendants
            boxes = np.vstack([boxes, _boxes(self.also)])
        west, south, east, north = arc_bounds(boxes)
        return (west, south, east + 360 if east < west else east, north)


def _boxes(cells: np.ndarray) -> np.ndarray:
    """Each cell's (west, south, east, north) on the plane: from its vertices, or from its
    :func:`shapes` across ±180 or round a pole."""
    import shapely

    xy, starts = outlines(cells)
    if crossing(xy, starts).any() or (np.abs(xy[:, 1]) > POLE_CAP_LATITUDE).any():
        return shapely.bounds(shapes(cells))
    lo = starts[:-1]
    return np.column_stack([np.minimum.reduceat(xy[:, 0], lo), np.minimum.reduceat(xy[:, 1], lo),
                            np.maximum.reduceat(xy[:, 0], lo), np.maximum.reduceat(xy[:, 1], lo)])


def arc_bounds(boxes: np.ndarray) -> tuple[float, float, float, float]:
    """The smallest lon/lat box holding ``boxes`` ((n, 4) west, south, east, north, each
    within -180..180) on the sphere: west > east when it is smaller across the
    antimeridian (GeoJSON's and STAC's rule)."""
    boxes = boxes[~np.isnan(boxes).any(axis=1)]
    south, north = float(boxes[:, 1].min()), float(boxes[:, 3].max())
    order = np.argsort(boxes[:, 0])
    west, east = boxes[order, 0], np.maximum.accumulate(boxes[order, 2])
    # Gaps between one box's reach east and the next box's west, and the one across ±180.
    gaps = np.append(west[1:] - east[:-1], west[0] + 360 - east[-1])
    widest = int(np.argmax(gaps))
    if widest == len(gaps) - 1 or gaps[widest] <= 0:
        return float(west[0]), south, float(east[-1]), north
    return float(west[widest + 1]), south, float(east[widest]), north


def split_box(box: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    """A lon/lat box as boxes within -180..180: west > east gives its two sides."""
    west, south, east, north = box
    if west <= east:
        return [box]
    return [(west, south, 180.0, north), (-180.0, south, east, north)]


# The base cells whose centre cell, at every resolution, is a pentagon.
_PENTAGON_BASE = np.zeros(128, dtype=bool)
_PENTAGON_BASE[[4, 14, 24, 38, 49, 58, 63, 72, 83, 97, 107, 117]] = True


def is_pentagon(cells: np.ndarray) -> np.ndarray:
    """Whether each cell (one resolution) is a pentagon: a pentagon base cell and every
    digit 0."""
    if len(cells) == 0:
        return np.zeros(0, dtype=bool)
    res = int((int(cells[0]) >> 52) & 0xF)
    base = (cells >> np.uint64(45)) & np.uint64(0x7F)
    digits = np.uint64(((1 << (3 * res)) - 1) << (45 - 3 * res))
    return _PENTAGON_BASE[base.astype(np.int64)] & ((cells & digits) == 0)


def children_count(parents: np.ndarray, resolution: int) -> np.ndarray:
    """How many descendants at ``resolution`` each parent has (pentagons have fewer)."""
    if len(parents) == 0:
        return np.array([], dtype=np.int64)
    depth = resolution - int((int(parents[0]) >> 52) & 0xF)
    counts = np.full(len(parents), 7 ** depth, dtype=np.int64)
    counts[is_pentagon(parents)] = 1 + 5 * (7 ** depth - 1) // 6
    return counts


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``arange(s, s + n)`` for each start and length, one after another."""
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - lengths),
                                                               lengths)


__all__ = ["DESCENDANT_SCALE", "WORLD", "CellBlock", "arc_bounds", "base_cells", "centres",
           "children", "children_count", "crossing", "descendant_scale", "ids", "is_pentagon",
           "on_plane", "outlines", "parents", "plane_polygon", "plane_rings", "shapes",
           "split_box", "strings"]
