"""The conservation check of extensive variables: :func:`check_balance`.

A published ``zonal_stats`` sum of a source declared ``measure: extensive`` (people per
pixel) must add up: the sum over the run's cells equals the raster's sum over the union of
those cells' polygons, since cells do not overlap and coverage is exact. The union is of
the run's cells as planned, not of the cells its rows hold: a batch whose rows were lost
takes its cells' people out of the sum but not out of the raster, and is caught. The check
recomputes that union sum independently (H3's own outline of the cell set, exactextract's
coverage) and the raster's sum inside the scope polygon, block by block, so memory stays
bounded; a relative gap above the step's ``conservation_tolerance`` (default 1e-6) fails
the run before anything is published. ``captured`` (union sum / scope sum) says what the
border costs: cells are in a scope by their centres, so they do not tile its outline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from h3pipe import grid
from h3pipe.errors import ConservationError
from h3pipe.sources.raster import MosaicReader, RasterInfo
from h3pipe.sources.vector import transform
from h3pipe.spec import StepSpec

if TYPE_CHECKING:
    from h3pipe.planning.prepare import RunPlan
    from h3pipe.storage.base import Store

DEFAULT_TOLERANCE = 1e-6
# Pixels a side of the blocks the raster is summed in.
_BLOCK = 2048


@dataclass(frozen=True)
class Balance:
    """One column's figures: the cells' sum, the raster's over their union and inside the
    scope polygon."""

    column: str
    cells_sum: float
    union_sum: float
    scope_sum: float

    @property
    def relative_error(self) -> float:
        if self.union_sum == 0:
            return 0.0 if self.cells_sum == 0 else math.inf
        return abs(self.cells_sum - self.union_sum) / abs(self.union_sum)

    @property
    def captured(self) -> float | None:
        return self.union_sum / self.scope_sum if self.scope_sum else None

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "cells_sum": self.cells_sum,
                "union_sum": self.union_sum, "scope_sum": self.scope_sum,
                "relative_error": self.relative_error, "captured": self.captured}


def checked_steps(plan: RunPlan) -> list[tuple[StepSpec, dict[str, str]]]:
    """Published zonal_stats steps over cells summing an extensive source, with the sum
    column of each extensive band (band name, '' for one band -> column)."""
    out = []
    for step in plan.pipeline.steps:
        source = plan.sources.get(step.source or "")
        if (step.output != "h3_stats" or step.operation != "zonal_stats"
                or step.input != "cells" or source is None
                or "sum" not in step.params.get("stats", [])):
            continue
        bands = {b: source.column(b, "sum") if b else "sum"
                 for b, m in source.measures().items() if m == "extensive"}
        if bands:
            out.append((step, bands))
    return out


def check_balance(plan: RunPlan, store: Store, outputs: dict[str, dict[int, str]]
                  ) -> dict[str, list[dict[str, Any]]]:
    """Each checked step's figures (step id -> per scenario and band, and per resolution
    for a run of several); raises :class:`ConservationError` past the tolerance."""
    figures: dict[str, list[dict[str, Any]]] = {}
    for step, bands in checked_steps(plan):
        refs = [outputs[step.id][k] for k in sorted(outputs.get(step.id, {}))]
        if not refs:
            continue
        table = store.read_outputs(refs)
        found = []
        for res, rows_at in _levels(plan, table):
            for label, info, rows in _scenarios(plan, step, rows_at):
                found += [{**f, **({"resolution": res} if plan.coarser else {})}
                          for f in _check(plan, step, info, rows, bands, label, res)]
        figures[step.id] = found
    return figures


def _levels(plan: RunPlan, table: Any) -> list[tuple[int, Any]]:
    """(resolution, its rows) of a step's output: a run of several resolutions is checked
    at each, against that resolution's cells."""
    if not plan.coarser:
        return [(plan.resolution, table)]
    found = grid.resolutions(grid.ids(table["h3_index"]))
    return [(res, table.take(np.flatnonzero(found == res))) for res in plan.levels]


