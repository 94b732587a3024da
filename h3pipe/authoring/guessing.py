"""What a source's values are, guessed from a sample of pixels or a STAC collection's
words: :class:`Guess`, from :func:`guess_from_pixels` and :func:`guess_from_metadata`.

These are heuristics: every guess carries the reason it was made, so the person editing
the drafted YAML can judge it. :func:`suggest_resolutions` picks H3 levels for a pixel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

GUESSES = ("dem", "population", "landcover", "rgb", "unknown")
_THEMES = {"dem": "terrain", "population": "demographics", "landcover": "landcover",
           "rgb": "other", "unknown": "other"}
_STATS = {
    "dem": ("mean", "min", "max", "stdev"),
    "population": ("sum",),
    "landcover": ("majority", "minority", "variety"),
    "rgb": ("mean", "stdev"),
    "unknown": ("count", "mean"),
}
_UNITS = {"dem": "m", "population": "persons per pixel"}
# What the values are (see h3pipe.operations.measures): imagery is a quantity per point.
_MEASURES = {"dem": "intensive", "population": "extensive", "landcover": "categorical",
             "rgb": "intensive"}
# Words in a STAC collection's id, title or keywords that say what its values are.
_KEYWORDS = {
    "dem": ("elevation", "dem", "dsm", "dtm", "terrain", "height", "topography", "bathymetry"),
    "population": ("population", "worldpop", "people", "inhabitants"),
    "landcover": ("land cover", "landcover", "land-cover", "land use", "landuse", "lulc"),
}
_METRE_UNITS = {"m", "metre", "meter", "metres", "meters"}

# Heuristic thresholds, all on the sampled valid pixels.
_MAX_CLASSES = 64  # an integer raster with at most this many values is categorical
_DEM_RANGE = (-500.0, 9000.0)  # plausible elevations in metres (Dead Sea to Everest)
_SMOOTH = 0.15  # mean |neighbour difference| / (p98 - p2) at most, for a smooth surface
_SKEWED = 5.0  # skewness at least: a few pixels far above the rest (people in towns)
_ZERO_INFLATED = 0.3  # share of zeros at least: empty land between settlements
_POP_P95 = 1000.0  # 95% of people-per-pixel values stay below this


@dataclass(frozen=True)
class Guess:
    """What the values are (one of :data:`GUESSES`) and why it was thought so."""

    name: str
    reason: str

    @property
    def theme(self) -> str:
        return _THEMES[self.name]

    @property
    def stats(self) -> tuple[str, ...]:
        return _STATS[self.name]

    @property
    def units(self) -> str | None:
        return _UNITS.get(self.name)

    @property
    def measure(self) -> str | None:
        return _MEASURES.get(self.name)


UNKNOWN = Guess("unknown", "")


# -- what the pixels look like -----------------------------------------------------------

@dataclass(frozen=True)
class SampleStats:
    """Summary of the valid pixels read from a decimated sample of band 1."""

    pixels: int
    min: float
    max: float
    p2: float
    median: float
    p95: float
    p98: float
    zero_fraction: float
    distinct: int
    skewness: float
    roughness: float  # mean |difference| between neighbours / (p98 - p2); small = smooth


def sample_stats(samples: list[np.ma.MaskedArray]) -> SampleStats | None:
    """The summary of every valid pixel of ``samples``; ``None`` when there is none."""
    values = np.concatenate([s.compressed().astype("float64") for s in samples])
    if values.size == 0:
        return None
    p2, median, p95, p98 = np.percentile(values, [2, 50, 95, 98])
    std = float(values.std())
    skew = float(np.mean((values - values.mean()) ** 3) / std ** 3) if std > 0 else 0.0
    return SampleStats(
        pixels=int(values.size), min=float(values.min()), max=float(values.max()),
        p2=float(p2), median=float(median), p95=float(p95), p98=float(p98),
        zero_fraction=float(np.count_nonzero(values == 0) / values.size),
        distinct=int(np.unique(values).size), skewness=skew,
        roughness=_roughness(samples, float(p98 - p2)),
    )


def _roughness(samples: list[np.ma.MaskedArray], spread: float) -> float:
    """Mean |difference| between neighbouring pixels, relative to ``spread``."""
    diff_sum, diff_n = 0.0, 0
    for s in samples:
        grid = np.ma.filled(s.astype("float64"), np.nan)
        for a, b in ((grid[:, 1:], grid[:, :-1]), (grid[1:], grid[:-1])):
            # Pairs of zeros say nothing about smoothness (sea, empty land): skip them.
            keep = ~np.isnan(a) & ~np.isnan(b) & ((a != 0) | (b != 0))
            d = np.abs(a[keep] - b[keep])
            diff_sum += float(d.sum())
            diff_n += int(d.size)
    if diff_n == 0:
        return 0.0
    if spread > 0:
        return diff_sum / diff_n / spread
    return math.inf if diff_sum > 0 else 0.0


def _is_integer(dtype: str | None) -> bool:
    return dtype is not None and np.dtype(dtype).kind in "iu"


def _num(value: float) -> str:
    """A value as people read it: 21425, 1756, 0.2388."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def guess_from_pixels(count: int | None, dtype: str | None, s: SampleStats | None) -> Guess:
    """What band 1 holds, from its band count, data type and sampled values."""
    if count in (3, 4) and dtype == "uint8":
        return Guess("rgb", f"{count} bands of uint8, the layout of a colour image")
    if s is None:
        return Guess("unknown", "no valid pixel in the sample (all nodata?)")
    if s.distinct == 1:
        return Guess("unknown", f"every sampled pixel has the same value ({_num(s.min)})")
    integer = _is_integer(dtype)
    span = s.max - s.min + 1
    # A run of consecutive integers that fills its range is a quantised surface (a flat
    # DEM in whole metres), not a set of class codes.
    quantised = span >= 20 and s.distinct >= 0.8 * span and s.roughness <= _SMOOTH
    if integer and s.distinct <= _MAX_CLASSES and not quantised:
        return Guess("landcover", f"{dtype} with only {s.distinct} distinct values in the "
                                  f"sample: class codes of a categorical map")
    if (s.min >= 0 and s.p95 < _POP_P95
            and (s.skewness >= _SKEWED
                 or (s.zero_fraction >= _ZERO_INFLATED and s.roughness > _SMOOTH))):
        return Guess("population", (
            f"non-negative values, {s.zero_fraction:.0%} zeros, 95% below {_num(s.p95)} and "
            f"median {_num(s.median)}, with a long tail up to {_num(s.max)} (skewness "
            f"{s.skewness:.1f}): counts of people per pixel look like this"))
    continuous = not integer or dtype in ("int16", "int32", "uint16")
    lo, hi = _DEM_RANGE
    # p2..p98, not min..max: a few spikes or pits must not hide a DEM.
    if (continuous and s.p2 >= lo and s.p98 <= hi and s.roughness <= _SMOOTH
            and s.skewness < _SKEWED):
        return Guess("dem", f"{dtype} values {_num(s.min)}..{_num(s.max)} lie within "
                            f"plausible elevations ({_num(lo)}..{_num(hi)} m) and change "
                            f"smoothly between neighbours (roughness {s.roughness:.3f})")
    return Guess("unknown", f"{dtype} values {_num(s.min)}..{_num(s.max)} (median "
                            f"{_num(s.median)}, {s.distinct} distinct in the sample) match "
                            f"no known pattern")


