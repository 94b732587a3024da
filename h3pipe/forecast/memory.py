"""How much memory a planned run will hold at its peak, summed over its processes:
:func:`peak_memory`, as a :class:`Memory` that says how it was estimated.

A run's peak is the libraries of each process (the run's own, and each worker process's;
worker threads share the run's), what the run's process holds per cell (the scope's cells,
their batches, the results it publishes) and each worker's working set for one batch
(windows of pixels, feature rows, every scenario's columns of a sweep). Those depend on the
pipeline far more than on anything a plan can count, so the estimate comes from earlier
runs of the same pipeline on as many workers, placed by scale: between the two nearest in
number of cells, along the line through them (cells on a log scale, as measured peaks grow:
Rwanda to DR Congo at resolution 9 is 100 times the cells for 1.2 times the memory); from
one such run, its peak moved by :data:`MB_PER_DECADE` per tenfold the cells. Runs of
other pipelines, or of other worker counts, say nothing of this one: without a run of its
own the defaults (:data:`h3pipe.forecast.costs.DEFAULT_MB`) stand in, and say so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from h3pipe.storage.records import RunRecord

# What a tenfold number of cells adds to a run's peak, when one earlier run is all there
# is: Rwanda at resolution 9 (212 k cells) 879 MB, DR Congo at 8 (2.8 M) 958 MB and at 9
# (19.9 M) 1,059 MB (benchmarks/results/scale.md), about 90 MB a decade.
MB_PER_DECADE = 90.0
# No estimate below this: a run's process with its libraries loaded.
FLOOR_MB = 150.0


@dataclass(frozen=True)
class Memory:
    mb: float
    how: str  # in words: from which runs, or the defaults


@dataclass(frozen=True)
class _Point:
    cells: int
    peak_mb: float


def peak_memory(pipeline_id: str, cells: int, workers: int,
                runs: Iterable[RunRecord]) -> Memory | None:
    """The peak (MB, summed over processes) of a run of ``pipeline_id`` over ``cells`` cells
    on ``workers`` workers, from ``runs`` (the store's earlier runs, of any
    pipeline: only completed runs of this pipeline on as many workers
    that measured their peak count); None without any."""
    points = _points(pipeline_id, workers, runs)
    if not points:
        return None
    x = _log(cells)
    if len(points) == 1:
        p = points[0]
        mb = p.peak_mb + MB_PER_DECADE * (x - _log(p.cells))
        return Memory(max(FLOOR_MB, mb), f"from 1 earlier run of '{pipeline_id}' "
                      f"({p.cells:,} cells, {p.peak_mb:,.0f} MB), "
                      f"{MB_PER_DECADE:.0f} MB per tenfold cells")
    a, b = _neighbours(points, x)
    slope = (b.peak_mb - a.peak_mb) / (_log(b.cells) - _log(a.cells))
    if not a.cells <= cells <= b.cells:
        slope = max(0.0, slope)  # beyond the runs measured: never less for more cells
    mb = a.peak_mb + slope * (x - _log(a.cells))
    return Memory(max(FLOOR_MB, mb), f"from {len(points)} earlier runs of '{pipeline_id}' "
                  f"on {workers} worker(s), by cells: {a.cells:,} ({a.peak_mb:,.0f} MB) "
                  f"and {b.cells:,} ({b.peak_mb:,.0f} MB)")


def _points(pipeline_id: str, workers: int, runs: Iterable[RunRecord]) -> list[_Point]:
    """One point per number of cells (the median peak of the runs with it), fewest first."""
    peaks: dict[int, list[float]] = {}
    for run in runs:
        peak = run.params.measured.get("peak_rss_mb")
        if (run.pipeline_id != pipeline_id or run.status != "completed"
                or run.params.workers != workers or not peak or not run.get("cells")):
            continue
        peaks.setdefault(int(run["cells"]), []).append(float(peak))
    return [_Point(c, statistics.median(v)) for c, v in sorted(peaks.items())]


def _neighbours(points: list[_Point], x: float) -> tuple[_Point, _Point]:
    """The two points whose segment holds ``x`` (log10 cells), else the two nearest ends."""
    for a, b in zip(points, points[1:], strict=False):
        if _log(a.cells) <= x <= _log(b.cells):
            return a, b
    return (points[0], points[1]) if x < _log(points[0].cells) else (points[-2], points[-1])


def _log(cells: int) -> float:
    return math.log10(max(1, cells))


__all__ = ["MB_PER_DECADE", "Memory", "peak_memory"]
