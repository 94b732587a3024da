"""Several resolutions in one command: :func:`resolutions` reads ``--resolution 4-9``
(or ``4,6,8``, or a pipeline's ``defaults.resolutions``).

Each resolution is its own exact run: its cells' statistics come from the pixels
themselves, never from the finer cells' (H3 cells do not nest exactly, and a mean of
means weighs cells wrongly), and an extensive variable's sums are checked at every
resolution. Each run reads the pixels it needs again; its record, lock and resume are
its own, as for several countries (:mod:`h3pipe.planning.many`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h3pipe.resolutions import parse

if TYPE_CHECKING:
    from h3pipe.config.project import ProjectConfig


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


__all__ = ["of_pipeline", "parse", "resolutions"]
