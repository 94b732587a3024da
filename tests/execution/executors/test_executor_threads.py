"""Worker threads (h3pipe/execution/executors/threads.py) computing real zonal statistics
over a generated raster: side by side, each thread with its own GDAL datasets, the same
numbers as exactextract; a failing batch named; a stop taking back what had not started;
and the choice between threads and processes (machine.py)."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import h3
import numpy as np
import pytest
import rasterio.io

from h3pipe.errors import Cancelled, H3PipeError, OperationError
from h3pipe.execution.executors import MachineExecutor, ThreadExecutor, make_executor
from h3pipe.execution.executors.base import Outcome, Stopping, run_batches
from h3pipe.execution.executors.machine import suits_threads
from h3pipe.execution.executors.threads import ThreadPool
from h3pipe.execution.stopping import StopRequest
from h3pipe.operations import MAX_THREADS, Batch, on_threads
from h3pipe.sources.raster import close_tiles, describe_raster
from tests.conftest import write_raster
from tests.zonal_reference import assert_same, reference

STATS = ["count", "sum", "mean", "min", "max", "stdev"]


@pytest.fixture
def tif(tmp_path: Path) -> Path:
    # One tile, so that every batch reads the same file: shared datasets would show.
    rng = np.random.default_rng(29)
    data = (rng.random((400, 400)) * 1000).astype("float32")
    path = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.0, res=0.0005)
    yield path
    close_tiles()


def _batches(tif: Path, n: int = 8, stats: list[str] = STATS) -> list[Batch]:
    """``n`` batches of res-8 cells over the raster's middle, a row of cells each."""
    info = describe_raster("s", str(tif), tif.parent)
    cells = sorted(h3.geo_to_cells(h3.LatLngPoly(
        [(-1.04, 29.04), (-1.04, 29.16), (-1.16, 29.16), (-1.16, 29.04)]), 8))
    per = -(-len(cells) // n)
    return [Batch("r", "stats", i, "zonal_stats", {"stats": stats},
                  cells=tuple(cells[i * per:(i + 1) * per]), resolution=8, source_id="s",
                  raster=info) for i in range(n)]


def _by_cell(outcomes: list[Outcome]) -> dict[str, dict[str, float | None]]:
    rows: dict[str, dict[str, float | None]] = {}
    for o in outcomes:
        assert o.table is not None, o.error
        for row in o.table.to_pylist():
            rows[row.pop("h3_index")] = row
    return rows


def test_batches_on_two_threads_side_by_side_match_exactextract(tif):
    batches = _batches(tif)
    with ThreadExecutor(2, warm=["zonal_stats"]) as ex:
        out = [o for o in ex.run(batches) if isinstance(o, Outcome)]
    assert sorted(o.batch.number for o in out) == list(range(len(batches)))
    assert {o.worker_name for o in out} == {"w1", "w2"}
    # Both threads computed at the same time: their first batches' spans overlap.
    first = {name: min((o for o in out if o.worker_name == name), key=lambda o: o.started)
             for name in ("w1", "w2")}
    a, b = first["w1"], first["w2"]
    assert a.started is not None and b.started is not None
    assert a.started < b.started + b.seconds and b.started < a.started + a.seconds
    with rasterio.open(tif) as ds:
        expected = reference(ds, [c for bt in batches for c in bt.cells], STATS)
    assert_same(_by_cell(out), expected, STATS)


def test_each_thread_reads_its_own_gdal_datasets(tif, monkeypatch):
    """A GDAL dataset must never be read by two threads: the tiles kept open are each
    thread's own. Every read is noted with the dataset and the thread reading it."""
    readers: dict[int, set[int]] = defaultdict(set)
    real = rasterio.io.DatasetReader.read

    def noting(self, *args, **kwargs):
        readers[id(self)].add(threading.get_ident())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", noting)
    close_tiles()
    with ThreadExecutor(2, warm=["zonal_stats"]) as ex:
        out = [o for o in ex.run(_batches(tif, 12)) if isinstance(o, Outcome)]
    assert all(o.error is None for o in out)
    assert {o.worker_name for o in out} == {"w1", "w2"}
    shared = {ds: threads for ds, threads in readers.items() if len(threads) > 1}
    assert len(readers) == 2 and not shared, f"datasets read by several threads: {shared}"


def test_a_failing_batch_is_named_and_stops_new_batches(tif):
    batches = _batches(tif, 6)
    # Not a cell id: h3 refuses it inside the batch, a plain ValueError.
    batches[2] = Batch("r", "stats", 2, "zonal_stats", {"stats": STATS},
                       cells=("not-a-cell",), resolution=8, source_id="s",
                       raster=batches[2].raster)
    pool = ThreadPool(2, ["zonal_stats"])
    try:
        out = [o for o in run_batches(pool, batches) if isinstance(o, Outcome)]
    finally:
        pool.close()
    failed = [o for o in out if o.error is not None]
    assert len(failed) == 1 and failed[0].batch.number == 2
    error = failed[0].error
    assert isinstance(error, OperationError) and isinstance(error, H3PipeError)
    assert str(error).startswith("step 'stats' batch 2: ")
    assert pool.join(timeout=30)


def test_a_stop_takes_back_the_batches_not_started_and_lets_running_ones_finish(tif):
    batches = _batches(tif, 12)
    stop = StopRequest(grace_seconds=30)
    pool = ThreadPool(2, ["zonal_stats"])
    seen: list[Outcome | Stopping] = []
    try:
        with pytest.raises(Cancelled):
            for o in run_batches(pool, batches, stop=stop):
                seen.append(o)
                if len(seen) == 1:
                    stop.ask("cancel")
    finally:
        pool.close()
    stopping = [o for o in seen if isinstance(o, Stopping)]
    done = [o for o in seen if isinstance(o, Outcome)]
    # Two batches per thread were out (one running, one queued): after the first outcome,
    # three at most, which the threads may have started before the stop took back the
    # rest. Those were collected; nothing else was sent.
    assert len(stopping) <= 1
    assert all(o.error is None for o in done)
    assert 1 <= len(done) <= 1 + (2 * pool.depth - 1) < len(batches)
    if stopping:
        assert stopping[0].running == len(done) - 1
    assert pool.join(timeout=30)  # every thread ended


def test_threads_are_chosen_only_for_work_that_releases_the_gil(tif, monkeypatch):
    kernel = _batches(tif, 2)
    exact = _batches(tif, 2, ["mean", "median"])  # exactextract: not measured on threads
    assert suits_threads(kernel, 2) and not suits_threads(exact, 2)
    assert not suits_threads(kernel, MAX_THREADS + 1)  # more than threads scale to
    assert not on_threads([("filter", {"where": "true"}, "rows")], 2)
    monkeypatch.setenv("H3PIPE_THREADS", "0")
    assert not suits_threads(kernel, 2)


def test_closing_waits_for_idle_threads_to_end(tif):
    # Each thread's datasets close as it ends: on a run's normal end that is before the
    # executor's close returns, not during the interpreter's exit.
    pool = ThreadPool(2, ["zonal_stats"])
    out = [o for o in run_batches(pool, _batches(tif, 4)) if isinstance(o, Outcome)]
    assert len(out) == 4
    pool.close()
    assert pool.join(timeout=0)


def test_a_stage_of_kernel_work_starts_no_process(tif):
    with make_executor(2, warm=["zonal_stats"]) as ex:
        assert isinstance(ex, MachineExecutor)
        out = [o for o in ex.run(_batches(tif, 4)) if isinstance(o, Outcome)]
        assert ex._processes is None  # noqa: SLF001 - which kind started is the point
    assert {o.worker_name for o in out} <= {"w1", "w2"} and len(out) == 4
