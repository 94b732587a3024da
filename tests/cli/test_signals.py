"""Ctrl-C, SIGTERM and a killed worker: the run ends in a known state, workers are gone,
and the exit code says what happened."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.0,-2.2,29.2,-2.0"


@pytest.fixture
def slow_project(tmp_path):
    # Resolution 11 over a 0.2-degree box with batches of 20 cells: thousands of tasks,
    # many seconds of work, so a signal lands mid-run.
    data = np.random.default_rng(1).normal(100, 10, (400, 400)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.98, res=0.0006)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=11,
                                                        batch_size=20)})


def _start(project):
    proc = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "--project", str(project), "run", "p", "--bbox", BBOX,
         "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    workers: list[psutil.Process] = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if "resource_tracker" not in " ".join(c.cmdline())]
    time.sleep(1.5)  # into the stage
    assert proc.poll() is None, proc.communicate()
    return proc, workers


def _run_status(project):
    import sqlite3

    db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")
    return db.execute("SELECT status, error FROM runs ORDER BY created_at DESC").fetchone()


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_signal_ends_the_run_cleanly(slow_project, sig, code, word):
    proc, workers = _start(slow_project)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert err.strip().splitlines()[-1] == word
    assert "Traceback" not in err
    time.sleep(0.3)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert _run_status(slow_project) == ("failed", word)


def test_a_killed_worker_fails_the_run_instead_of_hanging(slow_project):
    proc, workers = _start(slow_project)
    workers[0].kill()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert "died (exit code -9)" in last and "batch" in last
    status, error = _run_status(slow_project)
    assert status == "failed" and "died" in error


def test_runs_cancel_stops_a_run_started_elsewhere(slow_project, cli):
    proc, workers = _start(slow_project)
    run_id = _running_id(slow_project)
    r = cli("--project", slow_project, "runs", "cancel", run_id)
    assert r.exit_code == 0 and "asked run" in r.stdout
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (130, 143)
    assert err.strip().splitlines()[-1] in ("terminated", "cancelled")
    status, _ = _run_status(slow_project)
    assert status == "failed"
    r = cli("--project", slow_project, "runs", "cancel", run_id)
    assert r.exit_code == 2 and "is not running" in r.stderr
    # It resumes where it stopped.
    r = cli("--project", slow_project, "run", "p", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout


def _running_id(project):
    import sqlite3

    db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")
    return db.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchone()[0]


def test_a_cancel_request_from_another_host_stops_the_run_between_tasks(slow_project):
    import sqlite3

    proc, _ = _start(slow_project)
    run_id = _running_id(slow_project)
    db = sqlite3.connect(slow_project / ".h3pipe" / "catalog.sqlite", timeout=30)
    db.execute("UPDATE runs SET cancel_requested_at = '2026-01-01T00:00:00+00:00' "
               "WHERE run_id = ?", (run_id,))  # what 'runs cancel' on another host writes
    db.commit()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "cancelled"
    assert _run_status(slow_project) == ("failed", "cancelled")
