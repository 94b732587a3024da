"""``zonal_stats``: statistics of a raster inside each H3 cell, or inside each feature's
polygon, by :class:`ZonalStats`.

Every statistic weighs each pixel by the exact fraction of it that the cell or polygon
covers; NaN and nodata pixels are never counted. A zone whose pixels are all nodata gets
``count`` 0, ``variety`` 0 and null for everything else. H3 cells go through h3pipe's own
kernel for moments; feature polygons (holes, multipolygons) go through exactextract.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe import grid
from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch, Operation

NAMED_STATS = ("count", "sum", "mean", "min", "max", "stdev", "median", "majority", "minority",
               "variety")
# Computed by h3pipe's own exact-coverage kernel (h3pipe.operations.coverage); the others
# need every value of a cell and go through exactextract.
MOMENT_STATS = ("count", "sum", "mean", "min", "max", "stdev")
_QUANTILE = re.compile(r"^quantile_([1-9][0-9]?)$")
# Statistics that stay meaningful when no pixel is valid; the rest become null.
_DEFINED_WHEN_EMPTY = {"count", "variety"}
# exactextract reports these in the raster's own type: for an integer raster the
# interpolated value is truncated toward zero (7.6 -> 7). We do the same, so h3pipe agrees
# with exactextract run on the file, though we compute on float copies of the pixels.
_INTERPOLATED = re.compile(r"^(median|quantile_\d+)$")


def stat_to_exactextract(stat: str) -> tuple[str, dict[str, Any]]:
    """exactextract's statistic name and options for one of ours (``quantile_25``)."""
    m = _QUANTILE.match(stat)
    if m:
        return "quantile", {"q": int(m.group(1)) / 100}
    return stat, {}


