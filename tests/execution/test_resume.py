"""Run identity, resuming after a kill, and --from-step: results identical to an
uninterrupted run, with no duplicate and no missing cell."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import psutil
import pyarrow.parquet as pq

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.waiting import wait_until

BBOX = "29.02,-2.18,29.18,-2.02"


def _project(root, tif):
    return write_project(root, sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean", "count"],
                                                        resolution=10, batch_size=25)})


def _tif(tmp_path):
    data = np.random.default_rng(9).normal(300, 30, (250, 250)).astype("float32")
    return write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.95, res=0.001)


def _export(cli, proj, out):
    assert cli("--project", proj, "export", "ds", "-o", out).exit_code == 0
    return pq.read_table(out).to_pylist()


def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path, cli):
    tif = _tif(tmp_path)
    proj = _project(tmp_path / "killed", tif)
    proc = subprocess.Popen([sys.executable, "-m", "h3pipe", "--project", str(proj), "run",
                             "p", "--bbox", BBOX, "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = proj / ".h3pipe" / "catalog.sqlite"

    def completed() -> int:
        assert proc.poll() is None, "the run ended before it could be killed"
        try:
            with contextlib.closing(sqlite3.connect(db.as_uri() + "?mode=rw", uri=True)) as c:
                return int(c.execute("SELECT count(*) FROM tasks WHERE status = 'completed'"
                                     ).fetchone()[0])
        except sqlite3.OperationalError:  # not made or not migrated yet
            return 0

    try:
        wait_until(lambda: completed() >= 20, 60, "20 completed tasks")
    except BaseException:
        proc.kill()
        proc.wait(timeout=30)
        raise
    workers = psutil.Process(proc.pid).children()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs(workers, timeout=10)
    con = sqlite3.connect(db)
    total = con.execute("SELECT count(*) FROM tasks").fetchone()[0]
    kept = con.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()[0]
    assert 0 < kept < total

    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout, r.stderr
    run_id = r.stdout.split()[1]
    # The second attempt computed only what the first had not finished.
    second = con.execute("SELECT count(*) FROM events WHERE run_id = ? AND kind = 'task' "
                         "AND id > (SELECT max(id) FROM events WHERE run_id = ? AND "
                         "kind = 'run' AND status = 'resumed')", (run_id, run_id)).fetchone()[0]
    assert second <= total - kept

    fresh = _project(tmp_path / "fresh", tif)
    assert cli("--project", fresh, "run", "p", "--bbox", BBOX, "--workers", "2").exit_code == 0
    resumed_rows = _export(cli, proj, tmp_path / "a.parquet")
    fresh_rows = _export(cli, fresh, tmp_path / "b.parquet")
    cells = [r["h3_index"] for r in resumed_rows]
    assert len(cells) == len(set(cells))
    assert resumed_rows == fresh_rows


def test_changed_data_is_a_new_run_and_from_step_recomputes(tmp_path, cli):
    tif = _tif(tmp_path)
    proj = _project(tmp_path / "p", tif)
    first = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert first.exit_code == 0
    assert "already completed" in cli("--project", proj, "run", "p", "--bbox", BBOX).stdout
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--from-step", "stats",
            "--workers", "1")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--from-step", "nope")
    assert r.exit_code == 2 and "not a step" in r.stderr
    # Rewriting the raster in place changes what the results depend on: a new run. The
    # file's size is the same; its modification time tells it apart, which a coarse clock
    # may give again: then it is set a second on (not slept for).
    before = tif.stat().st_mtime_ns
    data = np.full((250, 250), 7.0, dtype="float32")
    write_raster(tif, data, west=29.0, north=-1.95, res=0.001)
    if tif.stat().st_mtime_ns == before:
        os.utime(tif, ns=(tif.stat().st_atime_ns, before + 1_000_000_000))
    again = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert again.exit_code == 0 and " completed: " in again.stdout
    assert again.stdout.split()[1] != first.stdout.split()[1]
    rows = _export(cli, proj, tmp_path / "o.parquet")
    assert all(abs(r["mean"] - 7.0) < 1e-9 for r in rows) and len(rows) > 100


def test_resume_command_reruns_a_recorded_run(tmp_path, cli):
    proj = _project(tmp_path / "p", _tif(tmp_path))
    first = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    run_id = first.stdout.split()[1]
    r = cli("--project", proj, "resume", run_id)
    assert r.exit_code == 0 and "already completed" in r.stdout
    r = cli("--project", proj, "resume", run_id, "--from-step", "stats", "--workers", "1")
    assert r.exit_code == 0 and f"run {run_id} completed (resumed)" in r.stdout
    r = cli("--project", proj, "resume", "no-such-run")
    assert r.exit_code == 2 and "no run 'no-such-run'" in r.stderr


def _aoi(path):
    """A GeoJSON polygon inside the raster of ``_tif``."""
    import json

    ring = [[29.03, -2.17], [29.16, -2.15], [29.12, -2.03], [29.04, -2.05], [29.03, -2.17]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return path


def test_a_failed_aoi_run_resumes_from_its_recorded_scope(tmp_path, cli):
    tif = _tif(tmp_path)
    aoi = _aoi(tmp_path / "area.geojson")
    proj = _project(tmp_path / "p", tif)
    # The third batch fails (counted in the one process that computes with one worker).
    failed = subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(proj), "run",
                             "p", "--aoi", str(aoi), "--workers", "1"], capture_output=True,
                            text=True, env={**__import__("os").environ,
                                            "H3PIPE_FAULTS": "batch:fail@3"})
    assert failed.returncode == 1, failed.stderr
    con = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    run_id, status = con.execute("SELECT run_id, status FROM runs").fetchone()
    assert status == "failed"
    kept = con.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()[0]
    assert kept == 2

    r = cli("--project", proj, "resume", run_id, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert f"run {run_id} completed (resumed)" in r.stdout

    fresh = _project(tmp_path / "fresh", tif)
    assert cli("--project", fresh, "run", "p", "--aoi", aoi, "--workers", "1").exit_code == 0
    assert _export(cli, proj, tmp_path / "a.parquet") == _export(cli, fresh,
                                                                 tmp_path / "b.parquet")