def _scenarios(plan: RunPlan, step: StepSpec, table: Any) -> list[tuple[str, RasterInfo, Any]]:
    """(scenario id or '', its raster, its rows) of a step's output."""
    import pyarrow.compute as pc

    assert step.source is not None
    if plan.sweep is None or step.source not in plan.sweep.rasters:
        return [("", plan.rasters[step.source], table)]
    return [(sc.id, info, table.filter(pc.equal(table["scenario"], sc.id)))
            for sc, info in plan.computed_scenarios(step.source)]


def _check(plan: RunPlan, step: StepSpec, info: RasterInfo, rows: Any, bands: dict[str, str],
           scenario: str, resolution: int) -> list[dict[str, Any]]:
    import pyarrow.compute as pc

    union, scope = raster_sums(info, plan.cells_at(resolution).ids(), plan.scope.geometry)
    tolerance = step.params.get("conservation_tolerance", DEFAULT_TOLERANCE)
    found = []
    for k, band in enumerate(info.band_names or ("",)):
        if band not in bands:
            continue
        total = pc.sum(rows[bands[band]]).as_py() or 0.0
        b = Balance(bands[band], float(total), float(union[k]), float(scope[k]))
        where = f" (scenario {scenario})" if scenario else ""
        where += f" at resolution {resolution}" if plan.coarser else ""
        if b.relative_error > tolerance:
            raise ConservationError(
                f"step '{step.id}'{where}: the cells' {b.column} is {b.cells_sum:.10g} but "
                f"the raster holds {b.union_sum:.10g} over the run's cells (relative error "
                f"{b.relative_error:.2e} > {tolerance:g}); nothing was published",
                hint="check the source's nodata and that its tiles share one grid; raise "
                     "params.conservation_tolerance only if the gap is understood")
        found.append({**b.to_json(), **({"scenario": scenario} if scenario else {})})
    return found


def raster_sums(info: RasterInfo, cells: np.ndarray, scope: Any
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per band: the raster's sum over the union of ``cells`` and inside ``scope`` (a
    lon/lat polygon), by exactextract over pixel-aligned blocks."""
    import shapely

    bands = len(info.indexes)
    union, inside = np.zeros(bands), np.zeros(bands)
    if not len(cells):
        return union, inside
    boxes = _cell_boxes(cells, info)
    scope = _to_raster(scope, info)
    shapely.prepare(scope)
    lo = np.minimum(boxes[:, :2].min(axis=0), shapely.bounds(scope)[:2])
    hi = np.maximum(boxes[:, 2:].max(axis=0), shapely.bounds(scope)[2:])
    with MosaicReader(info) as reader:
        for block in _blocks(info, (lo[0], lo[1], hi[0], hi[1])):
            pick = ((boxes[:, 0] < block[2]) & (boxes[:, 2] > block[0])
                    & (boxes[:, 1] < block[3]) & (boxes[:, 3] > block[1]))
            frame = shapely.box(*block)
            pieces = [shapely.intersection(_outline(cells[pick], info), frame)
                      if pick.any() else None, shapely.intersection(scope, frame)]
            sums = _sums(reader, block, pieces)
            union += sums[:, 0]
            inside += sums[:, 1]
    return union, inside


def _sums(reader: Any, block: tuple[float, float, float, float], pieces: list[Any]
          ) -> np.ndarray:
    """bands x pieces: exactextract's sum of each piece over one block."""
    import shapely
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    out = np.zeros((len(reader.info.indexes), len(pieces)))
    live = [i for i, p in enumerate(pieces) if p is not None and not shapely.is_empty(p)
            and shapely.area(p) > 0]
    if not live:
        return out
    stack, (xmin, ymin, xmax, ymax) = reader.read_bands(block)
    features = [{"type": "Feature", "properties": {"i": i},
                 "geometry": shapely.geometry.mapping(pieces[i])} for i in live]
    for k, values in enumerate(stack):
        raster = NumPyRasterSource(values, xmin, ymin, xmax, ymax,
                                   srs_wkt=reader.info.crs_wkt)
        for f in exact_extract(raster, features, "sum", include_cols=["i"]):
            out[k, f["properties"]["i"]] = f["properties"]["sum"] or 0.0
    return out


