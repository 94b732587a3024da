"""SIGKILL at chosen moments of a run (mid-write included), and at random ones, then a
resume: the results are those of an uninterrupted run, with no duplicate and no missing
cell. The moments are reached through H3PIPE_FAULTS (h3pipe/faults.py), so each case
kills exactly where it says."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"


def _project(root, tif, store=None):
    return write_project(root, sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean", "count", "max"],
                                                        resolution=9, batch_size=40)},
                         settings=f"store: {store}\n" if store else None)


@pytest.fixture(scope="module")
def tif(tmp_path_factory):
    data = np.random.default_rng(5).normal(300, 30, (250, 250)).astype("float32")
    data[100:120, 40:200] = -9999  # nodata a cell may straddle
    return write_raster(tmp_path_factory.mktemp("crash") / "r.tif", data, west=29.0,
                        north=-1.95, res=0.001, nodata=-9999)


def _export(proj, out):
    from h3pipe.cli import main

    assert main(["--project", str(proj), "export", "ds", "-o", str(out)]) == 0
    return pq.read_table(out).to_pylist()


@pytest.fixture(scope="module")
def uninterrupted(tif, tmp_path_factory):
    from h3pipe.cli import main

    root = tmp_path_factory.mktemp("fresh")
    proj = _project(root / "p", tif)
    assert main(["--project", str(proj), "-q", "run", "p", "--bbox", BBOX, "--workers", "2"]) == 0
    rows = _export(proj, root / "fresh.parquet")
    assert len(rows) > 100
    return rows


def _run(proj, faults=""):
    return subprocess.run(
        [sys.executable, "-m", "h3pipe", "--project", str(proj), "-q", "run", "p", "--bbox",
         BBOX, "--workers", "2"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "H3PIPE_FAULTS": faults})


def _resume_and_compare(cli, proj, tmp_path, uninterrupted):
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    assert "completed" in r.stdout
    rows = _export(proj, tmp_path / "resumed.parquet")
    cells = [row["h3_index"] for row in rows]
    assert len(cells) == len(set(cells)), "a cell was written twice"
    assert rows == uninterrupted
    shown = cli("--project", proj, "runs", "show", "latest").stdout
    # The step's count includes the tasks kept from before the kill.
    assert f"rows out {len(rows)}" in shown, shown


POINTS = [
    "write-partial:kill@3",        # a task's output half written (temp file, no rename)
    "task-output-written:kill@4",  # written, not yet recorded as completed
    "task-recorded:kill@6",        # recorded; the next task not started
    "stage-completed:kill@1",      # every task done, nothing published
    "result-written:kill@1",       # result file in place, catalog not pointing at it
    "published:kill@1",            # published, the run not yet marked completed
]


@pytest.mark.parametrize("fault", POINTS, ids=[p.split(":")[0] for p in POINTS])
def test_sigkill_at_each_point_then_resume_matches_an_uninterrupted_run(
        tif, tmp_path, cli, uninterrupted, fault):
    proj = _project(tmp_path / "p", tif)
    killed = _run(proj, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "running"  # as it died
    _resume_and_compare(cli, proj, tmp_path, uninterrupted)
    # Nothing half-written was left behind or published.
    assert not list((proj / ".h3pipe").rglob("*.tmp"))
    assert len(list((proj / ".h3pipe" / "results").rglob("*.parquet"))) == 1


def test_a_killed_rerun_leaves_the_earlier_results_untouched(tif, tmp_path, cli,
                                                             uninterrupted):
    proj = _project(tmp_path / "p", tif)
    assert _run(proj).returncode == 0
    before = _export(proj, tmp_path / "before.parquet")
    for fault in ("write-partial:kill@2", "result-written:kill@1"):
        r = subprocess.run(
            [sys.executable, "-m", "h3pipe", "--project", str(proj), "-q", "run", "p",
             "--bbox", BBOX, "--workers", "2", "--force"], capture_output=True, timeout=120,
            env={**os.environ, "H3PIPE_FAULTS": fault})
        assert r.returncode == -signal.SIGKILL
        assert _export(proj, tmp_path / "after.parquet") == before == uninterrupted


def test_repeated_sigkill_at_random_moments_then_resume(tif, tmp_path, cli, uninterrupted):
    proj = _project(tmp_path / "p", tif)
    rng = random.Random(20261122)
    db = proj / ".h3pipe" / "catalog.sqlite"
    kills = 0
    # Batches made to last 0.3 s or more: a run takes 10 s or more, each kill lands
    # somewhere in it, and each resume keeps what the previous attempts completed.
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "h3pipe", "--project", str(proj), "-q", "run", "p",
             "--bbox", BBOX, "--workers", "2"], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "H3PIPE_FAULTS": "batch:sleep=0.3"})
        time.sleep(rng.uniform(1.0, 4.0))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            break
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        psutil.wait_procs(children, timeout=10)
        kills += 1
    assert kills >= 1
    assert db.exists()
    _resume_and_compare(cli, proj, tmp_path, uninterrupted)


@pytest.mark.parametrize("fault", ["write-partial:kill@3", "result-written:kill@1"],
                         ids=["mid-copy", "inside-publish"])
def test_sigkill_on_postgis_then_resume(tif, tmp_path, cli, uninterrupted, pg_url, fault):
    proj = _project(tmp_path / "p", tif, store=pg_url)
    assert cli("--project", proj, "db", "upgrade").exit_code == 0
    killed = _run(proj, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _resume_and_compare(cli, proj, tmp_path, uninterrupted)
