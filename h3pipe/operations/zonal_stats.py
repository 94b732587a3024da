"""``zonal_stats``: statistics of a raster inside each H3 cell, by :class:`ZonalStats`.

Every statistic weighs each pixel by the exact fraction of it that the cell covers
(exactextract); NaN and nodata pixels are never counted. A cell whose pixels are all
nodata gets ``count`` 0, ``variety`` 0 and null for everything else.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch, Operation

NAMED_STATS = ("count", "sum", "mean", "min", "max", "stdev", "median", "majority", "minority",
               "variety")
_QUANTILE = re.compile(r"^quantile_([1-9][0-9]?)$")
# Statistics that stay meaningful when no pixel is valid; the rest become null.
_DEFINED_WHEN_EMPTY = {"count", "variety"}


def stat_to_exactextract(stat: str) -> str:
    m = _QUANTILE.match(stat)
    if m:
        return f"quantile(q={int(m.group(1)) / 100})"
    return stat


def cell_polygons(cells: tuple[str, ...]) -> list[list[tuple[float, float]]]:
    """Closed (lon, lat) rings of the cells, as H3 draws them (great-circle arcs ignored)."""
    import h3

    rings = []
    for c in cells:
        ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(c)]
        lons = [p[0] for p in ring]
        if max(lons) - min(lons) > 180:
            raise OperationError(f"cell {c} crosses the antimeridian, which is not supported yet",
                                 hint="split the scope at 180 degrees")
        ring.append(ring[0])
        rings.append(ring)
    return rings


class ZonalStats(Operation):
    name = "zonal_stats"
    summary = "Statistics of a raster source inside each H3 cell, with exact pixel coverage."
    example = """\
- id: elevation_stats
  operation: zonal_stats
  source: cop-dem-glo-30
  params:
    stats: [mean, min, max, stdev, quantile_25]
"""
    params_schema: dict[str, Any] = {
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
        },
    }

    def check_params(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        found = []
        for i, stat in enumerate(params.get("stats") or []):
            if isinstance(stat, str) and stat not in NAMED_STATS and not _QUANTILE.match(stat):
                allowed = ", ".join(f"'{s}'" for s in NAMED_STATS) + ", 'quantile_NN'"
                found.append((("stats", i), f"'{stat}' is not one of [{allowed}]"))
        return found

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return list(params["stats"])

    def run_batch(self, batch: Batch) -> pa.Table:
        from exactextract import exact_extract
        from exactextract.raster import NumPyRasterSource

        from h3pipe.operations.raster import read_mosaic

        info = batch.raster
        if info is None:
            raise OperationError(f"step '{batch.step_id}': zonal_stats needs a raster source")
        stats = list(batch.params["stats"])
        ops = [stat_to_exactextract(s) for s in stats]
        # 'count' tells an all-nodata cell apart, so it is always computed.
        extra = [] if "count" in stats else ["count"]
        rings = cell_polygons(batch.cells)
        groups = _groups(rings)
        if not info.crs_is_wgs84:
            rings = _reproject(rings, info.crs_wkt)
        columns: dict[str, list[Any]] = {s: [None] * len(batch.cells) for s in stats}
        # Read one window per group of neighbouring cells rather than one for the whole
        # batch: the bounding box of a batch that spans two tile rows can be far larger
        # than the cells themselves.
        for idx in groups:
            xs = [x for i in idx for x, _ in rings[i]]
            ys = [y for i in idx for _, y in rings[i]]
            bounds = (min(xs), min(ys), max(xs), max(ys))
            values, (xmin, ymin, xmax, ymax) = read_mosaic(info, bounds)
            raster = NumPyRasterSource(values, xmin, ymin, xmax, ymax, srs_wkt=info.crs_wkt)
            features = [{"type": "Feature", "properties": {"row": i},
                         "geometry": {"type": "Polygon", "coordinates": [rings[i]]}} for i in idx]
            try:
                result = exact_extract(raster, features, ops + extra, include_cols=["row"])
            except Exception as exc:  # exactextract raises plain RuntimeError/ValueError
                raise OperationError(f"step '{batch.step_id}' batch {batch.number}: exactextract "
                                     f"failed: {exc}") from exc
            for feature in result:
                props = feature["properties"]
                row = props["row"]
                empty = not props["count"]
                for stat, op in zip(stats, ops, strict=True):
                    columns[stat][row] = _clean(props.get(_result_key(op)), stat, empty)
        arrays = {"h3_index": pa.array(batch.cells, pa.string())}
        for stat in stats:
            typ = pa.int64() if stat == "variety" else pa.float64()
            arrays[stat] = pa.array(columns[stat], typ)
        return pa.table(arrays)


def _result_key(op: str) -> str:
    m = re.match(r"quantile\(q=([0-9.]+)\)", op)
    return f"quantile_{round(float(m.group(1)) * 100)}" if m else op


def _clean(value: Any, stat: str, empty: bool) -> Any:
    if empty and stat not in _DEFINED_WHEN_EMPTY:
        return None
    if value is None:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    return int(value) if stat == "variety" else float(value)


def _groups(rings: list[list[tuple[float, float]]], size: float = 0.25) -> list[list[int]]:
    """Indices of lon/lat rings grouped by the ``size``-degree square of their first vertex."""
    out: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, ring in enumerate(rings):
        x, y = ring[0]
        out[(math.floor(x / size), math.floor(y / size))].append(i)
    return list(out.values())


Ring = list[tuple[float, float]]


def _reproject(rings: list[Ring], crs_wkt: str) -> list[Ring]:
    """Rings in the raster's CRS, edges densified so straight lines stay faithful."""
    import shapely
    from pyproj import CRS, Transformer

    transformer = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_wkt(crs_wkt), always_xy=True)
    out = []
    for ring in rings:
        dense = shapely.segmentize(shapely.LinearRing(ring), 0.0005)
        xs, ys = transformer.transform(*np.asarray(dense.coords).T)
        if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
            raise OperationError("a cell cannot be projected into the raster's CRS",
                                 hint="check the raster's CRS covers the scope")
        out.append(list(zip(xs.tolist(), ys.tolist(), strict=True)))
    return out
