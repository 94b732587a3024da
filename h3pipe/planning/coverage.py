"""What a run's rasters cover of its scope: :class:`Coverage`.

Two facts, so a source that covers only part of a scope never passes silently:

* the **footprint share** of each raster source: its tiles (or STAC items) on their grid, in
  lon/lat, intersected with the scope polygon, as a share of the scope's area on the
  ellipsoid (an equal-area projection, not raw degrees). Known before a run:
  :func:`footprint_share`, called by ``prepare``, so ``plan`` and the run's heading say it.
* the **null cells** of each step over the run's cells that reads a raster: cells none of
  whose statistics has a value (no valid pixel: null statistics, ``count``, ``coverage``
  and ``variety`` 0). :func:`null_rows` counts them in each task's output as it is written;
  the store sums the tasks at the end, so no process holds a step's rows.

A published step with more than ``max_null_share`` of its cells null warns; with
``strict`` that is an error (:class:`~h3pipe.errors.TooManyNulls`) once the data is
published. The run records all of it in its params (``coverage``), for ``runs show`` and
the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from h3pipe.errors import TooManyNulls
from h3pipe.operations import get_operation
from h3pipe.operations.windows import DEFINED_WHEN_EMPTY

if TYPE_CHECKING:
    import pyarrow as pa

    from h3pipe.operations import Batch
    from h3pipe.planning.prepare import RunPlan
    from h3pipe.sources.raster import RasterInfo

# Above this share of null cells a published dataset warns, unless --max-null-share or a
# 'max_null_share' default says otherwise.
DEFAULT_MAX_NULL_SHARE = 0.5
# A statistic of the cell itself, not of the data: never says whether a pixel was valid.
_OF_THE_CELL = {"cell_area_km2"}
# Lon/lat edges are cut into pieces this long (degrees) before projecting, so an edge
# that is straight in lon/lat stays so in the equal-area plane.
_SEGMENT_DEG = 0.1
# Lambert's cylindrical equal-area on WGS 84: areas on the ellipsoid, at every latitude,
# and a lon/lat box is a rectangle in it.
_EQUAL_AREA = "+proj=cea +lon_0=0 +lat_ts=0 +datum=WGS84 +units=m +no_defs"


# -- the footprint ----------------------------------------------------------------------------

def footprint_share(grids: Sequence[RasterInfo], geometry: Any) -> float:
    """The share of ``geometry`` (lon/lat) that the tiles of ``grids`` cover, by area on
    the ellipsoid; 1.0 when they cover all of it (to 6 decimals)."""
    import shapely

    scope = geometry if geometry.is_valid else shapely.make_valid(geometry)
    foot = shapely.union_all([footprint(g, scope.bounds) for g in grids])
    if foot.is_empty:
        return 0.0
    if shapely.covers(foot, scope):
        return 1.0
    total = equal_area(scope)
    if total <= 0:
        return 1.0
    return round(min(1.0, equal_area(shapely.intersection(foot, scope)) / total), 6)


def footprint(info: RasterInfo, near: tuple[float, float, float, float]) -> Any:
    """The tiles of ``info`` near ``near`` (a lon/lat box), united, as a lon/lat geometry.
    Tiles are united on their pixel grid, where their shared edges are exact; a grid that
    wraps at the antimeridian has its tiles where the box sees them."""
    import numpy as np
    import shapely

    window = _window(info, near)
    # A glob may list a continent's tiles: only those near the scope count.
    placed = [(t, 0) for t in info.tiles] if window is None else info.placed(*window)
    if not placed:
        return shapely.Polygon()
    col0, row0, col1, row1 = (np.array(v, dtype=float) for v in zip(
        *[(t.col_off + k, t.row_off, t.col_off + k + t.width, t.row_off + t.height)
          for t, k in placed], strict=True))
    on_grid = shapely.union_all(shapely.box(col0, row0, col1, row1))
    in_crs = shapely.transform(on_grid, lambda a: np.column_stack(
        [info.x0 + a[:, 0] * info.xres, info.y0 - a[:, 1] * info.yres]))
    if info.crs_is_wgs84:
        return shapely.clip_by_rect(in_crs, -180.0, -90.0, 180.0, 90.0)
    return _to_lonlat(info, in_crs)


def _window(info: RasterInfo, near: tuple[float, float, float, float]
            ) -> tuple[int, int, int, int] | None:
    """The grid's pixels around a lon/lat box (None: unknown, every tile counts)."""
    if info.crs_is_wgs84:
        return info.pixel_window(near)
    tr = _to_crs(info.crs_wkt)
    if tr is None:
        return None
    x0, y0, x1, y1 = tr.transform_bounds(*near, densify_pts=21)
    if not all(map(math.isfinite, (x0, y0, x1, y1))):
        return None
    return info.pixel_window((x0, y0, x1, y1))


