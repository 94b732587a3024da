"""Operations on feature rows (buildings, points, admin areas): ``sample``,
``spatial_join``, ``h3_assign``; shared geometry helpers.

A feature batch carries its rows (``Batch.rows``: ``feature_id``, attributes, WKB
``geometry`` in lon/lat). Each operation returns the same rows with its columns added.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch, Operation
from h3pipe.operations.vector import GEOMETRY, geometries, read_features

_NAME = {"type": "string", "pattern": "^[a-z_][a-z0-9_]{0,62}$"}


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


class Sample(Operation):
    name = "sample"
    summary = ("The raster value at each feature's centroid (a point's own position); "
               "nodata gives null.")
    example = """\
- id: depth_at_building
  operation: sample
  input: buildings
  source: flood-depth-100y
  output: intermediate
  params:
    name: depth_m
"""
    params_schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {**_NAME, "default": "value",
                     "description": "Name of the new column (default 'value')."},
        },
    }
    input_kinds = frozenset({"features"})

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return [params.get("name", "value")]

    def run_batch(self, batch: Batch) -> pa.Table:
        from h3pipe.operations.raster import MosaicReader

        table = rows_of(batch)
        info = batch.raster
        if info is None:
            raise OperationError(f"step '{batch.step_id}': sample needs a raster source")
        xs, ys = centroids(table)
        if not info.crs_is_wgs84 and len(xs):
            from pyproj import CRS, Transformer

            tr = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_wkt(info.crs_wkt),
                                      always_xy=True)
            xs, ys = (np.asarray(a) for a in tr.transform(xs, ys))
        out = np.full(len(xs), np.nan)
        with MosaicReader(info) as reader:
            for idx in _point_groups(xs, ys):
                gx, gy = xs[idx], ys[idx]
                values, (xmin, ymin, xmax, ymax) = reader.read(
                    (gx.min(), gy.min(), gx.max(), gy.max()))
                nrows, ncols = values.shape
                col = np.floor((gx - xmin) / ((xmax - xmin) / ncols)).astype(np.int64)
                row = np.floor((ymax - gy) / ((ymax - ymin) / nrows)).astype(np.int64)
                inside = (col >= 0) & (col < ncols) & (row >= 0) & (row < nrows)
                picked = np.full(len(idx), np.nan)
                picked[inside] = values[row[inside], col[inside]]
                out[idx] = picked
        return add_columns(table, {self.output_columns(batch.params)[0]: nullable(out)})


def _point_groups(xs: np.ndarray, ys: np.ndarray, size: float = 0.25) -> list[np.ndarray]:
    """Indices of points grouped by ``size``-degree squares, so each group reads one window."""
    ok = np.isfinite(xs) & np.isfinite(ys)
    keys = np.floor(xs[ok] / size) * 100000 + np.floor(ys[ok] / size)
    idx = np.flatnonzero(ok)
    return [idx[keys == k] for k in np.unique(keys)]


class SpatialJoin(Operation):
    name = "spatial_join"
    summary = ("With a raster source: its statistics within radius_m of each feature. With a "
               "vector source: the attributes of the feature that intersects, contains, or is "
               "nearest (within max_distance_m) to each feature.")
    example = """\
- id: population_nearby
  operation: spatial_join
  input: $depth_at_building
  source: worldpop
  output: intermediate
  params:
    radius_m: 100
    stats: [sum]
    prefix: pop_
