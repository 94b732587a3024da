"""Several resolutions in one command: :func:`resolutions` reads ``--resolution 4-9``
(or ``4,6,8``, or a pipeline's ``defaults.resolutions``).

Each resolution is its own exact run: its cells' statistics come from the pixels
themselves, never from the finer cells' (H3 cells do not nest exactly, and a mean of
means weighs cells wrongly), and an extensive variable's sums are checked at every
resolution. Each run reads the pixels it needs again; its record, lock and resume are
its own, as for several countries (:mod:`h3pipe.engine.many`).
"""

from __future__ import annotations

from typing import Any

from h3pipe.resolutions import parse


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


__all__ = ["parse", "resolutions"]