def _blocks(info: RasterInfo, bounds: tuple[float, float, float, float]
            ) -> list[tuple[float, float, float, float]]:
    """Pixel-aligned boxes of at most _BLOCK pixels a side tiling ``bounds``."""
    c0, r0, c1, r1 = info.pixel_window(bounds, pad=0)
    out = []
    for r in range(r0, r1, _BLOCK):
        for c in range(c0, c1, _BLOCK):
            out.append((info.x0 + c * info.xres, info.y0 - min(r + _BLOCK, r1) * info.yres,
                        info.x0 + min(c + _BLOCK, c1) * info.xres, info.y0 - r * info.yres))
    return out


def _cell_boxes(cells: np.ndarray, info: RasterInfo) -> np.ndarray:
    """Each cell's bounding box in the raster's CRS."""
    import shapely

    xy, starts = grid.outlines(cells)
    if info.crs_is_wgs84 and not grid.crossing(xy, starts).any():
        lo = np.column_stack([np.minimum.reduceat(xy[:, 0], starts[:-1]),
                              np.minimum.reduceat(xy[:, 1], starts[:-1])])
        hi = np.column_stack([np.maximum.reduceat(xy[:, 0], starts[:-1]),
                              np.maximum.reduceat(xy[:, 1], starts[:-1])])
        return np.hstack([lo, hi])
    # Across ±180 or round a pole H3's rings are not polygons of the plane: its shapes are.
    return shapely.bounds(_to_raster(grid.shapes(cells), info))


_SNAP_DEGREES = 1e-9


def _outline(cells: np.ndarray, info: RasterInfo) -> Any:
    """The union of ``cells`` (H3's own outline of the set) in the raster's CRS. A set with
    a cell across ±180 or round a pole is the union of the cells' shapes on the plane
    (:func:`h3pipe.grid.shapes`): H3's outline of it would jump across the map."""
    import h3
    import shapely.geometry

    xy, starts = grid.outlines(cells)
    if grid.crossing(xy, starts).any():
        # Snapped to 1e-9 degrees (0.1 mm): unioned exactly, GEOS dropped whole cells of
        # such sets (the world at res 2 came out 25 square degrees short).
        return _to_raster(shapely.union_all(grid.shapes(cells), grid_size=_SNAP_DEGREES),
                          info)
    shape = h3.cells_to_h3shape([h3.int_to_str(int(c)) for c in cells])
    return _to_raster(shapely.geometry.shape(shape.__geo_interface__), info)


def _to_raster(geometry: Any, info: RasterInfo) -> Any:
    if info.crs_is_wgs84:
        return geometry
    import shapely

    return transform(shapely.segmentize(geometry, 0.0005), "EPSG:4326", info.crs_wkt)


def describe(figures: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per checked column, as 'runs show' prints them."""
    lines = []
    for step_id, found in figures.items():
        for f in found:
            where = f" [{f['scenario']}]" if f.get("scenario") else ""
            where += f" [r{f['resolution']}]" if f.get("resolution") is not None else ""
            captured = (f"; the cells capture {f['captured']:.4%} of the "
                        f"{f['scope_sum']:,.1f} inside the scope polygon"
                        if f.get("captured") is not None else "")
            lines.append(f"{step_id}.{f['column']}{where}: cells {f['cells_sum']:,.1f}, "
                         f"raster over the cells {f['union_sum']:,.1f} (relative error "
                         f"{f['relative_error']:.1e}){captured}")
    return lines


__all__ = ["Balance", "DEFAULT_TOLERANCE", "check_balance", "checked_steps", "describe",
           "raster_sums"]
