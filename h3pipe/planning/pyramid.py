"""Several resolutions in one command: :func:`resolutions` reads ``--resolution 4-9``
(or ``4,6,8``, or a pipeline's ``defaults.resolutions``), and :func:`unshared` says whether
they can be one run that reads every pixel once.

Each resolution is exact: its cells' statistics come from the pixels themselves, never from
the finer cells' (H3 cells do not nest exactly, and a mean of means weighs cells wrongly),
and an extensive variable's sums are checked at every resolution. A pipeline whose steps
are ``zonal_stats`` over the cells and then steps that work row by row (``filter``,
``transform``) computes all its resolutions in **one run**: each batch holds the finest
resolution's cells of a few coarse parents and the coarser resolutions' cells anchored
there (:func:`h3pipe.planning.scope.shared_blocks`), its windows are read once, and the
kernel fills every cell's ring with its own coverage fractions. Rows are told apart by
their H3 index (its resolution is in it) and published per resolution. Other pipelines
(an aggregation or an assignment at the run's resolution, features, a sweep) run each
resolution as its own run, as several countries do (:mod:`h3pipe.planning.many`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h3pipe.resolutions import parse

if TYPE_CHECKING:
    from h3pipe.config.project import ProjectConfig
    from h3pipe.spec import PipelineSpec, SourceSpec

# Steps over an earlier step's rows that work row by row, whatever the rows' resolution.
ROW_WISE = frozenset({"filter", "transform"})


def resolutions(given: str | None, defaults: dict[str, Any]) -> list[int | None]:
    """What to run: the resolutions given, else the pipeline's ``defaults.resolutions``,
    else [None] (one run at ``defaults.resolution``)."""
    if given is not None:
        return list(parse(given))
    declared = defaults.get("resolutions")
    if declared is None:
        return [None]
    if isinstance(declared, str):
        return list(parse(declared, "defaults.resolutions"))
    return sorted(set(declared))


def of_pipeline(project: ProjectConfig, pipeline: str, given: str | None) -> list[int | None]:
    """:func:`resolutions` for a pipeline of ``project`` (what 'run' runs and 'plan'
    plans); an unknown pipeline gives [None] here and its error where it is loaded."""
    pipelines = project.load()[1]
    defaults = pipelines[pipeline].defaults if pipeline in pipelines else {}
    return resolutions(given, defaults)


def unshared(pipeline: PipelineSpec, sources: dict[str, SourceSpec]) -> str | None:
    """Why ``pipeline``'s resolutions cannot share one run's reads (None when they can):
    every step must be ``zonal_stats`` over the cells or a row-wise step over an earlier
    step's rows, with no sweep."""
    if pipeline.matrix or any(sources[s.source].dimensions is not None
                              for s in pipeline.steps if s.source in sources):
        return "it sweeps scenarios"
    for step in pipeline.steps:
        if step.input == "cells" and step.operation == "zonal_stats":
            continue
        if step.input_step is not None and step.operation in ROW_WISE:
            continue
        what = "features" if step.input != "cells" and step.input_step is None else \
            f"'{step.operation}'"
        return f"step '{step.id}' runs {what} at the run's resolution"
    return None


def why_unshared(project: ProjectConfig, pipeline: str) -> str | None:
    """:func:`unshared` for a pipeline of ``project`` (None for an unknown one: its error
    comes where it is loaded)."""
    sources, pipelines, _ = project.load()
    if pipeline not in pipelines:
        return None
    return unshared(pipelines[pipeline], sources)


def label(levels: list[int]) -> str:
    """``5-9`` for a range, ``4,6,8`` otherwise: how a run names its resolutions."""
    if levels == list(range(levels[0], levels[-1] + 1)) and len(levels) > 1:
        return f"{levels[0]}-{levels[-1]}"
    return ",".join(str(r) for r in levels)


__all__ = ["ROW_WISE", "label", "of_pipeline", "parse", "resolutions", "unshared",
           "why_unshared"]