def equal_area(geometry: Any) -> float:
    """The area of a lon/lat geometry in square metres, on the WGS 84 ellipsoid."""
    import numpy as np
    import shapely

    if geometry.is_empty:
        return 0.0
    tr = _equal_area()
    flat = shapely.transform(shapely.segmentize(geometry, _SEGMENT_DEG),
                             lambda a: np.column_stack(tr.transform(a[:, 0], a[:, 1])))
    return float(flat.area)


@cache
def _equal_area() -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", _EQUAL_AREA, always_xy=True)


@cache
def _to_crs(crs_wkt: str) -> Any:
    """lon/lat to the raster's CRS (None if pyproj cannot say)."""
    from pyproj import CRS, Transformer
    from pyproj.exceptions import ProjError

    try:
        return Transformer.from_crs(CRS.from_epsg(4326), CRS.from_wkt(crs_wkt), always_xy=True)
    except ProjError:
        return None


def _to_lonlat(info: RasterInfo, geometry: Any) -> Any:
    """A geometry in the raster's CRS, in lon/lat (edges densified first, as they bend)."""
    import numpy as np
    import shapely

    tr = _to_crs(info.crs_wkt)
    if tr is None or geometry.is_empty:
        return shapely.Polygon()
    x0, y0, x1, y1 = geometry.bounds
    dense = shapely.segmentize(geometry, max(x1 - x0, y1 - y0) / 64 or 1.0)
    xy = shapely.get_coordinates(dense)
    lon, lat = tr.transform(xy[:, 0], xy[:, 1], direction="INVERSE")
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):  # beyond the projection
        return shapely.box(*tr.transform_bounds(x0, y0, x1, y1, direction="INVERSE"))
    lonlat = np.column_stack([lon, lat])
    return shapely.make_valid(shapely.transform(dense, lambda _: lonlat))


# -- null cells -------------------------------------------------------------------------------

def null_rows(batch: Batch, table: pa.Table) -> int | None:
    """Rows of a batch's output with no valid pixel: every statistic null, or 0 for those
    that stay defined over no pixel (count, coverage, variety). None for a batch that is not
    over the run's cells with a raster (nothing to count)."""
    import pyarrow.compute as pc

    info = batch.raster
    if info is None or batch.rows is not None or batch.feed is not None:
        return None
    names = [n for n in get_operation(batch.operation).output_columns(batch.params)
             if n not in _OF_THE_CELL]
    seen = None
    for k in range(len(info.indexes)):
        for name in names:
            column = info.column(k, name)
            if column not in table.column_names:
                continue
            values = table.column(column)
            has = pc.greater(values, 0) if name in DEFINED_WHEN_EMPTY else pc.is_valid(values)
            has = pc.fill_null(has, False)
            seen = has if seen is None else pc.or_(seen, has)
    if seen is None:
        return None
    return table.num_rows - int(pc.sum(seen).as_py() or 0)


# -- what a run says of it ----------------------------------------------------------------

@dataclass(frozen=True)
class StepCoverage:
    """A step over the run's cells reading a raster; ``null`` and ``rows`` once counted."""

    step_id: str
    source_id: str
    published: bool
    null: int | None = None
    rows: int | None = None

    @property
    def null_share(self) -> float | None:
        if self.null is None or not self.rows:
            return None
        return self.null / self.rows

    def nulls(self, unit: str) -> str:
        if self.null == 0:
            return f"every {unit[:-1]} has a valid pixel"
        verb = "has" if self.null == 1 else "have"
        return f"{self.null:,} of {self.rows:,} {unit} {verb} no valid pixel"


