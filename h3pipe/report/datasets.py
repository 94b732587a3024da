"""A published dataset as maps: :func:`select` reads the cells of one scope and resolution
(:class:`Selection`), :func:`map_column` turns one of its columns into a
:class:`~h3pipe.report.maps.CellMap`, and :func:`map_dataset` is ``h3pipe map``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe import extras, grid
from h3pipe.config.project import ProjectConfig, suggest
from h3pipe.errors import ConfigError, H3PipeError, UsageError
from h3pipe.planning.scope import ScopeRef
from h3pipe.report import maps
from h3pipe.report.meaning import Meaning, meaning
from h3pipe.results import layouts
from h3pipe.results import runs as records
from h3pipe.storage.records import Row


@dataclass(frozen=True)
class Selection:
    """One dataset's rows over one scope (or several) at one resolution."""

    dataset: str
    table: Any  # pa.Table, a row per cell
    entries: list[Row]
    resolution: int
    outline: Any | None  # the scope's polygon, when it can be resolved again

    @property
    def columns(self) -> list[str]:
        """The statistic columns, in pipeline order (a sweep's keys are not statistics)."""
        import pyarrow as pa

        keys = {*layouts.merged(self.entries)["keys"], "scenario"}
        out: list[str] = []
        for e in self.entries:
            out += [c for c in json.loads(e["columns"]) if c not in out and c not in keys]
        return [c for c in out if c in self.table.column_names
                and not pa.types.is_string(self.table.schema.field(c).type)]

    @property
    def label(self) -> str:
        scopes = ", ".join(dict.fromkeys(e["scope_label"] for e in self.entries))
        runs = ", ".join(dict.fromkeys(e["run_id"] for e in self.entries))
        return f"{scopes} · resolution {self.resolution} · run {runs}"


def select(project: ProjectConfig, dataset: str, *, scope: ScopeRef | None = None,
           run_id: str | None = None, resolution: int | None = None,
           where: list[str] | None = None) -> Selection:
    """The rows a map draws: one scope given as to 'h3pipe run' (or a run's result), one
    resolution, one row per cell (a sweep needs --where down to one scenario)."""
    if scope is None and not run_id:
        raise UsageError("give the scope to draw: --iso3, --bbox, --aoi or --run")
    table, entries = records.read_dataset(project, dataset, scope=scope, run_id=run_id,
                                          resolution=resolution, where=where)
    found = sorted({int(e["resolution"]) for e in entries})
    if len(found) > 1:
        raise UsageError(f"dataset '{dataset}' has resolutions {', '.join(map(str, found))} "
                         "for this scope: choose one with -r")
    _one_row_per_cell(table, entries)
    outline = _outline(scope, [e["run_id"] for e in entries], project)
    return Selection(dataset, table, entries, found[0], outline)


def _one_row_per_cell(table: Any, entries: list[Row]) -> None:
    import pyarrow.compute as pc

    # Only a sweep's keys make several rows per cell (reading several scopes keeps one
    # row a cell), so a plain dataset is not searched for duplicates (1 s a million).
    keys = layouts.merged(entries)["keys"]
    if not keys or pc.count_distinct(table.column("h3_index")).as_py() == table.num_rows:
        return
    first = {k: table.column(k)[0].as_py() for k in keys if k in table.column_names}
    # The scenario id alone names one scenario; else each key's value (nulls left out).
    example = ({"scenario": first["scenario"]} if "scenario" in first
               else {k: v for k, v in first.items() if v is not None})
    raise UsageError("the dataset has several rows per cell (one per scenario): pick one "
                     "scenario with --where" + (", e.g. " + " ".join(
                         f"--where {k}={v}" for k, v in example.items()) if example else ""))


def _outline(scope: ScopeRef | None, runs: list[str], project: ProjectConfig) -> Any | None:
    """The scope's polygon: as given, or as the run recorded it; None when it cannot be
    had again (an area file since moved)."""
    try:
        if scope is not None:
            return scope.resolve().geometry
        shapes = [run_scope(records.run_params(project, r)) for r in dict.fromkeys(runs)]
    except H3PipeError:
        return None
    known = [s for s in shapes if s is not None]
    if not known:
        return None
    import shapely

    return shapely.union_all(known)


def run_scope(params: Row) -> Any | None:
    """The polygon of the scope a run recorded in its parameters, resolved again; None
    when it cannot be (an area file since moved)."""
    try:
        return ScopeRef.recorded(params, "").resolve().geometry
    except H3PipeError:
        return None


def map_column(selection: Selection, column: str, what: Meaning) -> maps.CellMap:
    """The cells and values of ``column``; cells with no valid pixel (a zero count or
    coverage beside a null value) marked as nodata."""
    import pyarrow.compute as pc

    table = selection.table
    if column not in table.column_names:
        raise UsageError(f"dataset '{selection.dataset}' has no column '{column}'"
                         + suggest(column, selection.columns)
                         + f" (columns: {', '.join(selection.columns)})")
    cells = grid.ids(table.column("h3_index"))
    values = numbers(table.column(column), column)
    nodata = np.full(len(values), what.null_is_nodata, dtype=bool)
    if what.nodata_column and what.nodata_column in table.column_names:
        nodata = pc.fill_null(pc.equal(table.column(what.nodata_column), 0), False)
        nodata = np.asarray(nodata.to_numpy(zero_copy_only=False), dtype=bool)
    title = f"{selection.dataset}: {column}"
    subtitle = f"{selection.label} · drawn {dt.date.today().isoformat()}"
    return maps.CellMap(cells, values, nodata, selection.resolution, title, subtitle,
                        selection.outline)


def numbers(values: Any, column: str) -> np.ndarray:
    import pyarrow as pa

    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
            or pa.types.is_boolean(values.type)):
        raise UsageError(f"column '{column}' holds {values.type}, not numbers: it cannot be "
                         "drawn on a colour scale")
    out = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(out, dtype=np.float64)


def style_for(what: Meaning, *, diverging: bool = False, center: float = 0.0,
              vmin: float | None = None, vmax: float | None = None,
              cmap: str | None = None) -> maps.Style:
    kind = what.kind if what.kind == "categorical" else ("diverging" if diverging
                                                         else "sequential")
    return maps.Style(kind, what.label, what.classes, vmin, vmax, center, cmap)


def map_dataset(project: ProjectConfig, dataset: str, column: str | None, out: Path, *,
                size: tuple[int, int] = (1200, 900), style: dict[str, Any] | None = None,
                **given: Any) -> tuple[str, dict[str, Any]]:
    """``h3pipe map``: draw one column of the dataset over one scope to ``out``; returns
    the column drawn and the facts :func:`h3pipe.report.maps.draw` reports."""
    extras.require("report")  # before reading any row
    maps.check_format(out)
    maps.check_request(size, (style or {}).get("vmin"), (style or {}).get("vmax"))
    selection = select(project, dataset, **given)
    if not selection.columns:
        raise ConfigError(f"dataset '{dataset}' has no statistic column to draw")
    column = column or selection.columns[0]
    what = meaning(project, dataset, column, selection.table.column_names)
    facts = maps.draw(map_column(selection, column, what), style_for(what, **(style or {})),
                      out, size=size)
    return column, facts


__all__ = ["Selection", "map_column", "map_dataset", "numbers", "run_scope", "select",
           "style_for"]