# -- what a STAC collection says ---------------------------------------------------------

def metre_unit(unit: Any) -> bool:
    """Whether a raster:bands unit spells metres."""
    return str(unit).lower() in _METRE_UNITS


def guess_from_metadata(coll: dict[str, Any], unit: Any) -> Guess:
    """What a STAC collection holds, from its id, title, keywords and band unit."""
    words = [str(coll.get("id", "")), str(coll.get("title", "")),
             *(str(k) for k in coll.get("keywords") or [])]
    text = " " + " ".join(words).lower().replace("_", " ") + " "
    for guess, keys in _KEYWORDS.items():
        for k in keys:
            # Whole words only: 'dem' must not match 'demographics'.
            if any(f"{sep}{k}{end}" in text for sep in " -" for end in " -"):
                return Guess(guess, f"the collection's id, title or keywords mention '{k}'")
    if unit is not None and metre_unit(unit):
        return Guess("dem", f"the data asset's raster:bands unit is '{unit}'")
    return UNKNOWN


def combine(meta: Guess, pixels: Guess) -> Guess:
    """A collection's guess: its words win, and its first item's pixels confirm or
    contradict them (the reason says which); the pixels alone when the words are silent."""
    if meta.name != "unknown" and pixels.name not in ("unknown", meta.name):
        return Guess(meta.name, f"{meta.reason}, though the first item's pixels look like "
                                f"{pixels.name}: {pixels.reason}")
    if meta.name != "unknown":
        return Guess(meta.name, meta.reason + (f"; the first item's pixels agree: "
                                               f"{pixels.reason}"
                                               if pixels.name == meta.name else ""))
    if pixels.name != "unknown":
        return Guess(pixels.name, f"the first item's pixels: {pixels.reason}")
    return Guess("unknown", "neither the collection's title and keywords nor its pixels say "
                            "what the values are"
                            + (f" ({pixels.reason})" if pixels.reason else ""))


# -- what to compute -----------------------------------------------------------------------

def suggest_resolutions(resolution_m: tuple[float, float] | None) -> tuple[int, int] | None:
    """``(coarsest, finest)`` H3 resolutions worth computing for pixels of this size.

    Finest: the finest level whose average hexagon edge is at least 3 pixels, so a cell
    (about 2.6 edge^2) covers some 20 pixels or more and its statistics are not just the
    one or two pixels under it. Coarsest: five levels up (7^5, about 17,000 fine cells
    per coarse cell). 30 m pixels give (4, 9), as the predecessor catalog had for GLO-30.
    """
    if resolution_m is None:
        return None
    import h3

    pixel = max(resolution_m)
    finest = 0
    for res in range(16):
        if h3.average_hexagon_edge_length(res, unit="m") >= 3 * pixel:
            finest = res
    return (max(0, finest - 5), finest)
