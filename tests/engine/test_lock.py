"""One writer per run: a second invocation of the same run exits 75 naming the holder, or
waits with --wait; a dead holder's lock is taken over; of two started together one wins."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"


def _project(tmp_path, resolution=10):
    data = np.random.default_rng(5).normal(10, 1, (250, 250)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.95, res=0.001)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"],
                                                        resolution=resolution, batch_size=25)})


def _start(proj, *extra):
    return subprocess.Popen([sys.executable, "-m", "h3pipe", "--project", str(proj), "run",
                             "p", "--bbox", BBOX, "--workers", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_running(proj, timeout=60):
    db = proj / ".h3pipe" / "catalog.sqlite"
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.2)
        if db.exists():
            try:
                row = sqlite3.connect(db).execute(
                    "SELECT run_id, pid FROM runs WHERE status = 'running'").fetchone()
            except sqlite3.OperationalError:
                continue
            if row:
                return row
    raise AssertionError("the run never started")


def test_second_invocation_exits_75_naming_the_holder_or_waits(tmp_path, cli):
    proj = _project(tmp_path)
    first = _start(proj)
    try:
        run_id, pid = _wait_running(proj)
        r = cli("--project", proj, "run", "p", "--bbox", BBOX)
        assert r.exit_code == 75
        assert f"run {run_id} is already running, held by pid {pid} on " \
               f"{socket.gethostname()}" in r.stderr and "--wait" in r.stderr
        waiter = _start(proj, "--wait")
        out, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err
        assert "already completed" in out and "waiting" in err
    finally:
        first.communicate(timeout=120)
    assert first.returncode == 0


def test_two_started_together_one_wins(tmp_path):
    proj = _project(tmp_path, resolution=9)
    procs = [_start(proj) for _ in range(2)]
    codes = sorted(p.communicate(timeout=120) and p.returncode for p in procs)
    assert codes in ([0, 75], [0, 0])  # 0/0 when the second started after the first ended
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    assert db.execute("SELECT count(*), min(status) FROM runs").fetchone() == (1, "completed")


def _plant(proj, cli, host, pid, beat_age_s):
    """A run row that claims to be running, held by (host, pid), last beat that long ago."""
    assert cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 0
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    beat = (datetime.now(UTC) - timedelta(seconds=beat_age_s)).isoformat()
    db.execute("UPDATE runs SET status = 'running', host = ?, pid = ?, heartbeat_at = ?",
               (host, pid, beat))
    db.commit()


def test_a_dead_holders_lock_is_taken_over(tmp_path, cli):
    proj = _project(tmp_path, resolution=8)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _plant(proj, cli, socket.gethostname(), dead.pid, 0)
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout, r.stderr


def test_other_hosts_are_judged_by_their_heartbeat(tmp_path, cli):
    proj = _project(tmp_path, resolution=8)
    _plant(proj, cli, "another-host", 12345, 10)  # beat 10 s ago: alive
    r = cli("--project", proj, "run", "p", "--bbox", BBOX)
    assert r.exit_code == 75 and "on another-host" in r.stderr
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    old = (datetime.now(UTC) - timedelta(seconds=600)).isoformat()
    db.execute("UPDATE runs SET heartbeat_at = ?", (old,))  # silent for 10 minutes: dead
    db.commit()
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout, r.stderr