"""
    params_schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "radius_m": {"type": "number", "exclusiveMinimum": 0,
                         "description": "Raster source: the distance around each feature "
                         "(its outline, buffered in the local UTM zone)."},
            "stats": {"type": "array", "minItems": 1, "uniqueItems": True,
                      "items": {"type": "string"},
                      "description": "Raster source: statistics, as for zonal_stats."},
            "predicate": {"enum": ["intersects", "within", "nearest"],
                          "description": "Vector source: 'intersects', 'within' (the feature "
                          "lies within the joined one) or 'nearest'."},
            "max_distance_m": {"type": "number", "exclusiveMinimum": 0,
                               "description": "Vector source, nearest: farthest match."},
            "attributes": {"type": "array", "items": {"type": "string"}, "uniqueItems": True,
                           "description": "Vector source: attributes of the match to copy "
                           "(default: all the source names)."},
            "prefix": {"type": "string", "pattern": "^[a-z0-9_]{0,30}$", "default": "",
                       "description": "Put before every new column name."},
        },
    }
    input_kinds = frozenset({"features"})
    source_kinds = ("raster", "stac", "vector")

    def check_params(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        from h3pipe.operations.zonal_stats import stat_problems

        raster = "radius_m" in params or "stats" in params
        vector = "predicate" in params
        if raster and vector:
            return [((), "give either radius_m and stats (raster source) or predicate "
                     "(vector source), not both")]
        if not raster and not vector:
            return [((), "give radius_m and stats (raster source) or predicate (vector "
                     "source)")]
        if raster:
            missing = [k for k in ("radius_m", "stats") if k not in params]
            if missing:
                return [((), f"a raster join needs {' and '.join(missing)}")]
            return stat_problems(params["stats"])
        if params["predicate"] == "nearest" and "max_distance_m" not in params:
            return [(("predicate",), "'nearest' needs max_distance_m")]
        return []

    def check_source(self, params: dict[str, Any], kind: str) -> str | None:
        if kind == "vector" and "predicate" not in params:
            return "a vector source is joined by 'predicate'; 'radius_m'/'stats' are for rasters"
        if kind != "vector" and "predicate" in params:
            return "'predicate' joins a vector source; a raster is joined by radius_m and stats"
        return None

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        prefix = params.get("prefix", "")
        if "predicate" not in params:
            return [prefix + s for s in params.get("stats", [])]
        extra = "distance_m" if params["predicate"] == "nearest" else "matches"
        return [prefix + a for a in params.get("attributes") or []] + [prefix + extra]

    def run_batch(self, batch: Batch) -> pa.Table:
        table = rows_of(batch)
        if batch.vector is not None:
            return self._join_vector(batch, table)
        if batch.raster is None:
            raise OperationError(f"step '{batch.step_id}': spatial_join needs a source")
        import shapely

        from h3pipe.operations.zonal_stats import stats_of_geometries

        geoms = geometries(table)
        if len(geoms):
            metric, back = to_metric(geoms)
            buffered = shapely.buffer(metric, batch.params["radius_m"], quad_segs=16)
            geoms = shapely.transform(buffered, lambda xy: np.column_stack(
                back.transform(xy[:, 0], xy[:, 1])))
        stats = list(batch.params["stats"])
        columns = stats_of_geometries(batch, batch.raster, geoms, stats)
        prefix = batch.params.get("prefix", "")
        return add_columns(table, {prefix + s: columns[s] for s in stats})

    def _join_vector(self, batch: Batch, table: pa.Table) -> pa.Table:
        import shapely

        assert batch.vector is not None
        params = batch.params
        prefix = params.get("prefix", "")
        names = params.get("attributes") or list(batch.vector.attributes)
        missing = [a for a in names if a not in batch.vector.attributes]
        if missing:
            raise OperationError(f"step '{batch.step_id}': source '{batch.vector.source_id}' "
                                 f"does not name attribute(s) {', '.join(missing)}",
                                 hint="add them to the source's 'attributes'")
        geoms = geometries(table)
        n = len(geoms)
        match = np.full(n, -1, dtype=np.int64)
        extra = np.zeros(n)
        other = pa.table({})
        if n:
            x0, y0, x1, y1 = shapely.total_bounds(geoms)
            margin = 0.0
            if params["predicate"] == "nearest":
                margin = params["max_distance_m"] / (111_320 * max(
                    0.01, math.cos(math.radians(max(abs(y0), abs(y1))))))
            other = read_features(batch.vector, (x0 - margin, y0 - margin,
                                                 x1 + margin, y1 + margin))
            targets = geometries(other)
            if params["predicate"] == "nearest":
                metric, _ = to_metric(np.concatenate([geoms, targets]))
                tree = shapely.STRtree(metric[n:])
                (src, dst), dist = tree.query_nearest(metric[:n],
                                                      max_distance=params["max_distance_m"],
                                                      return_distance=True, all_matches=False)
                match[src] = dst
                extra = np.full(n, np.nan)
                extra[src] = dist
            else:
                tree = shapely.STRtree(targets)
                src, dst = tree.query(geoms, predicate=params["predicate"])
                order = np.lexsort((dst, src))  # first match in the source's order
                src, dst = src[order], dst[order]
                first = np.unique(src, return_index=True)[1]
                match[src[first]] = dst[first]
                np.add.at(extra, src, 1)
        cols: dict[str, Any] = {}
        hit = match >= 0
        for a in names:
            col = other.column(a) if other.num_rows else pa.nulls(0)
            taken = col.take(pa.array(np.where(hit, match, 0))) if other.num_rows \
                else pa.nulls(n)
            cols[prefix + a] = pa.array([v if h else None for v, h in
                                         zip(taken.to_pylist(), hit, strict=True)],
                                        type=taken.type if other.num_rows else pa.null())
        if params["predicate"] == "nearest":
            cols[prefix + "distance_m"] = nullable(extra)
        else:
            cols[prefix + "matches"] = pa.array(extra.astype(np.int64))
        return add_columns(table, cols)


class H3Assign(Operation):
    name = "h3_assign"
    summary = "Each feature's H3 cell, by its centroid, at the run's resolution or a given one."
    example = """\
- id: building_cells
  operation: h3_assign
  input: $depth_at_building
  output: intermediate
  params:
    resolution: 7
"""
    params_schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "resolution": {"type": "integer", "minimum": 0, "maximum": 15,
                           "description": "Default: the run's resolution."},
        },
    }
    input_kinds = frozenset({"features"})
    requires_source = False

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return ["h3_index"]

    def run_batch(self, batch: Batch) -> pa.Table:
        table = rows_of(batch)
        resolution = batch.params.get("resolution", batch.resolution)
        return add_columns(table, {"h3_index": assign_cells(table, resolution)})


def assign_cells(table: pa.Table, resolution: int) -> pa.Array:
    """The H3 cell of each feature's centroid (null for an empty geometry)."""
    import h3

    xs, ys = centroids(table)
    return pa.array([h3.latlng_to_cell(y, x, resolution) if math.isfinite(x) else None
                     for x, y in zip(xs.tolist(), ys.tolist(), strict=True)], pa.string())


__all__ = ["GEOMETRY", "H3Assign", "Sample", "SpatialJoin", "assign_cells"]
