"""What the operations on feature rows (buildings, points, admin areas) share: their rows,
new columns, centroids, cells, and metres.

A feature batch carries its rows (``Batch.rows``: ``feature_id``, attributes, WKB
``geometry`` in lon/lat). Each operation returns the same rows with its columns added.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe import grid
from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch
from h3pipe.sources.vector import CENTROID, GEOMETRY, centroid_xy, geometries, transform

NAME = {"type": "string", "pattern": "^[a-z_][a-z0-9_]{0,62}$"}


def rows_of(batch: Batch) -> pa.Table:
    if batch.rows is None:
        raise OperationError(f"step '{batch.step_id}': operation '{batch.operation}' needs "
                             "feature rows as input (a vector source or an earlier step's "
                             "features)")
    return batch.rows


def add_columns(table: pa.Table, columns: dict[str, Any]) -> pa.Table:
    """``table`` with ``columns`` added, or replaced where the name exists."""
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


def nullable(values: np.ndarray) -> pa.Array:
    return pa.array(values, mask=np.isnan(values), type=pa.float64())


def centroids(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Lon and lat of each feature's centroid (a point's own position): as computed where
    the feature was read, when it was (NaN for an empty geometry)."""

    if all(c in table.column_names for c in CENTROID):
        return tuple(np.asarray(table.column(c).to_numpy(zero_copy_only=False),  # type: ignore[return-value]
                                dtype=np.float64) for c in CENTROID)
    return centroid_xy(geometries(table))


def utm_zones(geoms: np.ndarray, centre: tuple[np.ndarray, np.ndarray] | None = None
              ) -> np.ndarray:
    """The UTM zone (EPSG code) of each geometry's centroid (``centre``, when known):
    each feature is measured in its own zone, so a result never depends on which batch
    the feature was in."""
    lon, lat = centre if centre is not None else centroid_xy(geoms)
    zone = np.floor((np.nan_to_num(lon) + 180) / 6).astype(np.int64) % 60 + 1
    return np.where(np.nan_to_num(lat) >= 0, 32600 + zone, 32700 + zone)


def grown(box: tuple[float, float, float, float], metres: float
          ) -> tuple[float, float, float, float]:
    """A lon/lat box grown by ``metres`` (in degrees at its widest latitude, so it reaches
    far enough everywhere)."""
    x0, y0, x1, y1 = box
    margin = metres / (111_320 * max(0.01, math.cos(math.radians(max(abs(y0), abs(y1))))))
    return (x0 - margin, y0 - margin, x1 + margin, y1 + margin)


def buffer_metres(geoms: np.ndarray, radius: float,
                  centre: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Each lon/lat geometry buffered by ``radius`` metres in its own UTM zone (16
    segments per quarter circle), back in lon/lat; ``centre``: their centroids, if
    known."""
    import shapely

    out = np.empty(len(geoms), dtype=object)
    zones = utm_zones(geoms, centre)
    for code in np.unique(zones):
        crs = f"EPSG:{code}"
        # A few thousand at a time: a buffer's vertices and their arrays (some 2 KB a
        # feature) never grow with the batch.
        rows = np.flatnonzero(zones == code)
        for part in np.array_split(rows, -(-len(rows) // _BUFFER_CHUNK)):
            metric = shapely.buffer(transform(geoms[part], "EPSG:4326", crs), radius,
                                    quad_segs=16)
            out[part] = to_lonlat(metric, crs)
    return out


_BUFFER_CHUNK = 4096


# Geometries up to this wide (metres) come back from a projection through its Taylor
# expansion; wider ones through the projection itself.
_LOCAL_M = 2_000.0
_STEP_M = 50.0  # the finite differences' step


def to_lonlat(metric: np.ndarray, crs: str) -> np.ndarray:
    """Projected geometries back in lon/lat. A buffer has dozens of vertices, each a
    projection call; within ``_LOCAL_M`` of its centre the inverse projection is its
    second-order Taylor expansion about that centre (derivatives by central differences
    over ``_STEP_M``): the third-order rest is below 0.1 mm at 2 km, so the vertices are
    the projection's for any purpose, at a ninth of the calls for a building's buffer."""
    import shapely

    box = shapely.bounds(metric).reshape(-1, 4)
    local = np.isfinite(box).all(axis=1) & (np.maximum(box[:, 2] - box[:, 0],
                                                       box[:, 3] - box[:, 1]) <= _LOCAL_M)
    out = metric.copy()
    if (~local).any():
        out[~local] = transform(metric[~local], crs, "EPSG:4326")
    if local.any():
        out[local] = _taylor(metric[local], box[local], crs)
    return out


def _taylor(metric: np.ndarray, box: np.ndarray, crs: str) -> np.ndarray:
    import shapely
    from pyproj import Transformer

    centre = np.column_stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2])
    s = _STEP_M
    stencil = np.array([(0, 0), (s, 0), (-s, 0), (0, s), (0, -s), (s, s), (s, -s), (-s, s),
                        (-s, -s)])
    pts = centre[:, None, :] + stencil[None, :, :]
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = (np.asarray(a).reshape(len(centre), 9) for a in
                tr.transform(pts[..., 0].ravel(), pts[..., 1].ravel()))
    xy, owner = shapely.get_coordinates(metric, return_index=True)
    counts = np.bincount(owner, minlength=len(metric))  # vertices come geometry by geometry
    dx = xy[:, 0] - np.repeat(centre[:, 0], counts)
    dy = xy[:, 1] - np.repeat(centre[:, 1], counts)

    def expand(f: np.ndarray) -> np.ndarray:
        def per(v: np.ndarray) -> np.ndarray:
            return np.repeat(v, counts)

        fx = (f[:, 1] - f[:, 2]) / (2 * s)
        fy = (f[:, 3] - f[:, 4]) / (2 * s)
        hxx = (f[:, 1] - 2 * f[:, 0] + f[:, 2]) / (2 * s ** 2)
        hyy = (f[:, 3] - 2 * f[:, 0] + f[:, 4]) / (2 * s ** 2)
        fxy = (f[:, 5] - f[:, 6] - f[:, 7] + f[:, 8]) / (4 * s ** 2)
        return per(f[:, 0]) + dx * (per(fx) + per(hxx) * dx + per(fxy) * dy) \
            + dy * (per(fy) + per(hyy) * dy)

    # The buffers are this function's own: their vertices are replaced where they are.
    return shapely.set_coordinates(metric, np.column_stack([expand(lon), expand(lat)]))


def assign_cells(table: pa.Table, resolution: int) -> pa.Array:
    """The H3 cell of each feature's centroid (null for an empty geometry)."""
    return point_cells(*centroids(table), resolution)


def point_cells(xs: np.ndarray, ys: np.ndarray, resolution: int) -> pa.Array:
    """The H3 cell of each lon/lat point as text (null where it is NaN)."""
    ok = np.isfinite(xs) & np.isfinite(ys)
    text = grid.strings(grid.cells_at(xs[ok], ys[ok], resolution))
    if ok.all():
        return text
    where = np.cumsum(ok) - 1
    return text.take(pa.array(np.where(ok, where, 0), mask=~ok))


__all__ = ["GEOMETRY", "add_columns", "assign_cells", "centroids", "nullable", "point_cells",
           "rows_of",
           "buffer_metres", "grown", "utm_zones"]
