"""What runs cost: :func:`estimate` (wall time and peak memory of a planned run on this
machine) from what earlier runs in the store measured, what a completed run records
for that (:func:`step_pixels`, :func:`peak_rss_mb`), and whether a run's work pays for
starting workers (:func:`pays_for_pool`): threads of the run's process for work that
releases the GIL, else processes.

Rates are per worker-second, from the tasks' own seconds: pixels per second for steps over
cells with a raster, rows per second for steps over rows. Without history, conservative
defaults (about half of what ``make bench`` measures on two cores) stand in, and say so.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from h3pipe.forecast.estimates import pixels_in_scope, tiles_touched
from h3pipe.forecast.memory import peak_memory
from h3pipe.forecast.outlook import Outlook
from h3pipe.operations import get_operation, on_threads
from h3pipe.planning.prepare import RunPlan
from h3pipe.storage.records import RunRecord

DEFAULT_PIXELS_PER_S = 4_000_000.0  # per worker, zonal statistics over cells
# What a cell costs beyond its pixels (its polygon, its row), per worker: the fixed part
# that makes resolution 9 slower than 6 over the same pixels (about 7 us of CPU per cell,
# half a degree of the demo DEM at resolutions 6 and 9, since outlines come in bulk).
CELL_SECONDS = 8e-6
# Per worker, a step over rows (features or an earlier step's), with no history: measured
# on 2 cores over 10 M stand-in buildings, about 200,000 a second for sample, 40,000 for a
# 100 m join and 2,000,000 for an aggregation (benchmarks/vector.py).
DEFAULT_ROWS_PER_S = 50_000.0
DEFAULT_OVERHEAD_S = 3.0  # start-up, planning, publication
# The main process, and each worker process, with no earlier run of the pipeline (see
# h3pipe.forecast.memory for the estimate from those): a run's processes peak at 1.2 to
# 1.5 GB together on 2 workers whatever the number of buildings (benchmarks/vector.py).
DEFAULT_MB = (400.0, 550.0)
# ... and each worker thread instead (or the run's process computing alone): its batch's
# windows and rows, the libraries being the process's. On two threads Rwanda's DEM at
# resolutions 6-9 and the FATHOM sweep peaked at 490-580 MB (benchmarks/memory.py).
DEFAULT_THREAD_MB = 75.0
# What a pool of worker processes adds to a run's wall time over computing in the run's own
# process: each worker's interpreter and imports (which the run's process has paid already)
# and the hand-over of batches and results; loading the compiled kernel is paid either way.
# On 2 cores a worker takes about 0.9 s to be ready, of which the kernel is 0.4 s.
POOL_START_S = 0.5
# What worker threads add instead, for work that releases the GIL (see
# h3pipe.operations.on_threads): no interpreter, imports or kernel to load again, only each
# thread opening its own tiles and handing its results over.
THREAD_START_S = 0.05


@dataclass(frozen=True)
class StepCost:
    step_id: str
    seconds: float
    how: str


@dataclass(frozen=True)
class Estimate:
    seconds: float
    peak_rss_mb: float
    basis: str  # where the rates came from
    steps: tuple[StepCost, ...]
    memory_basis: str = ""  # where the peak came from

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Rates:
    pixels: dict[str, float]  # operation -> pixels per worker-second
    rows: dict[str, float]  # operation -> rows per worker-second
    overhead_s: float | None
    runs: int


def estimate(plan: RunPlan, view: Outlook, history: list[dict[str, Any]],
             source_pixels: dict[str, int] | None = None,
             runs: list[RunRecord] | None = None) -> Estimate:
    """Wall time and peak memory of ``plan`` (``view`` gives each stage's rows), from the
    per-step throughput of earlier runs (:meth:`RunLog.throughput` rows) and the peaks of
    earlier runs of its pipeline (``runs``: run rows, see
    :func:`~h3pipe.forecast.memory.peak_memory`); ``source_pixels``: each raster's pixels
    in the scope, when already counted."""
    rates = _rates(history)
    pixels = step_pixels(plan, source_pixels)
    costs = []
    for stage in view.stages:
        per_row = stage.rows / max(1, len(stage.steps))
        for sid in stage.steps:
            op = plan.pipeline.step(sid).operation
            if sid in pixels:
                rate = rates.pixels.get(op, DEFAULT_PIXELS_PER_S)
                work = pixels[sid] / rate + len(plan.cells) * CELL_SECONDS
                costs.append(StepCost(sid, work / plan.workers,
                                      f"{pixels[sid]:,} pixels at {rate:,.0f}/s per worker, "
                                      + ("measured" if op in rates.pixels else "default")
                                      + f", and {CELL_SECONDS * 1e6:.0f} us per cell"))
            else:
                rate = rates.rows.get(op, DEFAULT_ROWS_PER_S)
                costs.append(StepCost(sid, per_row / rate / plan.workers,
                                      f"{per_row:,.0f} rows at {rate:,.0f}/s per worker, "
                                      + ("measured" if op in rates.rows else "default")))
    overhead = DEFAULT_OVERHEAD_S if rates.overhead_s is None else rates.overhead_s
    memory = peak_memory(plan.pipeline.id, len(plan.cells), plan.workers, runs or [])
    basis = (f"from {rates.runs} earlier run(s) in this store" if rates.runs else
             "no history yet: conservative defaults")
    processes = plan.workers > 1 and not on_worker_threads(plan, plan.workers)
    per_worker = DEFAULT_MB[1] if processes else DEFAULT_THREAD_MB
    kind = ("worker processes" if processes else "worker threads" if plan.workers > 1
            else "the run's process alone")
    return Estimate(sum(c.seconds for c in costs) + overhead,
                    memory.mb if memory else DEFAULT_MB[0] + per_worker * plan.workers,
                    basis, tuple(costs), memory.how if memory else
                    f"no earlier run of '{plan.pipeline.id}' on {plan.workers} worker(s): "
                    f"defaults for {kind}")


def _rates(history: list[dict[str, Any]]) -> _Rates:
    px: dict[str, list[float]] = {}
    rows: dict[str, list[float]] = {}
    busy: dict[str, float] = {}
    runs: dict[str, dict[str, Any]] = {}
    for h in history:
        params = h["params"]
        seconds = float(h["seconds"] or 0.0)
        if seconds <= 0 or "measured" not in params:
            continue
        runs[h["run_id"]] = params
        busy[h["run_id"]] = busy.get(h["run_id"], 0.0) + seconds / params.get("workers", 1)
        step_px = params["measured"].get("pixels", {}).get(h["step_id"])
        if step_px:
            # The pixels' share of the time: what the cells' fixed cost leaves.
            pixel_s = max(seconds - (h["rows_in"] or 0) * CELL_SECONDS, 0.1 * seconds)
            px.setdefault(h["operation"], []).append(step_px / pixel_s)
        elif h["rows_in"]:
            rows.setdefault(h["operation"], []).append(h["rows_in"] / seconds)
    overheads = [max(0.0, p["measured"]["wall_s"] - busy[r]) for r, p in runs.items()]
    return _Rates({op: statistics.median(v) for op, v in px.items()},
                  {op: statistics.median(v) for op, v in rows.items()},
                  statistics.median(overheads) if overheads else None, len(runs))


def step_pixels(plan: RunPlan, source_pixels: dict[str, int] | None = None
                ) -> dict[str, int]:
    """Pixels inside the scope of each step over cells that reads a raster (counted here
    for the sources ``source_pixels`` does not give)."""
    out: dict[str, int] = {}
    by_source: dict[str, int] = dict(source_pixels or {})
    for step in plan.pipeline.steps:
        source = step.source
        if step.input != "cells" or source is None or source not in plan.rasters:
            continue
        if source not in by_source:
            info = plan.rasters[source]
            by_source[source] = pixels_in_scope(info, plan.scope.geometry,
                                                tiles_touched(info, plan.scope.geometry))
        out[step.id] = by_source[source]
    return out


def work_seconds(plan: RunPlan) -> float | None:
    """Seconds the plan's batches would take on one worker at the default rates (which are
    conservative: they overestimate the work); None when a step's input is not known until
    the run reads it (a vector source's features)."""
    pixels = step_pixels(plan)
    rows: dict[str, int] = {}  # step -> rows it gives
    seconds = 0.0
    for stage in plan.stages:
        for sid in stage:
            step = plan.pipeline.step(sid)
            if step.input == "cells":
                n_in = len(plan.cells)
                seconds += pixels.get(sid, 0) / DEFAULT_PIXELS_PER_S + n_in * CELL_SECONDS
            elif step.input_step in rows:
                n_in = rows[step.input_step]
                seconds += n_in / DEFAULT_ROWS_PER_S
            else:
                return None
            rows[sid] = get_operation(step.operation).estimate_rows(n_in, len(plan.cells))[0]
    return seconds


def settle_workers(plan: RunPlan) -> RunPlan:
    """The plan on one worker, the run's own process, when nobody chose the workers
    (``plan.workers_chosen``) and its work does not pay for starting workers
    (:func:`pays_for_pool`); else as prepared."""
    if plan.workers_chosen or pays_for_pool(plan, plan.workers):
        return plan
    return replace(plan, workers=1, batch_size=plan.max_batch_size)


def pays_for_pool(plan: RunPlan, workers: int) -> bool:
    """Whether ``workers`` workers would finish ``plan`` sooner than the run's own process:
    the time they save on the work must exceed what starting them costs
    (:func:`start_seconds`). Work that cannot be estimated before the run is assumed to
    pay."""
    if workers <= 1:
        return False
    work = work_seconds(plan)
    return work is None or work * (1 - 1 / workers) > start_seconds(plan, workers)


def start_seconds(plan: RunPlan, workers: int) -> float:
    """What ``workers`` workers add to the run's wall time before they save any: worker
    threads when every step suits them (as the executor decides, stage by stage), else
    worker processes."""
    return THREAD_START_S if on_worker_threads(plan, workers) else POOL_START_S


def on_worker_threads(plan: RunPlan, workers: int) -> bool:
    """Whether ``workers`` workers of ``plan`` would be threads of the run's process (every
    step suits them: :func:`h3pipe.operations.on_threads`) rather than processes."""
    work = [(s.operation, s.params, "cells" if s.input == "cells" else "rows")
            for s in plan.pipeline.steps]
    return on_threads(work, workers)


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process plus its live children (the workers), from
    /proc; None where there is no /proc."""
    me = Path("/proc/self")
    if not me.exists():
        return None
    pids = [str(os.getpid())]
    for task in (me / "task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except OSError:
            continue
    total_kb = sum(_hwm_kb(pid) for pid in pids)
    return round(total_kb / 1024, 1) if total_kb else None


def _hwm_kb(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


__all__ = ["POOL_START_S", "THREAD_START_S", "Estimate", "StepCost", "estimate",
           "on_worker_threads", "pays_for_pool", "peak_rss_mb", "settle_workers",
           "start_seconds", "step_pixels", "work_seconds"]
