"""``zonal_stats``: statistics of a raster inside each H3 cell, or inside each feature's
polygon, by :class:`ZonalStats`.

Every statistic weighs each pixel by the exact fraction of it that the cell or polygon
covers (times its area with ``weights: area``); NaN and nodata pixels are never counted. A
zone whose pixels are all nodata gets ``count`` 0, ``variety`` 0, ``coverage`` 0 and null
for everything else. Moments, shares and coverage come from h3pipe's own kernel; medians,
quantiles, modes, and multipolygons from exactextract (see :mod:`h3pipe.operations.windows`).
What a statistic means for the source's declared ``measure``: :mod:`h3pipe.operations.measures`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe import grid
from h3pipe.errors import OperationError
from h3pipe.operations import areas
from h3pipe.operations.base import Batch, Operation
from h3pipe.operations.features import add_columns
from h3pipe.operations.measures import measure_problems
from h3pipe.operations.shares import Bins, class_problems, edge_problems
from h3pipe.operations.windows import (
    DEFINED_WHEN_EMPTY,
    QUANTILE,
    WORK,
    Rings,
    Shapes,
    Wanted,
    fill,
)
from h3pipe.sources.raster import MosaicReader
from h3pipe.sources.vector import geometries, transform

NAMED_STATS = ("count", "sum", "mean", "min", "max", "stdev", "median", "majority", "minority",
               "variety", "coverage", "cell_area_km2", "density", "fractions", "histogram")
# Need the cell itself (its H3 area): not for feature polygons.
CELL_STATS = ("cell_area_km2", "density")
# What spatial_join computes in a buffer: one column per statistic, no bins.
PLAIN_STATS = tuple(s for s in NAMED_STATS if s not in (*CELL_STATS, "fractions", "histogram"))


def cell_rings(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed (lon, lat) rings of the cells, one each, on the plane (see
    :func:`h3pipe.grid.plane_rings`: continuous across the antimeridian, closed over a
    pole)."""
    return grid.plane_rings(cells)


