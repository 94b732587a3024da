"""``h3pipe run`` as a user runs it, with lineage on: START and COMPLETE, FAIL or ABORT at a
real HTTP receiver and in a file, and the run-results file checked against the store's own
rows and the published data."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from datetime import datetime

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from jsonschema import Draft202012Validator

from h3pipe import faults
from h3pipe.lineage import runresults
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.lineage.receiver import Receiver

BBOX = (29.02, -2.18, 29.18, -2.02)
EAST_EDGE = 29.12  # the raster covers 29.0..29.12: cells east of it have no valid pixel


@pytest.fixture
def project(tmp_path, receiver, no_lineage_env):
    data = np.tile(np.arange(120, dtype="float32"), (250, 1))
    tif = write_raster(tmp_path / "data" / "grad.tif", data, west=29.0, north=-1.95,
                       res=0.001)
    return write_project(
        tmp_path / "proj", sources={"grad": raster_source("grad", str(tif))},
        pipelines={"p": zonal_pipeline("p", "grad", ["mean", "count"], batch_size=40)},
        settings=f"lineage: {{url: '{receiver.url}', namespace: tests, file: lineage.jsonl}}\n")


def _run(cli, project):
    return cli("--project", project, "run", "p", "--bbox", ",".join(map(str, BBOX)),
               "--workers", "1")


def _catalog(project):
    return sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")


def _run_row(project):
    with _catalog(project) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM runs").fetchone())


def _results(project, run_id):
    path = project / ".h3pipe" / "run_results" / f"{run_id}.json"
    doc = json.loads(path.read_text())
    schema = json.loads(runresults.SCHEMA_FILE.read_text())
    assert not list(Draft202012Validator(schema).iter_errors(doc))
    return doc


def _file_events(project):
    return [json.loads(line) for line in (project / "lineage.jsonl").read_text().splitlines()]


def _elapsed(start, end):
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def _cells():
    """The scope's cells, and those with no pixel under them, from h3 and the raster's
    extent alone."""
    cells = h3.geo_to_cells(shapely.box(*BBOX), 7)
    empty = {c for c in cells if min(lng for _, lng in h3.cell_to_boundary(c)) > EAST_EDGE}
    return set(cells), empty


def test_a_run_sends_start_and_complete_and_writes_its_results(project, cli, receiver):
    r = _run(cli, project)
    assert r.exit_code == 0, r.stderr
    start, complete = receiver.wait_for(2)
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert receiver.received[0]["path"] == "/api/v1/lineage"
    run = _run_row(project)
    ol_run = start["run"]["runId"]
    assert ol_run == complete["run"]["runId"] == str(uuid.uuid5(
        uuid.uuid5(uuid.NAMESPACE_URL, "urn:h3pipe:run"), f"{run['run_id']}@{run['started_at']}"))
    assert start["run"]["facets"]["h3pipe_run"]["runId"] == run["run_id"]
    assert start["job"]["namespace"] == "tests" and start["job"]["name"] == "p"
    assert [(d["namespace"], d["name"]) for d in start["inputs"]] == [
        ("file", str(project.parent / "data" / "grad.tif"))]
    (out,) = complete["outputs"]
    assert (out["namespace"], out["name"]) == ("file", f"{project}/.h3pipe/results/ds")
    assert out["facets"]["h3pipe_result"]["resolution"] == 7
    published = pq.read_table(next((project / ".h3pipe" / "results").rglob("*.parquet")))
    cells, empty = _cells()
    assert set(published["h3_index"].to_pylist()) == cells
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == len(cells)
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == [
        "h3_index", "resolution", "mean", "count"]
    # The file got the same events, one a line.
    assert _file_events(project) == [start, complete]

    doc = _results(project, run["run_id"])
    assert doc["schema_version"] == 1
    assert doc["run"]["status"] == "completed" and doc["run"]["openlineage_run_id"] == ol_run
    assert doc["run"]["elapsed_s"] == _elapsed(run["started_at"], run["finished_at"])
    (step,) = doc["steps"]
    with _catalog(project) as db:
        tasks, rows_in, rows_out, seconds = db.execute(
            "SELECT count(*), sum(rows_in), sum(rows_out), sum(seconds) FROM tasks "
            "WHERE status = 'completed'").fetchone()
    assert step["tasks"] == {"total": tasks, "completed": tasks}
    assert tasks == -(-len(cells) // 40)  # batches of 40 cells
    assert (step["rows_in"], step["rows_out"]) == (rows_in, rows_out) == (len(cells), len(cells))
    assert step["task_seconds"]["sum"] == pytest.approx(seconds, abs=1e-3)
    # Cells with no valid pixel, three ways: the store's count, the published rows, and
    # the raster's extent.
    nulls = published["mean"].null_count
    assert empty and nulls == len(empty)
    assert step["null_rows"] == nulls and step["null_share"] == pytest.approx(nulls / len(cells))
    (covered,) = doc["checks"]["coverage"]["steps"]
    assert (covered["null_rows"], covered["rows"], covered["status"]) == (nulls, len(cells),
                                                                          "pass")
    (output,) = doc["outputs"]
    assert output["rows"] == published.num_rows == len(cells)
    assert output["columns"] == ["mean", "count"]
    assert pq.read_table(output["location"]).equals(published)


def test_a_failed_run_sends_fail_with_its_error(project, cli, receiver, monkeypatch):
    monkeypatch.setattr(faults, "_ACTIONS", faults._parse("batch:fail@2"))
    r = _run(cli, project)
    assert r.exit_code == 1
    start, fail = receiver.wait_for(2)
    assert [start["eventType"], fail["eventType"]] == ["START", "FAIL"]
    run = _run_row(project)
    assert run["status"] == "failed"
    assert fail["run"]["facets"]["errorMessage"]["message"] == run["error"]
    assert "fault" in run["error"]
    doc = _results(project, run["run_id"])
    assert (doc["run"]["status"], doc["run"]["error"]) == ("failed", run["error"])
    (step,) = doc["steps"]
    with _catalog(project) as db:
        counted = dict(db.execute("SELECT status, count(*) FROM tasks GROUP BY status"))
    assert counted["failed"] == 1
    assert step["status"] == "failed" and step["tasks"] == {"total": sum(counted.values()),
                                                            **counted}
    assert doc["outputs"] == [] and "outputStatistics" not in json.dumps(fail)
    assert _file_events(project) == [start, fail]


def test_a_stopped_run_sends_abort_and_its_resume_is_a_new_openlineage_run(project, cli,
                                                                          receiver, monkeypatch):
    # Slow batches, so that the run is mid-stage when the signal lands.
    monkeypatch.setattr(faults, "_ACTIONS", faults._parse("batch:sleep=0.2"))
    catalog = project / ".h3pipe" / "catalog.sqlite"

    def interrupt_after_a_task():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(catalog, timeout=5) as db:
                    if db.execute("SELECT count(*) FROM tasks WHERE status = 'completed'"
                                  ).fetchone()[0]:
                        os.kill(os.getpid(), signal.SIGINT)
                        return
            except sqlite3.OperationalError:  # not created or not migrated yet
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_after_a_task)
    watcher.start()
    r = _run(cli, project)
    watcher.join(30)
    assert r.exit_code == 130
    start, abort = receiver.wait_for(2)
    assert [start["eventType"], abort["eventType"]] == ["START", "ABORT"]
    run = _run_row(project)
    assert run["status"] == "interrupted"
    assert abort["run"]["facets"]["errorMessage"]["message"] == run["error"]
    assert run["error"].startswith("interrupted (SIGINT)")
    doc = _results(project, run["run_id"])
    assert doc["run"]["status"] == "interrupted"
    with _catalog(project) as db:
        done = db.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()[0]
    assert 0 < doc["steps"][0]["tasks"].get("completed", 0) == done

    monkeypatch.setattr(faults, "_ACTIONS", {})
    assert _run(cli, project).exit_code == 0
    again, complete = receiver.wait_for(4)[2:]
    assert [again["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert again["run"]["runId"] == complete["run"]["runId"] != start["run"]["runId"]
    assert again["run"]["facets"]["h3pipe_run"]["runId"] == run["run_id"]
    assert _results(project, run["run_id"])["run"]["status"] == "completed"


def test_a_silent_backend_costs_one_timeout_and_one_line(project, cli, receiver):
    silent = Receiver("hang")
    try:
        (project / "h3pipe.yaml").write_text(
            f"lineage: {{url: '{silent.url}', file: lineage.jsonl, timeout: 0.5}}\n")
        r = _run(cli, project)
        assert r.exit_code == 0, r.stderr
        # One line (after the progress log's time stamp).
        (line,) = [line for line in (r.stdout + r.stderr).splitlines() if "lineage" in line]
        assert line.endswith(f" lineage: cannot send events to {silent.url}/api/v1/lineage "
                             "(no answer within 0.5 s); this run sends it no more")
        assert len(silent.received) == 1  # START only: COMPLETE was not tried
        assert [e["eventType"] for e in _file_events(project)] == ["START", "COMPLETE"]
    finally:
        silent.close()


def test_bad_lineage_settings_stop_the_run_before_it_starts(project, cli, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE_URL", "marquez:5000")
    r = _run(cli, project)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines()[-1].startswith(
        "error: lineage url 'marquez:5000' is not an http:// or https:// URL")
    assert not (project / ".h3pipe" / "catalog.sqlite").exists() or not _catalog(
        project).execute("SELECT count(*) FROM runs").fetchone()[0]


def test_on_the_postgresql_store_no_password_reaches_an_event(project, cli, pg_url,
                                                              receiver):
    assert cli("--project", project, "--store", pg_url, "db", "upgrade").exit_code == 0
    r = cli("--project", project, "--store", pg_url, "run", "p", "--bbox",
            ",".join(map(str, BBOX)), "--workers", "1")
    assert r.exit_code == 0, r.stderr
    start, complete = receiver.wait_for(2)
    database = pg_url.rsplit("/", 1)[1]
    (out,) = complete["outputs"]
    assert (out["namespace"], out["name"]) == ("postgres://127.0.0.1:5432",
                                               f"{database}.h3.stats_terrain__ds")
    text = (project / "lineage.jsonl").read_text() + json.dumps(receiver.events)
    assert "s3cret-pw" not in text
    run_id = start["run"]["facets"]["h3pipe_run"]["runId"]
    # Its run results: in the project's .h3pipe/, where the PostgreSQL store's files go.
    doc = _results(project, run_id)
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute('SELECT count(*), count(*) - count("mean") FROM '
                            'h3.stats_terrain__ds WHERE run_id = %s', [run_id]).fetchone()
        tasks = conn.execute("SELECT count(*), sum(rows_out) FROM h3pipe.tasks "
                             "WHERE run_id = %s", [run_id]).fetchone()
    cells, empty = _cells()
    assert rows == (len(cells), len(empty))
    assert doc["outputs"][0]["rows"] == complete["outputs"][0]["outputFacets"][
        "outputStatistics"]["rowCount"] == len(cells)
    assert (doc["steps"][0]["tasks"]["total"], doc["steps"][0]["rows_out"]) == tasks
    assert doc["steps"][0]["null_rows"] == len(empty)
