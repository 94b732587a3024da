"""A vector source cut into spatial partitions for a run: :class:`Partitions`, made by
:func:`partition` from the features' bounding boxes alone.

A partition is an H3 cell, coarse where features are few and split into its children
where they are many (never finer than the cells the run groups by). A feature belongs to
the partition holding the cell of its centroid at the run's resolution, and every cell
of the scope lies in exactly one partition (they are the scope's own ancestors, or their
descendants), so each feature is in exactly one batch and a cell's features never span
two. Batches are runs of consecutive partitions in the scope's spatial order, each with
about the run's row batch of features.

Planning reads no geometry: only the boxes of the features in the scope's bounds
(a GeoParquet covering column, OGR's or PostGIS's boxes), binned on a fine lon/lat grid.
The counts are estimates (a box's centre stands for the centroid); batches are always
exact, because a worker keeps only the features whose centroid cell is its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from h3pipe import grid
from h3pipe.planning.scope import PARENT_DEPTH, ScopeCells
from h3pipe.sources.vector import VectorInfo, feature_count, iter_boxes

Bounds = tuple[float, float, float, float]
# Bins of the density grid at most (a country at 300 m: an 8-byte count each).
_MAX_BINS = 4_000_000
# A cell's own box, grown 2 %: an edge of a resolution-2 cell (about 180 km) bows out of
# its chord by under 1 km in lon/lat, less than 1 % of the cell's width.
_OWN_SCALE = 1.02
# Partitions are split until they hold at most 1/_PER_BATCH of a batch: a batch of many
# small partitions reads little beyond them (each partition's box is larger than it is).
_PER_BATCH = 8
# Partitions start this many levels above the scope's parents, then split where dense.
_COARSER = 0


@dataclass
class Density:
    """How many features' box centres fall in each bin of a lon/lat grid (flat, row-major
    from ``origin``); the widest and tallest box; and, while there are at most
    ``EXACT_LIMIT``, the cell of each box centre at the run's resolution (``exact``)."""

    origin: tuple[float, float]
    step: float
    shape: tuple[int, int]
    counts: np.ndarray
    extent: tuple[float, float] = (0.0, 0.0)
    met: int = 0  # features whose box meets the area at all (0: none can be in it)
    exact: list[np.ndarray] | None = None
    _pending: list[np.ndarray] = field(default_factory=list)  # bins not yet counted

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def occupied(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lon, lat of the centre of each bin holding features, and how many."""
        flat = np.flatnonzero(self.counts)
        row, col = np.divmod(flat, self.shape[1])
        return (self.origin[0] + (col + 0.5) * self.step,
                self.origin[1] + (row + 0.5) * self.step, self.counts[flat])

    def add(self, boxes: np.ndarray, resolution: int) -> None:
        """Count the features of ``boxes`` (lon/lat, (n, 4))."""
        self.met += len(boxes)
        (minx, miny), step, (ny, nx) = self.origin, self.step, self.shape
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        ok = (cx >= minx) & (cx < minx + nx * step) & (cy >= miny) & (cy < miny + ny * step)
        if not ok.any():
            return
        col = np.minimum(((cx[ok] - minx) / step).astype(np.int64), nx - 1)
        row = np.minimum(((cy[ok] - miny) / step).astype(np.int64), ny - 1)
        self._pending.append(row * nx + col)
        if sum(map(len, self._pending)) >= len(self.counts):
            self.flush()
        w, h = self.extent
        self.extent = (max(w, float(np.max(boxes[ok, 2] - boxes[ok, 0]))),
                       max(h, float(np.max(boxes[ok, 3] - boxes[ok, 1]))))
        if self.exact is not None:
            self.exact.append(grid.cells_at(cx[ok], cy[ok], resolution))
            if sum(map(len, self.exact)) > EXACT_LIMIT:
                self.exact = None

    def flush(self) -> None:
        """Count the bins gathered so far: one pass over the grid per grid's worth of
        features, not one per piece read."""
        if self._pending:
            self.counts += np.bincount(np.concatenate(self._pending),
                                       minlength=len(self.counts))
            self._pending = []


# Up to this many features, planning places each by its box centre's cell (exact for
# points); beyond, by bins (an estimate; a worker still keeps exactly its own features).
EXACT_LIMIT = 2_000_000



def density(info: VectorInfo, bounds: Bounds, step: float, resolution: int) -> Density:
    """The features of ``info`` within ``bounds``, binned by their box centres."""
    minx, miny, maxx, maxy = bounds
    step = max(step, math.sqrt((maxx - minx) * (maxy - miny) / _MAX_BINS))
    nx = max(1, math.ceil((maxx - minx) / step))
    ny = max(1, math.ceil((maxy - miny) / step))
    many = (feature_count(info) or 0) > EXACT_LIMIT  # binned from the start
    found = Density((minx, miny), step, (ny, nx), np.zeros(nx * ny, dtype=np.int64),
                    exact=None if many else [])
    for boxes in iter_boxes(info, bounds):
        found.add(boxes, resolution)
    found.flush()
    return found


@dataclass(frozen=True)
class Partitions:
    """A source's partitions over a run's scope, in batch order: batch ``k`` (from 0) is
    ``cells[starts[k]:starts[k + 1]]``, read within ``boxes[k]``, with about
    ``estimates[k]`` features; ``extent``: the widest feature's box (degrees), how far a
    feature reaches from its centroid's partition."""

    source_id: str
    cells: np.ndarray
    starts: np.ndarray
    boxes: np.ndarray
    cell_boxes: np.ndarray  # each partition's own box (n, 4), beside ``cells``
    estimates: np.ndarray
    extent: tuple[float, float]
    counted: bool  # estimates counted feature by feature (by box centre), not binned

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def features(self) -> int:
        """Estimated features in the scope."""
        return int(self.estimates.sum())

    def batch(self, k: int) -> np.ndarray:
        return self.cells[self.starts[k]:self.starts[k + 1]]

    def batch_boxes(self, k: int) -> np.ndarray:
        return self.cell_boxes[self.starts[k]:self.starts[k + 1]]

    def box(self, k: int) -> Bounds:
        return tuple(self.boxes[k].tolist())  # type: ignore[return-value]

    def reach(self, k: int) -> Bounds:
        """What batch ``k``'s features can cover: its box grown by the widest feature."""
        x0, y0, x1, y1 = self.box(k)
        w, h = self.extent
        return (x0 - w, y0 - h, x1 + w, y1 + h)


def partition(info: VectorInfo, scope: ScopeCells, target: Callable[[int], int],
              finest: int) -> Partitions:
    """``info``'s features over ``scope`` in partitions of cells no finer than ``finest``,
    batched by ``target(features)`` features."""
    import h3

    step = h3.average_hexagon_edge_length(finest, "km") / 111.0 / 4
    found = density(info, scope.bounds, step, scope.resolution)
    counter = _Counter(found, scope)
    if not found.met:  # nothing there: no batch
        empty = np.zeros(0, dtype=np.uint64)
        return Partitions(info.source_id, empty, np.zeros(1, np.int64), np.zeros((0, 4)),
                          np.zeros((0, 4)), np.zeros(0, np.int64), found.extent, True)
    size = max(1, target(counter.total))
    cells = _split(_start(scope, finest), counter, max(1, size // _PER_BATCH), finest)
    own = _boxes(cells, scope.bounds, scope.resolution)
    counts = counter.counts(cells)
    starts = _cut(counts, size)
    boxes = np.array([[*own[a:b, :2].min(axis=0), *own[a:b, 2:].max(axis=0)]
                      for a, b in zip(starts[:-1], starts[1:], strict=True)]).reshape(-1, 4)
    estimates = np.add.reduceat(counts, starts[:-1]) if len(cells) else np.zeros(0, np.int64)
    return Partitions(info.source_id, cells, starts, boxes, own, estimates, found.extent,
                      found.exact is not None)


class _Counter:
    """Estimated features per cell (of the run's resolution or coarser): from each box
    centre's cell in the scope, or from the bins."""

    def __init__(self, found: Density, scope: ScopeCells) -> None:
        if found.exact is not None:
            cells, n = np.unique(np.concatenate([np.zeros(0, np.uint64), *found.exact]),
                                 return_counts=True)
        else:  # each bin as the cell of its centre
            x, y, n = found.occupied()
            cells = grid.cells_at(x, y, scope.resolution)
        inside = scope.contains(cells)  # only the scope's cells count
        self.cells, self.n = cells[inside], n[inside]
        self.total = int(self.n.sum())
        self._by_res: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def counts(self, cells: np.ndarray) -> np.ndarray:
        out = np.zeros(len(cells), dtype=np.int64)
        res = grid.resolutions(cells)
        for r in np.unique(res).tolist():
            keys, sums = self._at(r)
            mine = res == r
            idx = np.clip(np.searchsorted(keys, cells[mine]), 0, max(len(keys) - 1, 0))
            hit = keys[idx] == cells[mine] if len(keys) else np.zeros(mine.sum(), bool)
            out[mine] = np.where(hit, sums[idx] if len(keys) else 0, 0)
        return out

    def _at(self, res: int) -> tuple[np.ndarray, np.ndarray]:
        if res not in self._by_res:
            parents = grid.parents(self.cells, res)
            keys, inverse = np.unique(parents, return_inverse=True)
            self._by_res[res] = keys, np.bincount(inverse, weights=self.n,
                                                  minlength=len(keys)).astype(np.int64)
        return self._by_res[res]


def _start(scope: ScopeCells, finest: int) -> np.ndarray:
    """The coarsest partitions: ancestors of the scope's parents, in the scope's order."""
    parent_res = max(0, scope.resolution - PARENT_DEPTH)
    res = max(0, min(parent_res, finest) - _COARSER)
    up = grid.parents(scope.parents, res)
    _, first = np.unique(up, return_index=True)
    return up[np.sort(first)]


def _split(cells: np.ndarray, counter: _Counter, size: int, finest: int) -> np.ndarray:
    """Partitions holding more than ``size`` features replaced by their children, level
    by level down to ``finest``; the order kept (children in id order, in their parent's
    place)."""
    res = int(grid.resolutions(cells[:1])[0]) if len(cells) else finest
    while res < finest:
        big = (counter.counts(cells) > size) & (grid.resolutions(cells) == res)
        if not big.any():
            break
        kids = grid.children(cells[big], res + 1)
        per = grid.children_count(cells[big], res + 1)
        cells = _replace(cells, big, kids, per)
        res += 1
    return cells


def _replace(cells: np.ndarray, big: np.ndarray, kids: np.ndarray, per: np.ndarray
             ) -> np.ndarray:
    """``cells`` with each ``big`` one replaced by its ``per`` children from ``kids``."""
    lengths = np.where(big, 0, 1)
    lengths[big] = per
    out = np.empty(int(lengths.sum()), dtype=np.uint64)
    at = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out[at[~big]] = cells[~big]
    kid_at = np.repeat(at[big], per) + (np.arange(len(kids))
                                        - np.repeat(np.cumsum(per) - per, per))
    out[kid_at] = kids
    return out


def _cut(counts: np.ndarray, size: int) -> np.ndarray:
    """Batch starts over consecutive partitions: a batch closes once it holds ``size``
    features; the rest (if any) make the last one. At least one batch."""
    starts = [0]
    held = 0
    for i, n in enumerate(counts.tolist()):
        held += n
        if held >= size and i + 1 < len(counts):
            starts.append(i + 1)
            held = 0
    starts.append(len(counts))
    return np.array(starts, dtype=np.int64)


def _boxes(cells: np.ndarray, bounds: Bounds, resolution: int) -> np.ndarray:
    """Each partition's box (n, 4), within ``bounds``: its :func:`reach`'s."""
    import shapely

    out = shapely.bounds(reach(cells, resolution)).reshape(-1, 4)
    out[:, 0] = np.maximum(out[:, 0], bounds[0])
    out[:, 1] = np.maximum(out[:, 1], bounds[1])
    out[:, 2] = np.minimum(out[:, 2], bounds[2])
    out[:, 3] = np.minimum(out[:, 3], bounds[3])
    return out


def reach(cells: np.ndarray, resolution: int) -> np.ndarray:
    """Where the centroids of each partition's features can lie, as shapely polygons: its
    outline grown to hold its descendants' (a cell of the run's ``resolution`` holds its
    features itself: grown a little for the arcs between its vertices, which H3 draws
    straight); near the poles, and for the coarsest cells, the box of that."""
    import shapely

    out = np.empty(len(cells), dtype=object)
    res = grid.resolutions(cells)
    lat = grid.centres(cells)[1]
    for r in np.unique(res).tolist():
        mine = res == r
        polar = np.abs(lat[mine]) > grid.OUTLINE_SAFE_LATITUDE
        own = r == resolution and r >= 2
        grown = grid.shapes(cells[mine], grid.descendant_box_scale(r))
        if own:
            grown[~polar] = grid.shapes(cells[mine][~polar], _OWN_SCALE)
        if r < 2 or polar.any():
            boxy = polar | (r < 2)
            grown[boxy] = shapely.box(*shapely.bounds(grown[boxy]).T)
        out[mine] = grown
    return out


__all__ = ["Density", "Partitions", "density", "partition", "reach"]