def stat_problems(stats: list[Any], named: tuple[str, ...] = NAMED_STATS
                  ) -> list[tuple[tuple[str | int, ...], str]]:
    found: list[tuple[tuple[str | int, ...], str]] = []
    for i, stat in enumerate(stats or []):
        if isinstance(stat, str) and stat not in named and not QUANTILE.match(stat):
            allowed = ", ".join(f"'{s}'" for s in named) + ", 'quantile_NN'"
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
    stats: [mean, min, max, stdev, quantile_25, coverage]
    min_coverage: 0.5
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
                + ", or quantile_NN for the NN-th percentile (1..99). coverage: the valid "
                "share of the zone; cell_area_km2 and density (sum per km2): cells only; "
                "fractions: a share per class (frac_<name>); histogram: a share per bin "
                "(hist_<lo>_<hi>).",
            },
            "keep": {
                "type": "array", "items": {"type": "string"}, "uniqueItems": True,
                "description": "Over features: the input columns to keep besides feature_id "
                "and geometry (default: all).",
            },
            "weights": {
                "enum": ["fraction", "area"], "default": "fraction",
                "description": "fraction: each pixel weighs the share of it inside the zone. "
                "area: that share times the pixel's area in m2 on the sphere "
                "(exactextract's area_spherical_m2), for true area-weighted means and "
                "integrals; count is then the valid area in m2.",
            },
            "min_coverage": {
                "type": "number", "minimum": 0, "maximum": 1,
                "description": "Null statistics (all but count, coverage and cell_area_km2) "
                "where valid pixels cover less than this share of the zone.",
            },
            "classes": {
                "type": "array", "minItems": 1,
                "items": {"type": "object", "required": ["value", "name"],
                          "additionalProperties": False,
                          "properties": {"value": {"type": "number"},
                                         "name": {"type": "string",
                                                  "pattern": "^[a-z0-9_]{1,40}$"}}},
                "description": "For fractions: the classes (default: the source's classes).",
            },
            "bins": {
                "type": "array", "minItems": 2, "items": {"type": "number"},
                "description": "For histogram: increasing bin edges; a bin is [lo, hi), the "
                "last one [lo, hi].",
            },
            "integer_quantiles": {
                "enum": ["truncate", "interpolate"], "default": "truncate",
                "description": "Integer rasters: median and quantiles truncated toward zero "
                "as exactextract reports them (default), or the interpolated value itself.",
            },
            "conservation_tolerance": {
                "type": "number", "exclusiveMinimum": 0, "default": 1e-6,
                "description": "Extensive source, published sum: the largest relative gap "
                "allowed between the cells' sums and the raster's sum over the cells.",
            },
        },
    }
    input_kinds = frozenset({"cells", "features"})
    reads_geometry = True

    def check_params(self, params: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        stats = params.get("stats") or []
        found = stat_problems(stats)
        if "fractions" in stats and not params.get("classes"):
            found.append((("stats", stats.index("fractions")), "fractions needs classes: "
                          "give them in the source ('classes:') or in params.classes"))
        if "histogram" in stats and "bins" not in params:
            found.append((("stats", stats.index("histogram")), "histogram needs params.bins, "
                          "its bin edges"))
        found += class_problems(params.get("classes"))
        found += edge_problems(params.get("bins"))
        return found

    def column_problems(self, params: dict[str, Any], columns: list[str]
                        ) -> list[tuple[tuple[str | int, ...], str]]:
        found: list[tuple[tuple[str | int, ...], str]] = [
            (("keep", j), f"no column '{name}' in the input ({', '.join(columns)})")
            for j, name in enumerate(params.get("keep", [])) if name not in columns]
        if "geometry" in columns:
            found += [(("stats", i), f"'{s}' is a statistic of H3 cells, not of feature "
                       "polygons") for i, s in enumerate(params["stats"]) if s in CELL_STATS]
        return found

    def source_params(self, params: dict[str, Any], source: Any) -> dict[str, Any]:
        if "fractions" in params.get("stats", []) and "classes" not in params \
                and source.classes:
            return {**params, "classes": [{"value": v, "name": n} for v, n in source.classes]}
        return params

    def measure_problems(self, params: dict[str, Any], measure: str, where: str
                         ) -> list[tuple[tuple[str | int, ...], str]]:
        return measure_problems(params["stats"], measure,
                                weights=params.get("weights", "fraction"), where=where)

    def columns(self, params: dict[str, Any], input_columns: list[str]) -> list[str]:
        if "keep" in params and "geometry" in input_columns:
            input_columns = [c for c in input_columns
                             if c in ("feature_id", "geometry") or c in params["keep"]]
        return super().columns(params, input_columns)

    def output_columns(self, params: dict[str, Any]) -> list[str]:
        return [c for _, c, _ in _outputs(params)]

    def output_column_paths(self, params: dict[str, Any]
                            ) -> list[tuple[str, tuple[str | int, ...]]]:
        return [(c, ("stats", i)) for i, c, _ in _outputs(params)]

    def on_threads(self, params: dict[str, Any], over: str) -> bool:
        # Over cells with the kernel's statistics, a batch holds the GIL a fifth to a
        # third of its time (py-spy, Rwanda at res 8 and 9): reads, decoding and the kernel
        # release it. exactextract's statistics and feature polygons have not been
        # measured on threads: they stay on processes.
        return over == "cells" and not Wanted.of(params).exact

    def warm_up(self) -> None:
        import exactextract  # noqa: F401
        import rasterio  # noqa: F401

        # Not the compiled kernel (numba: 0.3 s of CPU, 150 MB): it loads with the first
        # window of a run that is not small (windows.small_work), so small work never loads it.

    def run_batch(self, batch: Batch) -> pa.Table:
        info = batch.raster
        if info is None:
            raise OperationError(f"step '{batch.step_id}': zonal_stats needs a raster source")
        if batch.rows is not None:
            return self._over_features(batch, info)
        want = Wanted.of(batch.params, small=batch.small)
        cells = batch.cell_ids()
        xy, starts = cell_rings(cells)
        groups = _groups(xy, starts)
        if not info.crs_is_wgs84:
            xy, starts = _reproject(xy, starts, info.crs_wkt)
        # NaN stands for null until the table is built; one column per band and name.
        columns = {info.column(k, s): np.full(len(cells), np.nan)
                   for k in range(len(info.indexes)) for s in want.names()}
        where = f"step '{batch.step_id}' batch {batch.number}"
        # Read one window per group of neighbouring cells rather than one for the whole
        # batch: the bounding box of a batch that spans two tile rows can be far larger
        # than the cells themselves.
        with MosaicReader(info) as reader:
            taken = [_take_rings(xy, starts, idx) for idx in groups]
            reader.prefetch([_envelope(ring_xy) for ring_xy, _ in taken])
            for idx, (ring_xy, lengths) in zip(groups, taken, strict=True):
                ring_starts = np.zeros(len(lengths) + 1, dtype=np.int64)
                np.cumsum(lengths, out=ring_starts[1:])
                zones = Rings(ring_xy, ring_starts, np.arange(len(lengths) + 1))
                fill(reader, _envelope(ring_xy), want, zones, idx, columns, where)
        zone = {"pixels": areas.ring_pixel_areas(xy, starts, info)}
        if set(want.stats) & set(CELL_STATS):
            zone["km2"] = areas.cell_areas_km2(cells)
        arrays = {"h3_index": grid.strings(cells)}
        arrays.update(finish(batch.params, info, columns, zone))
        return pa.table(arrays)

    def _over_features(self, batch: Batch, info: Any) -> pa.Table:
        table = batch.rows
        assert table is not None
        if "keep" in batch.params:
            keep = self.columns(batch.params, table.column_names)
            table = table.select([c for c in table.column_names if c in keep])
        return add_columns(table, stats_of_geometries(batch, info, geometries(table),
                                                      batch.params))


def _outputs(params: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(index in stats, column, statistic) of each output column, before bands."""
    out = []
    for i, stat in enumerate(params["stats"]):
        if stat == "fractions":
            out += [(i, n, stat) for n in Bins.of_classes(params.get("classes") or []).names]
        elif stat == "histogram":
            out += [(i, n, stat) for n in Bins.of_edges(params.get("bins") or []).names]
        else:
            out.append((i, stat, stat))
    return out


def finish(params: dict[str, Any], info: Any, columns: dict[str, np.ndarray],
           zone: dict[str, np.ndarray]) -> dict[str, pa.Array]:
    """The output columns of every band from the filled ones: shares, coverage, density,
    ``min_coverage``; ``zone``: each zone's area in pixels (and in km2 for cells)."""
    out: dict[str, pa.Array] = {}
    floor = params.get("min_coverage")
    for k in range(len(info.indexes)):
        def col(name: str, k: int = k) -> np.ndarray:
            return columns[info.column(k, name)]

        with np.errstate(divide="ignore", invalid="ignore"):
            cover = np.minimum(col("_valid") / zone["pixels"], 1.0)
            cover = np.where(zone["pixels"] > 0, cover, 0.0)
            shares = {n: col(n) / np.where(col("_count") > 0, col("_count"), np.nan)
                      for _, n, s in _outputs(params) if s in ("fractions", "histogram")}
            derived = {"coverage": cover, "cell_area_km2": zone.get("km2"),
                       "density": col("_sum") / zone["km2"] if "km2" in zone else None}
        low = cover < floor if floor is not None else np.zeros(len(cover), bool)
        for _, name, stat in _outputs(params):
            values = shares.get(name, derived.get(stat) if stat in derived else None)
            values = col(name) if values is None else values
            if stat not in ("count", "coverage", "cell_area_km2"):
                values = np.where(low, np.nan, values)
            if stat in DEFINED_WHEN_EMPTY:  # a point or line covers no pixel: 0, not null
                values = np.where(np.isnan(values) & ~low, 0, values)
            null = np.isnan(values)  # variety too, below min_coverage
            out[info.column(k, name)] = pa.array(np.where(null, 0, values).astype(np.int64),
                                                 mask=null) \
                if stat == "variety" else pa.array(values, mask=null, type=pa.float64())
    return out


def stats_of_geometries(batch: Batch, info: Any, geoms: np.ndarray, params: dict[str, Any],
                        name: Any = str) -> dict[str, pa.Array]:
    """Exact-coverage statistics of ``info`` inside each (lon/lat) polygon of ``geoms``, as
    columns named ``name(column)`` (per band, see :meth:`RasterInfo.column`); ``params``:
    a zonal_stats step's (``stats`` and the options that shape them)."""
    import shapely

    want = Wanted.of(params)
    columns = {info.column(k, s): np.full(len(geoms), np.nan)
               for k in range(len(info.indexes)) for s in want.names()}
    areal = np.flatnonzero(shapely.get_type_id(geoms) >= 3) if len(geoms) else np.array([], int)
    target = geoms[areal]
    if not info.crs_is_wgs84 and len(target):
        target = transform(shapely.segmentize(target, 0.0005), "EPSG:4326", info.crs_wkt)
    where = f"step '{batch.step_id}' batch {batch.number}"
    if len(target):
        env = shapely.bounds(target)
        keys = np.floor(env[:, 0] / 0.25) * 100000 + np.floor(env[:, 1] / 0.25)
        with MosaicReader(info) as reader:
            single = shapely.get_type_id(target) == 3
            for key in np.unique(keys):
                for group in (np.flatnonzero((keys == key) & single),
                              np.flatnonzero((keys == key) & ~single)):
                    if len(group):
                        box = (env[group, 0].min(), env[group, 1].min(), env[group, 2].max(),
                               env[group, 3].max())
                        _fill_polygons(reader, box, want, target[group], areal[group], columns,
                                       where)
    pixels = np.zeros(len(geoms))
    pixels[areal] = areas.pixel_areas(target, info) if len(target) else 0.0
    done = finish(params, info, columns, {"pixels": pixels})
    return {info.column(k, name(c)): done[info.column(k, c)]
            for k in range(len(info.indexes)) for c in [c for _, c, _ in _outputs(params)]}


def _fill_polygons(reader: Any, box: tuple[float, float, float, float], want: Wanted,
                   polygons: np.ndarray, rows: np.ndarray, columns: dict[str, np.ndarray],
                   where: str) -> None:
    """:func:`fill` for polygons all single (holes allowed: the kernel reads them) or all
    multi (exactextract reads them whole; their bins add up over their parts)."""
    import shapely

    if (shapely.get_type_id(polygons) == 3).all():
        fill(reader, box, want, _rings(polygons), rows, columns, where)
        return
    fill(reader, box, want.for_whole(), Shapes(polygons), rows, columns, where)
    if want.bins:
        parts, owner = shapely.get_parts(polygons, return_index=True)
        parts = parts[shapely.get_type_id(parts) == 3]
        owner = owner[shapely.get_type_id(shapely.get_parts(polygons)) == 3]
        names = [n for b in want.bins for n in b.names]
        info = reader.info
        part_cols = {info.column(k, n): np.zeros(len(parts))
                     for k in range(len(info.indexes)) for n in [*names, *WORK]}
        fill(reader, box, want.for_bins(), _rings(parts), np.arange(len(parts)), part_cols,
             where)
        for k in range(len(info.indexes)):
            for n in names:
                total = np.zeros(len(polygons))
                np.add.at(total, owner, part_cols[info.column(k, n)])
                columns[info.column(k, n)][rows] = total


def _rings(polygons: np.ndarray) -> Rings:
    """Single polygons (holes allowed) as the kernel's rings: each polygon's exterior,
    then its holes, every ring's vertices in order (one call each, not one per ring)."""
    import shapely

    rings, owner = shapely.get_rings(polygons, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    ring_starts = np.zeros(len(rings) + 1, dtype=np.int64)
    np.cumsum(np.bincount(ring_of, minlength=len(rings)), out=ring_starts[1:])
    poly_starts = np.zeros(len(polygons) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=len(polygons)), out=poly_starts[1:])
    return Rings(xy, ring_starts, poly_starts)


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
