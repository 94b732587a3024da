"""Ctrl-C, SIGTERM and a killed worker: the run ends in a known state, workers are gone,
and the exit code says what happened."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import numpy as np
import psutil
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.waiting import wait_until

BBOX = "29.0,-2.2,29.2,-2.0"


def _project(tmp_path, batch_size):
    """Resolution 11 over a 0.2-degree box: about 200,000 cells."""
    data = np.random.default_rng(1).normal(100, 10, (400, 400)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.98, res=0.0006)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=11,
                                                        batch_size=batch_size)})


@pytest.fixture
def slow_project(tmp_path):
    # Batches of 20 cells: thousands of tasks, many seconds of work, so a signal lands
    # mid-run.
    return _project(tmp_path, 20)


def _start(project, *extra, faults=""):
    # Worker processes, which zonal statistics over cells would not get (threads): these
    # tests are about processes (tests/execution/executors/test_thread_stops.py: threads).
    proc = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "--project", str(project), "run", "p", "--bbox", BBOX,
         "--workers", "2", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "H3PIPE_FAULTS": faults, "H3PIPE_THREADS": "0"})
    try:
        workers = wait_until(lambda: _alive(proc) and _workers(proc), 60, "two workers")
        # Into the stage: a signal must not land before the run is even recorded.
        _wait_for_completed(project, proc, 1)
    except BaseException:
        proc.kill()
        proc.communicate(timeout=30)
        raise
    return proc, workers


def _alive(proc) -> bool:
    assert proc.poll() is None, proc.communicate(timeout=30)
    return True


def _workers(proc) -> list[psutil.Process] | None:
    """Its two pool workers (not the resource tracker), once both are there."""
    found = [c for c in psutil.Process(proc.pid).children(recursive=True)
             if "spawn_main" in " ".join(c.cmdline())]
    return found if len(found) == 2 else None


def _completed(project) -> int:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(
                (project / ".h3pipe" / "catalog.sqlite").as_uri() + "?mode=rw", uri=True,
                timeout=5)) as db:
            return int(db.execute("SELECT count(*) FROM tasks WHERE status = 'completed'"
                                  ).fetchone()[0])
    except sqlite3.OperationalError:  # no catalog, or not migrated yet
        return 0


def _wait_for_completed(project, proc, n: int) -> None:
    wait_until(lambda: _alive(proc) and _completed(project) >= n, 60,
               f"{n} completed task(s)")


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
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not [w for w in alive if w.status() != psutil.STATUS_ZOMBIE]
    status, error = _run_status(slow_project)
    assert status == "interrupted"
    assert error.startswith(f"interrupted ({sig.name})") and "left for the resume" in error


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
    assert status == "interrupted"
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
    status, error = _run_status(slow_project)
    assert status == "interrupted" and error.startswith("interrupted (cancelled)")


@pytest.fixture
def long_tasks(tmp_path):
    # A hundred tasks, each made to last 2 s (H3PIPE_FAULTS, below): a signal lands while
    # both workers are inside one.
    return _project(tmp_path, 2000)


SLOW_TASKS = "batch:sleep=2"


def _timeline(project):
    import sqlite3

    db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")
    return db.execute("SELECT kind, status, detail FROM events ORDER BY id").fetchall()


def test_sigterm_lets_running_tasks_finish_within_the_grace_period(long_tasks, cli):
    proc, _ = _start(long_tasks, "--grace", "60", faults=SLOW_TASKS)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, err
    assert "stop requested (SIGTERM)" in err
    events = _timeline(long_tasks)
    stop = next(i for i, e in enumerate(events) if e[1] == "stopping")
    running = int(events[stop][2].split(" for ")[1].split()[0])
    assert running >= 1
    after = [e for e in events[stop:] if e[0] == "task"]
    # Every task running when the signal came finished, and nothing new was started.
    assert [e[1] for e in after] == ["completed"] * running
    assert events[-1][:2] == ("run", "interrupted")
    status, _ = _run_status(long_tasks)
    assert status == "interrupted"
    # 'runs show' says so, and a resume completes the rest.
    r = cli("--project", long_tasks, "runs", "show", "latest")
    assert r.exit_code == 1 and "status:     interrupted" in r.stdout
    r = cli("--project", long_tasks, "run", "p", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout


@pytest.mark.parametrize("how", ["grace over", "second signal"])
def test_the_stop_is_immediate_once_the_grace_period_is_over(long_tasks, how):
    grace = "0.8" if how == "grace over" else "60"
    # Tasks of 4 s; signalled once the first round's two are recorded, the second round's
    # have just started: almost 4 s to go, past the grace period and the second signal.
    proc, _ = _start(long_tasks, "--grace", grace, faults="batch:sleep=4")
    _wait_for_completed(long_tasks, proc, 2)
    proc.send_signal(signal.SIGINT)
    if how == "second signal":  # once the first is taken (two pending SIGINTs are one)
        wait_until(lambda: _alive(proc) and any(e[1] == "stopping" for e in _timeline(
            long_tasks)), 30, "the run to record its stop")
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    events = _timeline(long_tasks)
    stop = next(i for i, e in enumerate(events) if e[1] == "stopping")
    # The tasks still running were abandoned (a resume recomputes them), not recorded.
    assert not [e for e in events[stop:] if e[0] == "task"]
    assert _run_status(long_tasks)[0] == "interrupted"
