"""GeoParquet read a row group at a time, only where an area is: :class:`GeoParquet`.

A national building file holds tens of millions of rows; nothing here reads it whole.
Row groups are pruned by their statistics on the GeoParquet 1.1 ``bbox`` covering column
when the file has one (Overture, and files written sorted in space, prune to a few row
groups per area); rows are then kept by that column before a single geometry is parsed.
A file without the covering is read row group by row group, each feature's box taken
from its geometry: bounded memory, but every row group is read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe.errors import SourceError

Bounds = tuple[float, float, float, float]
_SIDES = ("xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class Chunk:
    """Rows of one row group that meet an area: their row numbers in the file, their
    boxes (in the file's CRS, shape (n, 4)) and the columns asked for."""

    rows: np.ndarray
    boxes: np.ndarray
    table: pa.Table


class GeoParquet:
    """One GeoParquet file: its geometry column, CRS, covering and row groups."""

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.file = pq.ParquetFile(path)
        schema = self.file.schema_arrow
        geo = json.loads((schema.metadata or {}).get(b"geo", b"{}"))
        self.geometry = geo.get("primary_column", "geometry")
        column = geo.get("columns", {}).get(self.geometry, {})
        crs = column.get("crs")
        self.crs: str | None = json.dumps(crs) if isinstance(crs, dict) else crs
        self.names = [n for n in schema.names if n != self.geometry]
        self.covering = _covering(column, schema)

    @property
    def rows(self) -> int:
        return int(self.file.metadata.num_rows)

    @cached_property
    def offsets(self) -> np.ndarray:
        """The file's row number of each row group's first row (and the total, last)."""
        meta = self.file.metadata
        counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    @cached_property
    def extents(self) -> list[Bounds | None]:
        """Each row group's extent from its covering statistics (None: unknown)."""
        return [self._stats(i) for i in range(self.file.metadata.num_row_groups)]

    def groups(self, bounds: Bounds | None, within: np.ndarray | None = None) -> list[int]:
        """The row groups that may hold a feature meeting ``bounds`` and, if given, one of
        the boxes ``within`` (n, 4); all of them when the file has no statistics."""
        n = self.file.metadata.num_row_groups
        if bounds is None or self.covering is None:
            return list(range(n))
        extents = self.extents
        keep = [i for i in range(n) if _may_meet(extents[i], bounds)]
        if within is None or not len(within):
            return keep
        return [i for i in keep if _near(within, extents[i])]

    def _stats(self, group: int) -> Bounds | None:
        """The row group's extent from its covering statistics (None when missing)."""
        assert self.covering is not None
        meta = self.file.metadata.row_group(group)
        found: dict[str, float] = {}
        for j in range(meta.num_columns):
            col = meta.column(j)
            side = self.covering.get(col.path_in_schema)
            stats = col.statistics
            if side is None or stats is None or not stats.has_min_max:
                continue
            found[side] = stats.min if side in ("xmin", "ymin") else stats.max
        if len(found) < 4:
            return None
        return (found["xmin"], found["ymin"], found["xmax"], found["ymax"])

    def chunks(self, bounds: Bounds | None, columns: list[str],
               within: np.ndarray | None = None) -> Iterator[Chunk]:
        """Row group by row group, the rows whose box meets ``bounds`` (in the file's CRS;
        None: every row) with ``columns``; an empty ``columns`` reads only the boxes.
        ``within``: boxes the rows must be near, to skip row groups by (not rows)."""
        for table, boxes, group in self._tables(self.groups(bounds, within), columns):
            keep = np.ones(len(boxes), dtype=bool) if bounds is None else _meets(boxes, bounds)
            if not keep.any():
                continue
            rows = self.offsets[group] + np.flatnonzero(keep)
            table = table.select(columns)
            if not keep.all():
                table = table.filter(pa.array(keep))
            yield Chunk(rows, boxes[keep], table)

    def _tables(self, groups: list[int], columns: list[str]
                ) -> Iterator[tuple[pa.Table, np.ndarray, int]]:
        """Each group's table and boxes, in order. A pass over boxes alone (planning over
        a whole file) reads the next groups on a second thread meanwhile (pyarrow lets go
        of the GIL), a few ahead at most."""
        if columns or len(groups) < 2:
            for group in groups:
                yield (*self._read(group, columns), group)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="h3pipe-boxes") as pool:
            ahead: deque[Any] = deque()
            todo = iter(groups)
            for group in todo:
                ahead.append((group, pool.submit(self._read, group, columns)))
                if len(ahead) >= _AHEAD:
                    break
            while ahead:
                group, future = ahead.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append((nxt, pool.submit(self._read, nxt, columns)))
                yield (*future.result(), group)

    def _read(self, group: int, columns: list[str]) -> tuple[pa.Table, np.ndarray]:
        """A row group's ``columns`` and its rows' boxes. The last few read are kept:
        consecutive batches of a worker read neighbouring areas, often the same groups."""
        wanted = list(dict.fromkeys([*columns, *self._box_columns()]))
        if not columns:  # a pass over boxes alone (planning): read once, not kept
            table = self.file.read_row_group(group, columns=wanted)
            return table, self._boxes(table, group)
        key = (self.path, self._stamp, group, tuple(wanted))
        with _RECENT_LOCK:
            found = _RECENT.get(key)
        if found is None:
            table = self.file.read_row_group(group, columns=wanted)
            found = (table, self._boxes(table, group))
            with _RECENT_LOCK:  # worker threads share what was read (tables are immutable)
                _RECENT[key] = found
                while len(_RECENT) > _KEEP:
                    _RECENT.pop(next(iter(_RECENT)))
        return found

    @cached_property
    def _stamp(self) -> int:
        import os

        return os.stat(self.path).st_mtime_ns

    def _box_columns(self) -> list[str]:
        if self.covering is not None:
            return [next(iter(self.covering)).split(".")[0]]
        return [self.geometry]

    def _boxes(self, table: pa.Table, group: int) -> np.ndarray:
        """Every feature's box in a row group: from the covering, else from geometries."""
        if self.covering is not None:
            # pyarrow.compute (0.1 s) when a GeoParquet is read, not with every command.
            import pyarrow.compute as pc

            top = self._box_columns()[0]
            struct = table.column(top)
            by_side = {side: path.split(".", 1)[1] for path, side in self.covering.items()}
            return np.column_stack([
                np.asarray(pc.struct_field(struct, by_side[s])
                           .to_numpy(zero_copy_only=False), dtype=np.float64)
                for s in _SIDES])
        import shapely

        wkb = table.column(self.geometry).to_numpy(zero_copy_only=False)
        return shapely.bounds(from_wkb(wkb, int(self.offsets[group]), group))


