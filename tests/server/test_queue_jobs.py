"""``h3pipe serve --queue``: a run submitted over HTTP executes on real ``h3pipe worker``
processes (RabbitMQ, a throwaway PostgreSQL store), and its job reads as any other: polled
to successful, its results downloaded and checked against exactextract."""

from __future__ import annotations

import io
import subprocess
import sys

import pyarrow.parquet as pq

from h3pipe.api import Project
from tests.server.conftest import SMALL_BBOX, make_project, start_server
from tests.waiting import wait_until
from tests.workers import BROKER, Workers
from tests.zonal_reference import assert_same, reference

STATS = ["mean", "min", "max", "count"]


def test_a_run_submitted_over_http_executes_on_queue_workers(workers: Workers) -> None:
    root = make_project(workers.project)
    upgrade = subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(root), "db",
                              "upgrade"], capture_output=True, text=True, timeout=120,
                             env=workers.env())
    assert upgrade.returncode == 0, upgrade.stderr
    worker = workers.start(concurrency=1)
    workers.wait_ready(worker)
    served = start_server(root, "--queue", BROKER, env=workers.env())
    try:
        with served.client() as client:
            answer = client.post("/processes/terrain/execution", json={"inputs": {
                "bbox": [float(v) for v in SMALL_BBOX.split(",")]}})
            assert answer.status_code == 201, answer.text
            location = answer.headers["location"]

            def ended():
                info = client.get(location).json()
                return info if info["status"] in ("successful", "failed", "dismissed") \
                    else None

            done = wait_until(ended, 120, "the queued run to end")
            assert done["status"] == "successful", done
            again = client.post("/processes/terrain/execution", json={"inputs": {
                "bbox": [float(v) for v in SMALL_BBOX.split(",")]}})
            parquet = client.get(f"{location}/results/geoparquet")
    finally:
        served.stop()
    assert again.json()["jobID"] == done["jobID"]  # the same job, not run again
    record = Project(root, store=workers.store).run_record(done["jobID"])
    assert record["queue"]  # submitted to the queue, not run by the server
    rows = {r["h3_index"]: r for r in pq.read_table(io.BytesIO(parquet.content)).to_pylist()}
    assert len(rows) == 20
    assert_same(rows, reference(str(root / "data" / "dem.tif"), set(rows), STATS), STATS)
