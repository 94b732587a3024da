"""``spatial_join``: raster statistics within a radius of each feature, or the attributes
of a vector source's feature by predicate, by :class:`SpatialJoin`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch, Operation
from h3pipe.operations.features import (
    add_columns,
    buffer_metres,
    centroids,
    grown,
    nullable,
    rows_of,
    utm_zones,
)
from h3pipe.operations.zonal_stats import PLAIN_STATS, stat_problems, stats_of_geometries
from h3pipe.sources.vector import geometries, read_features, transform


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
    params_schema = {
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
    reads_geometry = True
    source_kinds = ("raster", "stac", "vector")

    def check_params(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
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
            return stat_problems(params["stats"], PLAIN_STATS)
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

        geoms = geometries(table)
        if len(geoms):
            geoms = buffer_metres(geoms, batch.params["radius_m"], centroids(table))
        stats = list(batch.params["stats"])
        prefix = batch.params.get("prefix", "")
        return add_columns(table, stats_of_geometries(batch, batch.raster, geoms,
                                                      {"stats": stats},
                                                      name=lambda s: prefix + s))

    def _join_vector(self, batch: Batch, table: pa.Table) -> pa.Table:
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
        nearest = params["predicate"] == "nearest"
        match = np.full(n, -1, dtype=np.int64)
        extra = np.zeros(n)
        other = pa.table({})
        if n:
            reach = params["max_distance_m"] if nearest else 0.0
            other = read_features(batch.vector, _search_bounds(geoms, reach))
            targets = geometries(other)
            if nearest:
                match, extra = _match_nearest(geoms, targets, params["max_distance_m"])
            else:
                match, extra = _match_predicate(geoms, targets, params["predicate"])
        cols = _attribute_columns(other, names, match, prefix)
        if nearest:
            cols[prefix + "distance_m"] = nullable(extra)
        else:
            cols[prefix + "matches"] = pa.array(extra.astype(np.int64))
        return add_columns(table, cols)


def _search_bounds(geoms: np.ndarray, reach_m: float) -> tuple[float, float, float, float]:
    """The features' lon/lat box grown by ``reach_m`` metres (in degrees at its widest
    latitude, so the box reaches far enough everywhere)."""
    import shapely

    return grown(tuple(shapely.total_bounds(geoms).tolist()),  # type: ignore[arg-type]
                 reach_m)


def _match_nearest(geoms: np.ndarray, targets: np.ndarray, max_distance_m: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Index of each feature's nearest target within ``max_distance_m`` (-1: none) and the
    distance in metres (NaN: none)."""
    import shapely

    match = np.full(len(geoms), -1, dtype=np.int64)
    distance = np.full(len(geoms), np.nan)
    # Distances in each feature's own UTM zone (the targets projected there).
    zones = utm_zones(geoms)
    for code in np.unique(zones):
        rows = np.flatnonzero(zones == code)
        crs = f"EPSG:{code}"
        tree = shapely.STRtree(transform(targets, "EPSG:4326", crs))
        (src, dst), dist = tree.query_nearest(
            transform(geoms[rows], "EPSG:4326", crs),
            max_distance=max_distance_m, return_distance=True, all_matches=False)
        match[rows[src]] = dst
        distance[rows[src]] = dist
    return match, distance


def _match_predicate(geoms: np.ndarray, targets: np.ndarray, predicate: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first target each feature ``predicate``s (-1: none), and how many."""
    import shapely

    match = np.full(len(geoms), -1, dtype=np.int64)
    matches = np.zeros(len(geoms))
    tree = shapely.STRtree(targets)
    src, dst = tree.query(geoms, predicate=predicate)
    order = np.lexsort((dst, src))  # first match in the source's order
    src, dst = src[order], dst[order]
    first = np.unique(src, return_index=True)[1]
    match[src[first]] = dst[first]
    np.add.at(matches, src, 1)
    return match, matches


def _attribute_columns(other: pa.Table, names: list[str], match: np.ndarray, prefix: str
                       ) -> dict[str, Any]:
    """The matched target's ``names`` for each feature; null where nothing matched."""
    n = len(match)
    cols: dict[str, Any] = {}
    hit = match >= 0
    for a in names:
        col = other.column(a) if other.num_rows else pa.nulls(0)
        taken = col.take(pa.array(np.where(hit, match, 0))) if other.num_rows \
            else pa.nulls(n)
        cols[prefix + a] = pa.array([v if h else None for v, h in
                                     zip(taken.to_pylist(), hit, strict=True)],
                                    type=taken.type if other.num_rows else pa.null())
    return cols
