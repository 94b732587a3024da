"""What a raster's numbers mean, and which statistics suit them: :data:`MEASURES` and
:func:`measure_problems`.

A source (or one of its bands) declares ``measure:``

* ``intensive``: a quantity per point (elevation, flood depth, temperature). Means, ranges
  and quantiles make sense; a plain sum depends on the pixel size and does not.
  With ``weights: area`` the sum is the area integral (depth x m2 = m3), which does.
* ``extensive``: an amount per pixel (people, tonnes). Sums are what count; they must add
  up (see h3pipe.execution.balance), and a mean or quantile of amounts per pixel changes with
  the pixel size, so they are refused; ``density`` (sum per km2) is the intensive view.
* ``categorical``: class codes (land cover). Only counts, shares and modes mean anything.

A source with no ``measure`` is checked against nothing.
"""

from __future__ import annotations

import re

MEASURES = ("intensive", "extensive", "categorical")

_QUANTILE = re.compile(r"^(median|quantile_\d+)$")

# Why a statistic does not suit a measure (None: it does), by measure.
_WHY_NOT: dict[str, dict[str, str]] = {
    "intensive": {
        "sum": "the sum of an intensive variable grows with the pixel count; use mean, or "
               "weights: area for its area integral",
        "density": "density is a sum per km2, for an extensive variable; use mean",
        "fractions": "fractions are class shares, for a categorical variable; use histogram",
        "majority": "the most common value of a continuous variable is noise; use median",
        "minority": "the least common value of a continuous variable is noise; use min",
        "variety": "the number of distinct values of a continuous variable is noise",
    },
    "extensive": {
        "mean": "the mean of an extensive variable depends on the pixel size; use density "
                "(sum per km2) or sum",
        "stdev": "the spread of amounts per pixel depends on the pixel size; use sum or "
                 "density",
        "quantile": "quantiles of amounts per pixel depend on the pixel size; use sum or "
                    "density",
        "fractions": "fractions are class shares, for a categorical variable",
        "histogram": "a histogram of amounts per pixel depends on the pixel size",
        "majority": "an extensive variable has no classes; use sum",
        "minority": "an extensive variable has no classes; use sum",
        "variety": "an extensive variable has no classes; use sum",
    },
    "categorical": {
        s: "a categorical variable holds class codes, not quantities; use fractions, "
           "majority or variety"
        for s in ("sum", "mean", "min", "max", "stdev", "quantile", "density", "histogram")
    },
}


def why_not(stat: str, measure: str, *, weights: str = "fraction") -> str | None:
    """Why ``stat`` makes no sense for a variable of ``measure`` (None when it does)."""
    if measure == "intensive" and stat == "sum" and weights == "area":
        return None
    key = "quantile" if _QUANTILE.match(stat) else stat
    return _WHY_NOT.get(measure, {}).get(key)


def measure_problems(stats: list[str], measure: str, *, weights: str = "fraction",
                     where: str = "") -> list[tuple[tuple[str | int, ...], str]]:
    """One finding per statistic that ``measure`` refuses (path ``("stats", i)``)."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for i, stat in enumerate(stats):
        why = why_not(stat, measure, weights=weights) if isinstance(stat, str) else None
        if why:
            found.append((("stats", i), f"'{stat}' of {measure} source{where}: {why}"))
    if measure == "extensive" and weights == "area":
        found.append((("weights",), f"weights: area on an extensive source{where} would "
                      "multiply amounts per pixel by area; extensive values are already "
                      "totals per pixel"))
    return found


__all__ = ["MEASURES", "measure_problems", "why_not"]
