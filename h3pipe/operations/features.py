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

from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch
from h3pipe.operations.vector import GEOMETRY, geometries

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
    """Lon and lat of each feature's centroid (a point's own position)."""
    import shapely

    c = shapely.centroid(geometries(table))
    return shapely.get_x(c), shapely.get_y(c)


def utm_crs(lon: float, lat: float) -> str:
    """The UTM zone around a point: metres with under 0.1% scale error near it."""
    zone = int(math.floor((lon + 180) / 6)) % 60 + 1
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def to_metric(geoms: np.ndarray) -> tuple[np.ndarray, Any]:
    """Geometries in the UTM zone of their centre, and the transformer back to lon/lat."""
    import shapely
    from pyproj import Transformer

    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    crs = utm_crs((x0 + x1) / 2, (y0 + y1) / 2)
    fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    back = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    metric = shapely.transform(geoms, lambda xy: np.column_stack(fwd.transform(xy[:, 0],
                                                                             xy[:, 1])))
    return metric, back


def assign_cells(table: pa.Table, resolution: int) -> pa.Array:
    """The H3 cell of each feature's centroid (null for an empty geometry)."""
    import h3

    xs, ys = centroids(table)
    return pa.array([h3.latlng_to_cell(y, x, resolution) if math.isfinite(x) else None
                     for x, y in zip(xs.tolist(), ys.tolist(), strict=True)], pa.string())


__all__ = ["GEOMETRY", "add_columns", "assign_cells", "centroids", "nullable", "rows_of",
           "to_metric"]
