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


def children(parents: np.ndarray, resolution: int) -> np.ndarray:
    """Every descendant at ``resolution`` of each parent, parent by parent, each parent's
    sorted by id."""
    if len(parents) == 0:
        return np.array([], dtype=np.uint64)
    lists = _h3ronpy().change_resolution_list(parents, resolution)
    values = pa.array(lists).flatten()
    return np.asarray(values).astype(np.uint64)


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


def scaled_outlines(cells: np.ndarray, scale: float) -> np.ndarray:
    """The cells' outlines scaled by ``scale`` about their centres, as shapely polygons."""
    import shapely

    xy, starts = outlines(cells)
    lng, lat = centres(cells)
    counts = np.diff(starts)
    cx, cy = np.repeat(lng, counts), np.repeat(lat, counts)
    grown = np.column_stack([cx + scale * (xy[:, 0] - cx), cy + scale * (xy[:, 1] - cy)])
    rings = shapely.linearrings(grown, indices=np.repeat(np.arange(len(cells)), counts))
    return shapely.polygons(rings)


def cells_covering(geometry: Any, resolution: int) -> np.ndarray:
    """Cells at ``resolution`` whose outlines intersect ``geometry`` (a superset is fine:
    callers test what they keep)."""
    from h3ronpy import ContainmentMode
    from h3ronpy.vector import geometry_to_cells

    found = geometry_to_cells(geometry, resolution,
                              containment_mode=ContainmentMode.IntersectsBoundary)
    return np.unique(np.asarray(pa.array(found)).astype(np.uint64))


@dataclass(frozen=True)
class CellBlock:
    """The cells of one batch, named by their coarse parents: for each parent ``parents[i]``
    the slice ``lo[i]:hi[i]`` of its descendants at ``resolution`` that lie in the scope (in
    id order). A ``whole`` parent lies entirely inside the scope, so its slice is taken from
    all its descendants; the others' cells are ``listed``, slice after slice. Small, so it
    pickles to workers and queues: a batch of a few thousand cells well inside a country is
    a few parent ids."""

    resolution: int
    parents: np.ndarray = field(compare=False)
    whole: np.ndarray = field(compare=False)
    lo: np.ndarray = field(compare=False)
    hi: np.ndarray = field(compare=False)
    listed: np.ndarray = field(compare=False)

    @property
    def count(self) -> int:
        return int((self.hi - self.lo).sum())

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
        return out

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """A lon/lat box holding every cell of the block entirely."""
        import shapely

        res = int((int(self.parents[0]) >> 52) & 0xF)
        box = shapely.total_bounds(scaled_outlines(self.parents, descendant_scale(res)))
        return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


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


__all__ = ["DESCENDANT_SCALE", "CellBlock", "cells_covering", "centres", "children",
           "children_count", "descendant_scale", "ids", "is_pentagon", "outlines", "parents",
           "scaled_outlines", "strings"]