def cell_rings(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed (lon, lat) rings of the cells (see :func:`h3pipe.grid.outlines`); a cell across
    the antimeridian is refused."""
    xy, starts = grid.outlines(cells)
    if len(cells):
        lon = xy[:, 0]
        span = np.maximum.reduceat(lon, starts[:-1]) - np.minimum.reduceat(lon, starts[:-1])
        if (span > 180).any():
            bad = grid.strings(cells[span > 180][:1])[0].as_py()
            raise OperationError(f"cell {bad} crosses the antimeridian, which is not "
                                 "supported yet", hint="split the scope at 180 degrees")
    return xy, starts


def stat_problems(stats: list[Any]) -> list[tuple[tuple[str | int, ...], str]]:
    found: list[tuple[tuple[str | int, ...], str]] = []
    for i, stat in enumerate(stats or []):
        if isinstance(stat, str) and stat not in NAMED_STATS and not _QUANTILE.match(stat):
            allowed = ", ".join(f"'{s}'" for s in NAMED_STATS) + ", 'quantile_NN'"
            found.append((("stats", i), f"'{stat}' is not one of [{allowed}]"))
    return found


class ZonalStats(Operation):
    name = "zonal_stats"
    summary = ("Statistics of a raster source inside each H3 cell, or inside each feature's "
               "polygon (input: a vector source or an earlier step's features), with exact "
               "pixel coverage.")
    example = """\
- id: elevation_stats
  operation: zonal_stats
  source: cop-dem-glo-30
  params:
    stats: [mean, min, max, stdev, quantile_25]
"""
    params_schema = {
        "type": "object",
        "required": ["stats"],
        "additionalProperties": False,
        "properties": {
            "stats": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string"},
                "description": "Any of " + ", ".join(NAMED_STATS)
                + ", or quantile_NN for the NN-th percentile (1..99).",
            },
            "keep": {
                "type": "array", "items": {"type": "string"}, "uniqueItems": True,
                "description": "Over features: the input columns to keep besides feature_id "
                "and geometry (default: all).",
            },
        },
    }
    input_kinds = frozenset({"cells", "features"})

    def check_params(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        return stat_problems(params.get("stats") or [])

    def column_problems(self, params: dict[str, Any], columns: list[str]
                        ) -> list[tuple[tuple[str | int, ...], str]]:
        return [(("keep", j), f"no column '{name}' in the input ({', '.join(columns)})")
                for j, name in enumerate(params.get("keep", [])) if name not in columns]

    def columns(self, params: dict[str, Any], input_columns: list[str]) -> list[str]:
        if "keep" in params and "geometry" in input_columns:
            input_columns = [c for c in input_columns
                             if c in ("feature_id", "geometry") or c in params["keep"]]
        return super().columns(params, input_columns)

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return list(params["stats"])

    def output_column_paths(self, params: dict[str, Any]
                            ) -> list[tuple[str, tuple[str | int, ...]]]:
        return [(stat, ("stats", i)) for i, stat in enumerate(params["stats"])]

    def warm_up(self) -> None:
        import rasterio  # noqa: F401

        from h3pipe.operations import coverage

        # Loads the compiled kernel from numba's cache for both window types: a unit
        # square over a 2 x 2 window.
        u = np.array([0.5, 1.5, 1.5, 0.5, 0.5])
        v = np.array([0.5, 0.5, 1.5, 1.5, 0.5])
        rings = np.array([0, 5], dtype=np.int64)
        polys = np.array([0, 1], dtype=np.int64)
        for dtype in (np.float32, np.float64):
            coverage.polygon_moments(np.ones((2, 2), dtype), u, v, rings, polys)

    def run_batch(self, batch: Batch) -> pa.Table:
        from h3pipe.sources.raster import MosaicReader

        info = batch.raster
        if info is None:
            raise OperationError(f"step '{batch.step_id}': zonal_stats needs a raster source")
        stats = list(batch.params["stats"])
        if batch.rows is not None:
            return self._over_features(batch, info, stats)
        cells = batch.cell_ids()
        xy, starts = cell_rings(cells)
        groups = _groups(xy, starts)
        if not info.crs_is_wgs84:
            xy, starts = _reproject(xy, starts, info.crs_wkt)
        # NaN stands for null until the table is built; one column per band and statistic.
        columns = {info.column(k, s): np.full(len(cells), np.nan)
                   for k in range(len(info.indexes)) for s in stats}
        # Read one window per group of neighbouring cells rather than one for the whole
        # batch: the bounding box of a batch that spans two tile rows can be far larger
        # than the cells themselves.
        extract = _moments_group if set(stats) <= set(MOMENT_STATS) else _extract_group
        with MosaicReader(info) as reader:
            taken = [_take_rings(xy, starts, idx) for idx in groups]
            reader.prefetch([_envelope(ring_xy) for ring_xy, _ in taken])
            for idx, (ring_xy, lengths) in zip(groups, taken, strict=True):
                extract(reader, batch, ring_xy, lengths, idx, stats, columns)
        arrays = {"h3_index": grid.strings(cells)}
        for k in range(len(info.indexes)):
            for stat in stats:
                name = info.column(k, stat)
                col = columns[name]
                if stat == "variety":
                    arrays[name] = pa.array(col.astype(np.int64))
                else:
                    arrays[name] = pa.array(col, mask=np.isnan(col))
        return pa.table(arrays)


    def _over_features(self, batch: Batch, info: Any, stats: list[str]) -> pa.Table:
        from h3pipe.operations.features import add_columns
        from h3pipe.sources.vector import geometries

        table = batch.rows
        assert table is not None
        if "keep" in batch.params:
            keep = self.columns(batch.params, table.column_names)
            table = table.select([c for c in table.column_names if c in keep])
        columns = stats_of_geometries(batch, info, geometries(table), stats)
        return add_columns(table, columns)


def stats_of_geometries(batch: Batch, info: Any, geoms: np.ndarray, stats: list[str],
                        name: Any = str) -> dict[str, pa.Array]:
    """Exact-coverage statistics of ``info`` inside each (lon/lat) polygon of ``geoms``, as
    columns named ``name(stat)`` (per band, see :meth:`RasterInfo.column`)."""
    import shapely

    from h3pipe.sources.raster import MosaicReader

    columns = {info.column(k, s): np.full(len(geoms), np.nan)
               for k in range(len(info.indexes)) for s in stats}
    areal = np.flatnonzero(shapely.get_type_id(geoms) >= 3) if len(geoms) else np.array([], int)
    target = geoms[areal]
    if not info.crs_is_wgs84 and len(target):
        from h3pipe.sources.vector import transform

        target = transform(shapely.segmentize(target, 0.0005), "EPSG:4326", info.crs_wkt)
    if len(target):
        env = shapely.bounds(target)
        keys = np.floor(env[:, 0] / 0.25) * 100000 + np.floor(env[:, 1] / 0.25)
        # Single polygons (holes allowed) go through the kernel when it can give every
        # statistic; multipolygons, and statistics that need every value, through exactextract.
        kernel = set(stats) <= set(MOMENT_STATS)
        simple = shapely.get_type_id(target) == 3
        with MosaicReader(info) as reader:
            for key in np.unique(keys):
                group = keys == key
                fast = np.flatnonzero(group & simple) if kernel else np.array([], int)
                slow = np.flatnonzero(group & ~simple) if kernel else np.flatnonzero(group)
                if len(fast):
                    polys = [[np.asarray(g.exterior.coords),
                              *(np.asarray(r.coords) for r in g.interiors)]
                             for g in target[fast]]
                    _moments_polygons(reader, polys, areal[fast], stats, columns)
                if len(slow):
                    shapes = [json.loads(shapely.to_geojson(g)) for g in target[slow]]
                    box = (env[slow, 0].min(), env[slow, 1].min(), env[slow, 2].max(),
                           env[slow, 3].max())
                    _extract(reader, batch, shapes, box, areal[slow], stats, columns)
    out: dict[str, pa.Array] = {}
    for k in range(len(info.indexes)):
        for stat in stats:
            col = columns[info.column(k, stat)]
            if stat in _DEFINED_WHEN_EMPTY:  # a point or line covers no pixel: 0, not null
                col = np.where(np.isnan(col), 0, col)
            out[info.column(k, name(stat))] = pa.array(col.astype(np.int64)) \
                if stat == "variety" else pa.array(col, mask=np.isnan(col), type=pa.float64())
    return out


_KERNEL_COLUMN = {"count": 0, "sum": 1, "mean": 2, "min": 3, "max": 4, "stdev": 5}


def _moments_group(reader: Any, batch: Batch, xy: np.ndarray, lengths: np.ndarray,
                   rows: np.ndarray, stats: list[str], columns: dict[str, np.ndarray]) -> None:
    """Like :func:`_extract_group`, for moment statistics only, with h3pipe's own kernel."""
    _moments(reader, xy, lengths, np.ones(len(lengths), dtype=np.int64), rows, stats, columns)


def _moments_polygons(reader: Any, polys: list[list[np.ndarray]], rows: np.ndarray,
                      stats: list[str], columns: dict[str, np.ndarray]) -> None:
    """Moment statistics of polygons (each a list of rings, exterior first) from one
    window, with h3pipe's own kernel."""
    rings = [r for poly in polys for r in poly]
    _moments(reader, np.concatenate(rings), [len(r) for r in rings],
             np.array([len(p) for p in polys], dtype=np.int64), rows, stats, columns)


def _moments(reader: Any, xy: np.ndarray, ring_lengths: Any, rings_per_poly: np.ndarray,
             rows: np.ndarray, stats: list[str], columns: dict[str, np.ndarray]) -> None:
    from h3pipe.operations import coverage

    xs, ys = xy[:, 0], xy[:, 1]
    stack, (xmin, ymin, xmax, ymax) = reader.read_bands((xs.min(), ys.min(), xs.max(),
                                                         ys.max()))
    _, nrows, ncols = stack.shape
    u = (xs - xmin) / ((xmax - xmin) / ncols)
    v = (ymax - ys) / ((ymax - ymin) / nrows)
    ring_starts = np.zeros(len(ring_lengths) + 1, dtype=np.int64)
    np.cumsum(ring_lengths, out=ring_starts[1:])
    poly_starts = np.zeros(len(rings_per_poly) + 1, dtype=np.int64)
    np.cumsum(rings_per_poly, out=poly_starts[1:])
    info = reader.info
    for k, values in enumerate(stack):
        result = coverage.polygon_moments(values, u, v, ring_starts, poly_starts)
        empty = ~(result[:, coverage.COUNT] > 0)
        for stat in stats:
            col = result[:, _KERNEL_COLUMN[stat]].copy()
            if stat not in _DEFINED_WHEN_EMPTY:
                col[empty] = np.nan
            columns[info.column(k, stat)][rows] = col


def _extract_group(reader: Any, batch: Batch, xy: np.ndarray, lengths: np.ndarray,
                   rows: np.ndarray, stats: list[str], columns: dict[str, np.ndarray]) -> None:
    """Fill ``columns[stat][row]`` for the cells ``rows`` (closed rings of ``lengths``
    vertices, one after another in ``xy``) from one window, with exactextract."""
    ends = np.cumsum(lengths)
    shapes = [{"type": "Polygon", "coordinates": [xy[end - n:end].tolist()]}
              for n, end in zip(lengths.tolist(), ends.tolist(), strict=True)]
    box = (xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max())
    _extract(reader, batch, shapes, box, rows, stats, columns)


def _extract(reader: Any, batch: Batch, shapes: list[dict[str, Any]],
             bounds: tuple[float, float, float, float], rows: np.ndarray, stats: list[str],
             columns: dict[str, np.ndarray]) -> None:
    """Fill ``columns[stat][row]`` for the GeoJSON geometries ``shapes`` (rows ``rows``)
    from one window covering ``bounds``, with exactextract."""
    from exactextract import Operation as EEOperation
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    integer = np.issubdtype(np.dtype(reader.info.dtype), np.integer)
    stack, (xmin, ymin, xmax, ymax) = reader.read_bands(bounds)
    features = [{"type": "Feature", "properties": {"row": int(row)}, "geometry": shape}
                for row, shape in zip(rows, shapes, strict=True)]
    for k, values in enumerate(stack):
        raster = NumPyRasterSource(values, xmin, ymin, xmax, ymax,
                                   srs_wkt=reader.info.crs_wkt)
        # Each operation gets a field name of its own, f0, f1, ...: exactextract derives
        # quantile names from a truncated q*100 (0.29 becomes 'quantile_28', colliding
        # with 0.28) and appends "_<q>" to any field name given with options, so we match
        # by prefix.
        ops = [EEOperation(name, f"f{i}", raster, None, options)
               for i, (name, options) in enumerate(map(stat_to_exactextract, stats))]
        ops.append(EEOperation("count", "valid_count", raster))
        try:
            result = exact_extract(raster, features, ops, include_cols=["row"])
        except Exception as exc:  # exactextract raises plain RuntimeError/ValueError
            raise OperationError(f"step '{batch.step_id}' batch {batch.number}: exactextract "
                                 f"failed: {exc}") from exc
        for feature in result:
            props = feature["properties"]
            by_field = {k.split("_", 1)[0]: v for k, v in props.items() if k[:1] == "f"}
            empty = not props["valid_count"]
            for i, stat in enumerate(stats):
                value = _clean(by_field.get(f"f{i}"), stat, empty)
                if value is not None and integer and _INTERPOLATED.match(stat):
                    value = float(math.trunc(value))
                columns[reader.info.column(k, stat)][props["row"]] = \
                    np.nan if value is None else value


def _clean(value: Any, stat: str, empty: bool) -> Any:
    if empty and stat not in _DEFINED_WHEN_EMPTY:
        return None
    if value is None:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    return int(value) if stat == "variety" else float(value)


def _groups(xy: np.ndarray, starts: np.ndarray, size: float = 0.25) -> list[np.ndarray]:
    """Indices of rings grouped by the ``size``-degree square of their first vertex."""
    if len(starts) < 2:
        return []
    first = xy[starts[:-1]]
    keys = np.floor(first[:, 0] / size) * 1e6 + np.floor(first[:, 1] / size)
    _, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    cuts = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, cuts)


def _envelope(xy: np.ndarray) -> tuple[float, float, float, float]:
    return (xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max())


def _take_rings(xy: np.ndarray, starts: np.ndarray, idx: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of rings ``idx`` one after another, and each ring's length."""
    lengths = starts[idx + 1] - starts[idx]
    ends = np.cumsum(lengths)
    pos = np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts[idx] - (ends - lengths),
                                                               lengths)
    return xy[pos], lengths


def _reproject(xy: np.ndarray, starts: np.ndarray, crs_wkt: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rings in the raster's CRS, edges densified so straight lines stay faithful."""
    import shapely
    from pyproj import CRS, Transformer

    transformer = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_wkt(crs_wkt), always_xy=True)
    owner = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    dense = shapely.segmentize(shapely.linearrings(xy, indices=owner), 0.0005)
    coords = shapely.get_coordinates(dense)
    xs, ys = transformer.transform(coords[:, 0], coords[:, 1])
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise OperationError("a cell cannot be projected into the raster's CRS",
                             hint="check the raster's CRS covers the scope")
    out = np.zeros(len(starts), dtype=np.int64)
    np.cumsum(shapely.get_num_coordinates(dense), out=out[1:])
    return np.column_stack([xs, ys]), out