@dataclass(frozen=True)
class Coverage:
    """What a run's rasters cover of its scope (see the module's docstring)."""

    scope: str  # the scope's label
    dataset: str
    footprints: Mapping[str, float] = field(default_factory=dict)  # source -> share
    steps: tuple[StepCoverage, ...] = ()
    unit: str = "cells"  # 'rows' for a sweep: a row per cell and scenario
    max_null_share: float = DEFAULT_MAX_NULL_SHARE
    strict: bool = False

    @classmethod
    def of_plan(cls, plan: RunPlan) -> Coverage:
        """What a plan knows before it runs: the footprints, and the steps to count."""
        steps = tuple(StepCoverage(s.id, s.source, s.output == "h3_stats")
                      for s in plan.pipeline.steps
                      if s.input == "cells" and s.source is not None and s.source in plan.rasters)
        return cls(plan.scope.label, plan.pipeline.dataset, dict(plan.footprints), steps,
                   "rows" if plan.sweep else "cells", plan.max_null_share, plan.options.strict)

    def counted(self, counts: Mapping[str, tuple[int, int]]) -> Coverage:
        """With each step's null rows and rows, as the store summed its tasks."""
        return replace(self, steps=tuple(
            replace(s, null=counts[s.step_id][0], rows=counts[s.step_id][1])
            if s.step_id in counts else s for s in self.steps))

    def judged_by(self, max_null_share: float, strict: bool) -> Coverage:
        """The same facts, held to another threshold (a run reported done, asked again)."""
        return replace(self, max_null_share=max_null_share, strict=strict)

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "dataset": self.dataset,
                "footprints": dict(self.footprints), "unit": self.unit,
                "max_null_share": self.max_null_share, "strict": self.strict,
                "steps": [{"step": s.step_id, "source": s.source_id,
                           "published": s.published, "null": s.null, "rows": s.rows}
                          for s in self.steps]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Coverage:
        return cls(doc["scope"], doc["dataset"], dict(doc.get("footprints", {})),
                   tuple(StepCoverage(s["step"], s["source"], s["published"], s.get("null"),
                                      s.get("rows")) for s in doc.get("steps", [])),
                   doc.get("unit", "cells"),
                   doc.get("max_null_share", DEFAULT_MAX_NULL_SHARE), doc.get("strict", False))

    @classmethod
    def recorded(cls, params: Mapping[str, Any]) -> Coverage | None:
        """What a run recorded in its params (None for a run that recorded nothing)."""
        doc = params.get("coverage")
        return cls.from_json(doc) if doc else None

    def covers(self, source_id: str) -> str:
        """'all of RWA (Rwanda)', '32% of BDI (Burundi)'."""
        share = self.footprints.get(source_id, 1.0)
        return f"{'all' if share >= 1 else percent(share)} of {self.scope}"

    def partial(self) -> list[str]:
        """The sources whose footprint misses part of the scope."""
        return [sid for sid, share in self.footprints.items() if share < 1]

    def notes(self) -> list[str]:
        """One line per raster source that misses part of the scope, and per counted step
        with a cell of no valid pixel; nothing when every source covers every cell."""
        out = []
        for sid in self.footprints:
            counted = [s for s in self.steps if s.source_id == sid and s.null is not None]
            if not counted and sid in self.partial():
                out.append(f"{sid} covers {self.covers(sid)}")
            out += [f"{sid} covers {self.covers(sid)}; {s.nulls(self.unit)} (step {s.step_id})"
                    for s in counted if s.null or sid in self.partial()]
        return out

    def sparse(self) -> list[StepCoverage]:
        """Published steps with more than ``max_null_share`` of their rows null."""
        return [s for s in self.steps if s.published and s.null_share is not None
                and s.null_share > self.max_null_share]

    def warnings(self) -> list[str]:
        """One line per sparse published step: the dataset, the share, the source."""
        return [f"dataset {self.dataset} (step {s.step_id}): {percent(s.null_share or 0)} of "
                f"its {self.unit} have no valid pixel ({s.null:,} of {s.rows:,}), more than "
                f"max_null_share {self.max_null_share:g}; {s.source_id} covers "
                f"{self.covers(s.source_id)}" for s in self.sparse()]

    @property
    def exit_code(self) -> int:
        """What ``run`` exits with for this coverage: :class:`TooManyNulls`'s code when it
        is strict and a published step is sparse, else 0."""
        return TooManyNulls.exit_code if self.strict and self.sparse() else 0

    def check(self) -> None:
        """Raise :class:`TooManyNulls` when strict and a published step is sparse (the data
        is published by then: this only judges it)."""
        if self.exit_code:
            steps = ", ".join(f"{percent(s.null_share or 0)} in step {s.step_id}"
                              for s in self.sparse())
            raise TooManyNulls(f"--strict: dataset {self.dataset} has more null {self.unit} "
                               f"than max_null_share {self.max_null_share:g} allows ({steps}); "
                               "the data is published",
                               hint="choose a scope the source covers, or allow more with "
                               "--max-null-share")


def percent(share: float) -> str:
    """A share as a percentage with as few decimals as keep it off 0% and 100%."""
    for digits in range(4):
        text = f"{share * 100:.{digits}f}"
        if (0 < share < 1) and float(text) in (0.0, 100.0):
            continue
        return text + "%"
    return f"{share * 100:.4f}%"


__all__ = ["DEFAULT_MAX_NULL_SHARE", "Coverage", "StepCoverage", "equal_area",
           "footprint", "footprint_share", "null_rows", "percent"]