def from_wkb(wkb: np.ndarray, first_row: int, group: int) -> np.ndarray:
    """Shapely geometries of a row group's WKB values (its first row ``first_row`` of the
    file); a value that is not WKB is a SourceError naming its row and row group."""
    import shapely
    from shapely.errors import GEOSException

    try:
        return shapely.from_wkb(wkb)
    except GEOSException as exc:
        parsed = shapely.from_wkb(wkb, on_invalid="ignore")
        bad = next(i for i, (v, g) in enumerate(zip(wkb, parsed, strict=True))
                   if g is None and v is not None)
        raise SourceError(f"row {first_row + bad} (row group {group}) holds no valid WKB "
                          f"geometry ({' '.join(str(exc).split())})",
                          hint="write the file again from its origin, or drop that row"
                          ) from None


def forget() -> None:
    """Let go of the row groups kept (a worker done reading sources for now)."""
    with _RECENT_LOCK:
        _RECENT.clear()


def open_geoparquet(path: str) -> GeoParquet:
    """The file, its footer parsed once per thread while it is unchanged (a worker reads
    the same national file for every batch). Per thread, not per process: one
    ``ParquetFile`` read by two worker threads at once fails in pyarrow's read cache
    ('ReadRangeCache did not find matching cache entry') or crashes the process."""
    import os

    key = (path, os.stat(path).st_mtime_ns)
    opened: dict[tuple[str, int], GeoParquet] = getattr(_OPEN, "files", {})
    if key not in opened:
        opened = _OPEN.files = {key: GeoParquet(path)}
    return opened[key]


_OPEN = threading.local()
# Row groups read ahead by a pass over boxes (a few MB each).
_AHEAD = 4
# Row groups kept by _read (per process): about 64 MB of a national file in 64k-row groups
# (4 were 30 % slower over 4 M buildings); let go of once a worker moves to a later stage.
_KEEP = 8
_RECENT: dict[tuple[Any, ...], tuple[pa.Table, np.ndarray]] = {}
_RECENT_LOCK = threading.Lock()


def _covering(column: dict[str, Any], schema: pa.Schema) -> dict[str, str] | None:
    """Column path ('bbox.xmin') -> side, from GeoParquet 1.1's ``covering.bbox``; None
    when the file declares none (or one this reader does not follow: one struct)."""
    bbox = (column.get("covering") or {}).get("bbox")
    if not isinstance(bbox, dict) or set(bbox) < set(_SIDES):
        return None
    paths = {side: bbox[side] for side in _SIDES}
    if not all(isinstance(p, list) and len(p) == 2 for p in paths.values()):
        return None
    tops = {p[0] for p in paths.values()}
    if len(tops) != 1 or next(iter(tops)) not in schema.names:
        return None
    return {".".join(p): side for side, p in paths.items()}


def _may_meet(extent: Bounds | None, bounds: Bounds) -> bool:
    if extent is None:
        return True
    x0, y0, x1, y1 = extent
    return not (x0 > bounds[2] or x1 < bounds[0] or y0 > bounds[3] or y1 < bounds[1])


def _near(boxes: np.ndarray, extent: Bounds | None) -> bool:
    return extent is None or bool(_meets(boxes, extent).any())


def _meets(boxes: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Which boxes (n, 4) meet ``bounds``; a box of NaN (an empty geometry) meets none."""
    minx, miny, maxx, maxy = bounds
    return ((boxes[:, 0] <= maxx) & (boxes[:, 2] >= minx) & (boxes[:, 1] <= maxy)
            & (boxes[:, 3] >= miny))


__all__ = ["Chunk", "GeoParquet", "forget", "open_geoparquet"]
