"""What a published column means, read off the pipeline and source that made it:
:func:`meaning` gives a :class:`Meaning` (units, how to colour it, a categorical source's
classes) so maps and reports label numbers the way the YAML declared them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from h3pipe.errors import H3PipeError
from h3pipe.spec import PipelineSpec, SourceSpec, StepSpec

SHARES = re.compile(r"^(coverage|frac_.+|hist_.+)$")
IN_UNITS = re.compile(r"^(mean|min|max|median|stdev|sum|q\d+|p\d+|quantile_.+)$")
CLASSES = ("majority", "minority", "mode")


@dataclass(frozen=True)
class Meaning:
    """How a column reads: ``label`` for a colour bar (its statistic and units), ``kind``
    sequential or categorical, ``classes`` when its values are a source's classes."""

    column: str
    label: str
    kind: str = "sequential"
    units: str | None = None
    classes: tuple[tuple[float, str], ...] = ()
    source: SourceSpec | None = None
    nodata_column: str | None = None  # a column that is 0 where no pixel was valid
    null_is_nodata: bool = False  # a null here can only mean that no pixel was valid


def meaning(project: Any, dataset: str, column: str, columns: list[str]) -> Meaning:
    """The column's meaning from the project's pipeline of ``dataset``; a plain label when
    the project no longer has it (or cannot be loaded). ``columns``: all the dataset's."""
    return meanings(project, dataset, [column], columns)[column]


def meanings(project: Any, dataset: str, wanted: list[str], columns: list[str]
             ) -> dict[str, Meaning]:
    """:func:`meaning` of each wanted column, reading the project once."""
    try:
        sources, pipelines, _ = project.load()
    except H3PipeError:
        sources, pipelines = {}, {}
    made = [p for p in pipelines.values() if p.dataset == dataset]
    out = {}
    for column in wanted:
        found = (_in_pipeline(p, sources, column, columns) for p in made)
        out[column] = next((m for m in found if m is not None), Meaning(column, column))
    return out


def _in_pipeline(pipeline: PipelineSpec, sources: dict[str, SourceSpec], column: str,
                 columns: list[str]) -> Meaning | None:
    for step in pipeline.steps:
        if step.output != "h3_stats":
            continue
        if step.operation == "zonal_stats" and step.source in sources:
            found = _zonal(step, sources[step.source], column, columns)
        else:
            found = _aggregated(step, column)
        if found is not None:
            return found
    return None


def _zonal(step: StepSpec, source: SourceSpec, column: str, columns: list[str]
           ) -> Meaning | None:
    band, stat = _band_and_stat(source, column)
    count = f"{band}_count" if band else "count"
    nodata = count if count in columns else ("coverage" if "coverage" in columns else None)
    # Without min_coverage, zonal statistics are null only where no pixel was valid.
    only_nodata = nodata is None and "min_coverage" not in step.params
    measure = source.measures().get(band or "", source.measure)
    units = source.units
    if stat in CLASSES and measure == "categorical":
        return Meaning(column, f"{column} (class)", "categorical", None, source.classes,
                       source, nodata, only_nodata)
    if stat in ("count", "variety"):
        label, units = column + (" (pixels)" if stat == "count" else " (classes)"), None
    elif SHARES.match(stat):
        label, units = f"{column} (share of the cell, 0 to 1)", None
    elif stat == "cell_area_km2":
        label, units = f"{column} (km²)", "km²"
    elif stat == "density":
        units = f"{units or 'units'}/km²"
        label = f"{column} ({units})"
    elif IN_UNITS.match(stat) or stat in CLASSES:
        label = f"{column} ({units})" if units else column
    else:
        return None
    return Meaning(column, label, "sequential", units, (), source, nodata, only_nodata)


def _band_and_stat(source: SourceSpec, column: str) -> tuple[str | None, str]:
    for band in source.band_names:
        if column.startswith(f"{band}_"):
            return band, column[len(band) + 1:]
    return None, column


def _aggregated(step: StepSpec, column: str) -> Meaning | None:
    for agg in step.params.get("aggregations", []):
        if agg.get("name") != column:
            continue
        function = agg.get("function")
        if function == "share":
            return Meaning(column, f"{column} (share, 0 to 1)")
        if function == "count":
            return Meaning(column, f"{column} (count)")
        return Meaning(column, f"{column} ({function} of {agg.get('column', 'rows')})")
    return None


__all__ = ["Meaning", "meaning", "meanings"]
