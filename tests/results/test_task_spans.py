"""Where and when each task of a local run ran (``history.task_spans``, what a run report's
timeline per worker draws): pool workers are w1..wN, the run's own process is 'main', and a
task's span agrees with the seconds it measured."""

from __future__ import annotations

from datetime import datetime

import h3
import numpy as np
import pytest

from h3pipe import storage
from h3pipe.storage import history
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.tileserver import TileServer

RES = 7
BOX = (29.02, -2.18, 29.18, -2.02)  # minx, miny, maxx, maxy
BBOX = ",".join(str(v) for v in BOX)
BATCH = 5  # cells per task: about a dozen tasks in the box


@pytest.fixture
def project(tmp_path):
    data = np.random.default_rng(11).normal(30, 3, (400, 400)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=28.95, north=-1.9, res=0.001)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=RES)})


def _box_cells() -> set[str]:
    minx, miny, maxx, maxy = BOX
    ring = [(miny, minx), (miny, maxx), (maxy, maxx), (maxy, minx)]  # (lat, lng)
    return set(h3.polygon_to_cells(h3.LatLngPoly(ring), RES))


def _spans(project):
    with storage.open_store(".h3pipe", project, create=False) as store:
        run = history.latest_run(store.catalog)
        assert run is not None
        return history.task_spans(store.catalog, run["run_id"])


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _check_spans(spans) -> None:
    for t in spans:
        assert t["status"] == "completed" and t["attempts"] == 1
        start, end = _at(t["started_at"]), _at(t["finished_at"])
        assert start <= end
        # The finish is recorded after the output is written: never much before the end of
        # the work (stamps are cut to the millisecond).
        assert end - start >= t["seconds"] - 0.05
        assert end - start < t["seconds"] + 30
    starts = [t["started_at"] for t in spans]
    assert starts == sorted(starts)
    # One worker computes one batch at a time: its spans do not overlap.
    for worker in {t["worker"] for t in spans}:
        mine = [t for t in spans if t["worker"] == worker]
        for a, b in zip(mine, mine[1:], strict=False):
            assert _at(a["started_at"]) + a["seconds"] <= _at(b["started_at"]) + 0.002


def test_pool_tasks_name_their_worker_and_when_they_ran(project, cli):
    r = cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "2",
            "--batch-size", str(BATCH))
    assert r.exit_code == 0, r.stderr
    spans = _spans(project)
    assert len(spans) >= 6
    assert sum(t["rows_in"] for t in spans) == len(_box_cells())  # every cell, once
    assert {t["worker"] for t in spans} == {"w1", "w2"}
    _check_spans(spans)


def test_in_process_tasks_ran_on_main(project, cli):
    r = cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "1",
            "--batch-size", str(BATCH))
    assert r.exit_code == 0, r.stderr
    spans = _spans(project)
    assert len(spans) >= 6
    assert {t["worker"] for t in spans} == {"main"}
    _check_spans(spans)


def test_a_failed_task_carries_the_start_of_its_last_attempt(tmp_path, cli, monkeypatch):
    """Block reads over HTTP that keep failing: the task is retried once, then fails; its row
    says when the second attempt started, which is after the first one was given up."""
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")
    monkeypatch.setenv("H3PIPE_REMOTE_BACKOFF", "0.01")
    data = np.random.default_rng(3).normal(200, 20, (300, 300)).astype("float32")
    local = tmp_path / "srv" / "r.tif"
    write_raster(local, data, west=29.0, north=-1.95, res=0.001, block=32)
    pipeline = zonal_pipeline("p", "s", ["mean"], resolution=RES).replace(
        "defaults: {", "defaults: {retries: 1, retry_backoff: 0.01, ")
    with TileServer(tmp_path / "srv", fail_share=1.0, fail_from=16384) as server:
        proj = write_project(tmp_path / "p",
                             sources={"s": raster_source("s", server.url_of("r.tif"))},
                             pipelines={"p": pipeline})
        r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1",
                "--batch-size", str(BATCH))
    assert r.exit_code == 1, r.stderr
    with storage.open_store(".h3pipe", proj, create=False) as store:
        run = history.latest_run(store.catalog)
        assert run is not None
        spans = history.task_spans(store.catalog, run["run_id"])
        retrying = store.catalog.query(
            "SELECT subject, at FROM events WHERE run_id = :id AND status = 'retrying'",
            {"id": run["run_id"]})
    failed = [t for t in spans if t["status"] == "failed"]
    assert len(failed) == 1
    t = failed[0]
    assert t["worker"] == "main" and t["attempts"] == 2
    first_given_up = [e["at"] for e in retrying if e["subject"] == f"{t['step_id']}#{t['task_no']}"]
    assert len(first_given_up) == 1
    assert _at(first_given_up[0]) <= _at(t["started_at"]) <= _at(t["finished_at"])
    # Tasks never started (no new one after the failure) come last, without a worker.
    never = [s for s in spans if s["started_at"] is None]
    assert never and all(s["status"] == "pending" for s in never)
    assert spans[len(spans) - len(never):] == never
    assert all(s["worker"] is None for s in never)
