"""Ctrl-C, SIGTERM and a cancel on a run whose workers are threads of its own process: the
running batches finish within the grace period, the run ends interrupted with the right
exit code, and its completed tasks are kept for the resume (as with worker processes,
tests/cli/test_signals.py)."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.waiting import wait_until

BBOX = "29.0,-2.2,29.2,-2.0"


@pytest.fixture
def project(tmp_path):
    """Resolution 11 over a 0.2-degree box in batches of 20 cells: thousands of tasks."""
    data = np.random.default_rng(1).normal(100, 10, (400, 400)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.98, res=0.0006)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=11,
                                                        batch_size=20)})


def _catalog(project, sql: str):
    try:
        with contextlib.closing(sqlite3.connect(
                (project / ".h3pipe" / "catalog.sqlite").as_uri() + "?mode=rw", uri=True,
                timeout=5)) as db:
            return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # no catalog, or not migrated yet
        return None


def _start(project) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "--project", str(project), "run", "p", "--bbox", BBOX,
         "--workers", "2", "--grace", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={k: v for k, v in os.environ.items() if k != "H3PIPE_THREADS"})

    def two_workers_done() -> bool:
        assert proc.poll() is None, proc.communicate(timeout=30)
        rows = _catalog(project, "SELECT DISTINCT worker FROM tasks WHERE status = 'completed'")
        return rows is not None and len(rows) == 2

    try:
        wait_until(two_workers_done, 90, "tasks completed by both workers")
    except BaseException:
        proc.kill()
        proc.communicate(timeout=30)
        raise
    return proc


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_a_signal_ends_a_run_on_threads_cleanly(project, sig, code, word):
    proc = _start(project)
    # Threads, not processes: the run starts no child but Python's resource tracker.
    assert not [c for c in psutil.Process(proc.pid).children(recursive=True)
                if "spawn_main" in " ".join(c.cmdline())]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == word
    assert "Traceback" not in err
    (status, error), = _catalog(project, "SELECT status, error FROM runs")
    assert status == "interrupted"
    assert error.startswith(f"interrupted ({sig.name})") and "left for the resume" in error
    # Every task the threads finished is recorded completed; none is left 'running'.
    states = dict(_catalog(project, "SELECT status, count(*) FROM tasks GROUP BY status"))
    assert states.get("completed", 0) >= 2 and "running" not in states


def test_runs_cancel_stops_a_run_on_threads(project, cli):
    proc = _start(project)
    (run_id,), = _catalog(project, "SELECT run_id FROM runs")
    r = cli("--project", project, "runs", "cancel", run_id)
    assert r.exit_code == 0 and "asked run" in r.stdout
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, 143), err
    assert err.strip().splitlines()[-1] in ("terminated", "cancelled")
    (status,), = _catalog(project, "SELECT status FROM runs")
    assert status == "interrupted"


BUSY_S = 40  # one batch of 40 s in one C call that releases the GIL, as a GDAL read does


def test_the_grace_period_ends_a_run_whose_threads_are_mid_batch(tmp_path):
    """Past the grace period the run stops, its threads still deep in a batch: they cannot
    be killed, and need not be (daemons, whose results are never read)."""
    tif = write_raster(tmp_path / "r.tif", np.ones((200, 200), "float32"), west=28.95,
                       north=-1.85, res=0.001)
    project = write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                            pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=7,
                                                           batch_size=5)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "--project", str(project), "run", "p", "--bbox",
         "29.0,-2.0,29.1,-1.9", "--workers", "2", "--grace", "1"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**{k: v for k, v in os.environ.items() if k != "H3PIPE_THREADS"},
             "H3PIPE_FAULTS": f"batch:busy={BUSY_S}"})
    try:
        busy = 0
        deadline = time.monotonic() + 90
        assert proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            while busy < 2 and time.monotonic() < deadline:  # both threads in a batch
                if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    line = proc.stderr.readline()
                    assert line, "the run ended before its batches started"
                    busy += line.startswith("fault: busy")
        assert busy == 2, "the two threads never were both in a batch"
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=BUSY_S + 20)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert took < 8, f"the stop took {took:.1f} s"  # the grace period, not the batches
    (status,), = _catalog(project, "SELECT status FROM runs")
    assert status == "interrupted"
