"""What the operations on feature rows (buildings, points, admin areas) share: their rows,
new columns, centroids, cells, and metres.

A feature batch carries its rows (``Batch.rows``: ``feature_id``, attributes, WKB
``geometry`` in lon/lat). Each operation returns the same rows with its columns added.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

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


def utm_zones(geoms: np.ndarray) -> np.ndarray:
    """The UTM zone (EPSG code) of each geometry's centroid: each feature is measured in
    its own zone, so a result never depends on which batch the feature was in."""
    import shapely

    c = shapely.centroid(geoms)
    lon, lat = shapely.get_x(c), shapely.get_y(c)
    zone = np.floor((np.nan_to_num(lon) + 180) / 6).astype(np.int64) % 60 + 1
    return np.where(np.nan_to_num(lat) >= 0, 32600 + zone, 32700 + zone)


def buffer_metres(geoms: np.ndarray, radius: float) -> np.ndarray:
    """Each lon/lat geometry buffered by ``radius`` metres in its own UTM zone (16
    segments per quarter circle), back in lon/lat."""
    import shapely

    out = np.empty(len(geoms), dtype=object)
    zones = utm_zones(geoms)
    for code in np.unique(zones):
        sel = zones == code
        crs = f"EPSG:{code}"
        metric = shapely.buffer(transform(geoms[sel], "EPSG:4326", crs), radius, quad_segs=16)
        out[sel] = transform(metric, crs, "EPSG:4326")
    return out


def assign_cells(table: pa.Table, resolution: int) -> pa.Array:
    """The H3 cell of each feature's centroid (null for an empty geometry)."""
    return point_cells(*centroids(table), resolution)


def point_cells(xs: np.ndarray, ys: np.ndarray, resolution: int) -> pa.Array:
    """The H3 cell of each lon/lat point as text (null where it is NaN)."""
    from h3pipe import grid

    ok = np.isfinite(xs) & np.isfinite(ys)
    text = grid.strings(grid.cells_at(xs[ok], ys[ok], resolution))
    if ok.all():
        return text
    where = np.cumsum(ok) - 1
    return text.take(pa.array(np.where(ok, where, 0), mask=~ok))


__all__ = ["GEOMETRY", "add_columns", "assign_cells", "centroids", "nullable", "point_cells",
           "rows_of",
           "buffer_metres", "utm_zones"]
