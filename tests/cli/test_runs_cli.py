"""``h3pipe runs list`` and ``runs show`` on a run whose process is gone: shown as dead at
once (pid gone on this host, or no heartbeat from another host), not only after
``h3pipe clean``; and the catalog row is left as it was."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import psutil

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"


def _project(tmp_path, resolution):
    data = np.random.default_rng(3).normal(20, 2, (250, 250)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.95, res=0.001)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"],
                                                        resolution=resolution, batch_size=10)})


def _row(proj):
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    try:
        return db.execute("SELECT run_id, status, pid FROM runs").fetchone()
    finally:
        db.close()


def _kill_once_running(proj):
    """Start a run in its own process and SIGKILL it once it is recorded as running."""
    proc = subprocess.Popen([sys.executable, "-m", "h3pipe", "--project", str(proj), "run",
                             "p", "--bbox", BBOX, "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            row = _row(proj)
        except sqlite3.OperationalError:  # no catalog or no table yet
            continue
        if row and row[1] == "running":
            break
    else:
        proc.kill()
        raise AssertionError("the run never started")
    assert proc.poll() is None, "the run ended before it could be killed"
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs(workers, timeout=10)  # the orphaned workers notice and leave
    return row[0], proc.pid


def test_a_killed_run_shows_dead_at_once(tmp_path, cli):
    proj = _project(tmp_path, resolution=10)  # thousands of cells: still working when killed
    run_id, pid = _kill_once_running(proj)
    listing = cli("--project", proj, "runs", "list")
    assert listing.exit_code == 0
    lines = [ln for ln in listing.stdout.splitlines() if run_id in ln]
    assert len(lines) == 1 and "running (dead)" in lines[0], listing.stdout
    shown = cli("--project", proj, "runs", "show", run_id)
    assert shown.exit_code == 1
    assert "status:     running (dead)\n" in shown.stdout
    assert f"dead:       pid {pid} is gone on this host;" in shown.stdout
    assert _row(proj)[1] == "running"  # shown, not recorded: 'clean' and 'run' record it
    cancel = cli("--project", proj, "runs", "cancel", run_id)
    assert cancel.exit_code == 2
    assert f"is not running (pid {pid} is gone on this host)" in cancel.stderr


def _plant(proj, cli):
    """A completed run's row rewritten as running on another host."""
    assert cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 0
    _sql(proj, "UPDATE runs SET status = 'running', host = 'another-host', pid = 4242, "
         "finished_at = NULL")


def _last_beat(proj, age_s):
    beat = (datetime.now(UTC) - timedelta(seconds=age_s)).isoformat()
    _sql(proj, "UPDATE runs SET heartbeat_at = ?", (beat,))


def _sql(proj, statement, params=()):
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    db.execute(statement, params)
    db.commit()
    db.close()


def test_another_hosts_run_is_dead_once_its_heartbeat_is_stale(tmp_path, cli):
    proj = _project(tmp_path, resolution=7)
    _plant(proj, cli)
    _last_beat(proj, 10)  # 10 s ago: alive, as far as anyone here can know
    listing = cli("--project", proj, "runs", "list").stdout
    assert "running" in listing and "dead" not in listing
    shown = cli("--project", proj, "runs", "show", "latest")
    assert "status:     running\n" in shown.stdout and "dead:" not in shown.stdout

    _last_beat(proj, 600)  # silent for ten minutes
    listing = cli("--project", proj, "runs", "list").stdout
    assert "running (dead)" in listing
    shown = cli("--project", proj, "runs", "show", "latest")
    assert shown.exit_code == 1
    found = re.search(r"^dead: +no heartbeat from another-host for (\d+) s;", shown.stdout,
                      re.MULTILINE)
    assert found and 600 <= int(found.group(1)) < 660, shown.stdout


def test_a_run_id_prefix_with_an_underscore_matches_only_itself(tmp_path, cli):
    data = np.ones((250, 250), dtype="float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.95, res=0.001)
    # 'a_b' read as a LIKE pattern would match 'axb' too.
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={name: zonal_pipeline(name, "s", ["mean"], dataset=name,
                                                         resolution=7)
                                    for name in ("a_b", "axb")})
    for name in ("a_b", "axb"):
        assert cli("--project", proj, "run", name, "--bbox", BBOX, "--workers", "1"
                   ).exit_code == 0
    r = cli("--project", proj, "runs", "show", "a_b-r7")
    assert r.exit_code == 0, r.stderr
    assert "a_b-r7-" in r.stdout and "axb-r7-" not in r.stdout
