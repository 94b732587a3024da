"""A queue run's lineage: START from the process that submits it, FAIL or COMPLETE from the
worker that ends it (a real ``h3pipe worker``, RabbitMQ and PostgreSQL), and the run-results
file written on the worker's side."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import psycopg

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.workers import BROKER

BBOX = "29.02,-2.08,29.08,-2.02"


def _h3pipe(workers, *args):
    """The command line in a process of its own, on the workers' queue and store."""
    return subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(workers.project),
                           *args], capture_output=True, text=True, timeout=120,
                          env=workers.env())


def test_the_worker_that_ends_a_queue_run_sends_its_last_event(no_lineage_env, workers,
                                                                receiver, pg_url):
    data = np.tile(np.arange(100, dtype="float32"), (100, 1))
    tif = write_raster(workers.project / "dem.tif", data, west=29.0, north=-2.0, res=0.001)
    write_project(workers.project, sources={"dem": raster_source("dem", str(tif))},
                  pipelines={"p": zonal_pipeline("p", "dem", ["mean"], resolution=8,
                                                 batch_size=25)},
                  settings=f"lineage: {{url: '{receiver.url}', file: lineage.jsonl}}\n")
    assert _h3pipe(workers, "db", "upgrade").returncode == 0
    # The worker's second batch fails, once: the run fails, and its resume completes.
    worker = workers.start(H3PIPE_FAULTS="task.stats#2:fail@1")
    workers.wait_ready(worker)

    run = ("run", "p", "--bbox", BBOX, "--queue", BROKER)
    r = _h3pipe(workers, *run)
    assert r.returncode == 1, r.stderr
    start, fail = receiver.wait_for(2)
    assert [start["eventType"], fail["eventType"]] == ["START", "FAIL"]
    assert start["run"]["runId"] == fail["run"]["runId"]
    assert "stats#2" in fail["run"]["facets"]["errorMessage"]["message"]
    run_id = start["run"]["facets"]["h3pipe_run"]["runId"]
    # The run results were written where the worker ended it.
    path = workers.project / ".h3pipe" / "run_results" / f"{run_id}.json"
    assert json.loads(path.read_text())["run"]["status"] == "failed"

    r = _h3pipe(workers, *run)
    assert r.returncode == 0, r.stderr
    again, complete = receiver.wait_for(4)[2:]
    assert [again["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert again["run"]["runId"] == complete["run"]["runId"] != start["run"]["runId"]
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT count(*) FROM h3.stats_terrain__ds WHERE run_id = %s",
                            [run_id]).fetchone()[0]
        tasks = conn.execute("SELECT count(*), sum(rows_out) FROM h3pipe.tasks "
                             "WHERE run_id = %s AND status = 'completed'", [run_id]).fetchone()
    assert rows > 0
    assert complete["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == rows
    doc = json.loads(path.read_text())
    assert doc["run"]["status"] == "completed"
    assert doc["run"]["openlineage_run_id"] == complete["run"]["runId"]
    assert doc["outputs"][0]["rows"] == rows
    assert (doc["steps"][0]["tasks"]["completed"], doc["steps"][0]["rows_out"]) == tasks
    # Submitter and worker appended to the same file, each line whole.
    lines = (workers.project / "lineage.jsonl").read_text().splitlines()
    assert [json.loads(line)["eventType"] for line in lines] == [
        "START", "FAIL", "START", "COMPLETE"]
