"""Runs on warm workers, through a real ``h3pipe serve --workers 1``: a run cancelled while
it runs stops gracefully and its worker survives the SIGTERM; a run waiting for the worker
is dropped and shown dismissed; a worker killed mid-run is replaced and its run answers
failed; the server answers while a run executes. And :func:`job_status`, the one reading
of a run record as an OGC status, on records written by hand."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from h3pipe.api import Project
from h3pipe.server.status import job_status
from tests.server.conftest import SMALL_BBOX, Served, make_project, start_server
from tests.waiting import wait_until

EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
SMALL = [float(v) for v in SMALL_BBOX.split(",")]
# The whole ramp at resolution 11: some 200,000 cells in 2,000 tasks, many seconds of work.
SLOW = {"bbox": [30.0, -2.1, 30.2, -1.9], "resolution": 11}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = make_project(tmp_path_factory.mktemp("jobs"))
    served = start_server(root, "--workers", "1")
    yield served
    served.stop()


def _submit(client, inputs: dict) -> dict:
    answer = client.post("/processes/terrain/execution", json={"inputs": inputs})
    assert answer.status_code == 201, answer.text
    return answer.json()


def _status(client, job_id: str) -> dict:
    return client.get(f"/jobs/{job_id}").json()


def _until(client, job_id: str, wanted: tuple[str, ...], deadline: float = 90) -> dict:
    def reached():
        info = _status(client, job_id)
        return info if info["status"] in wanted else None
    return wait_until(reached, deadline, f"job {job_id} to be {' or '.join(wanted)}")


def _working(client, job_id: str) -> dict:
    """Once the run has finished some of its tasks (so it is well into its work)."""
    def busy():
        info = _status(client, job_id)
        assert info["status"] in ("accepted", "running"), info
        return info if info["status"] == "running" and info.get("progress", 0) > 0 else None
    return wait_until(busy, 90, f"job {job_id} to make progress")


def _pid(served: Served, run_id: str) -> int:
    return int(Project(served.root).run_record(run_id)["pid"])


def test_cancel_a_running_run_and_drop_a_waiting_one(one_worker: Served) -> None:
    with one_worker.client() as client:
        slow = _submit(client, SLOW)["jobID"]
        running = _working(client, slow)
        assert 0 < running["progress"] < 100
        started = time.monotonic()
        assert client.get("/processes").status_code == 200  # the server never waits on a run
        assert time.monotonic() - started < 2
        not_ready = client.get(f"/jobs/{slow}/results")
        assert not_ready.status_code == 404
        assert not_ready.json()["type"] == EXCEPTIONS + "result-not-ready"

        waiting = _submit(client, {"bbox": SMALL})  # one worker, and it is busy
        assert waiting["status"] == "accepted"
        dropped = client.delete(f"/jobs/{waiting['jobID']}")
        assert dropped.status_code == 200 and dropped.json()["status"] == "dismissed"
        assert _status(client, waiting["jobID"])["status"] == "dismissed"

        asked = client.delete(f"/jobs/{slow}")
        assert asked.status_code == 200, asked.text
        assert "asked run" in asked.json()["message"]
        stopped = _until(client, slow, ("dismissed", "failed", "successful"))
        assert stopped["status"] == "dismissed", stopped
        assert "interrupted" in stopped["message"]

        after = _submit(client, {"bbox": [30.03, -2.04, 30.13, -1.97]})["jobID"]
        assert _until(client, after, ("successful", "failed"))["status"] == "successful"
    # The same worker ran both: the SIGTERM of the cancel stopped the run, not the worker.
    assert _pid(one_worker, after) == _pid(one_worker, slow)


def test_a_killed_worker_is_replaced_and_its_run_fails(one_worker: Served) -> None:
    with one_worker.client() as client:
        slow = _submit(client, SLOW | {"bbox": [30.0, -2.1, 30.19, -1.9]})["jobID"]
        _working(client, slow)
        worker = _pid(one_worker, slow)
        os.kill(worker, signal.SIGKILL)
        failed = _until(client, slow, ("failed", "dismissed", "successful"))
        assert failed["status"] == "failed"
        assert "died" in failed["message"]
        after = _submit(client, {"bbox": [30.04, -2.04, 30.14, -1.97]})["jobID"]
        assert _until(client, after, ("successful", "failed"))["status"] == "successful"
    assert _pid(one_worker, after) != worker


# -- job_status on records written by hand -------------------------------------------------

def _record(status: str, steps: list[dict] | None = None, **more) -> dict:
    row = {"run_id": "p-r7-abc", "pipeline_id": "p", "status": status, "cells": 20,
           "scope_label": "bbox 1,2,3,4", "resolution": 7,
           "created_at": "2026-01-02T03:04:05.678+00:00", "started_at": None,
           "finished_at": None, "error": None, "dead": None} | more
    if steps is not None:
        row["steps"] = steps
    return row


def _step(stage: int, status: str, done: int, total: int) -> dict:
    return {"stage": stage, "status": status, "tasks_done": done, "tasks_total": total,
            "started_at": None, "finished_at": None}


def test_statuses_by_ogc_names() -> None:
    assert job_status(_record("pending"))["status"] == "accepted"
    assert job_status(_record("completed"))["status"] == "successful"
    assert job_status(_record("failed", error="boom"))["message"] == "boom"
    stopped = job_status(_record("interrupted", finished_at="2026-01-02T03:05:00+00:00"))
    assert stopped["status"] == "dismissed" and stopped["finished"] == "2026-01-02T03:05:00.000Z"
    dead = job_status(_record("running", dead="pid 42 is gone on this host"))
    assert dead["status"] == "failed" and "pid 42 is gone" in dead["message"]
    info = job_status(_record("running"))
    assert info["created"] == "2026-01-02T03:04:05.678Z" and "progress" not in info
    assert {"jobID", "status", "type"} <= set(info)


def test_progress_goes_stage_by_stage_and_never_back() -> None:
    # Two stages; the second's tasks are known only once it starts.
    snapshots = [
        [_step(1, "pending", 0, 0), _step(2, "pending", 0, 0)],
        [_step(1, "running", 5, 10), _step(2, "pending", 0, 0)],
        [_step(1, "completed", 10, 10), _step(2, "pending", 0, 0)],
        [_step(1, "completed", 10, 10), _step(2, "running", 0, 400)],
        [_step(1, "completed", 10, 10), _step(2, "running", 200, 400)],
        [_step(1, "completed", 10, 10), _step(2, "completed", 400, 400)],  # publishing
    ]
    seen = [job_status(_record("running", steps))["progress"] for steps in snapshots]
    assert seen == [0, 25, 50, 50, 75, 99]
    assert job_status(_record("completed", snapshots[-1]))["progress"] == 100
