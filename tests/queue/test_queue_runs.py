"""The queue backend with real parts: RabbitMQ, PostgreSQL and ``h3pipe worker``
processes. Every result is compared, cell for cell, with a local run of the same inputs
on its own store; faults are made with real signals and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.waiting import wait_until
from tests.workers import BROKER

BBOX = "29.0,-2.1,29.2,-1.9"
PIPELINE = "elev"


def _project(root):
    data = (np.arange(200 * 200, dtype="float32").reshape(200, 200) % 97) + 1000
    data[50:60, 50:60] = -9999  # nodata is never data
    write_raster(root / "dem.tif", data, west=29.0, north=-1.9, res=0.001, nodata=-9999)
    return write_project(root, sources={"dem": raster_source("dem", str(root / "dem.tif"))},
                         pipelines={PIPELINE: zonal_pipeline(
                             PIPELINE, "dem", ["count", "sum", "mean", "min", "max"],
                             resolution=8, batch_size=20)})


def _h3pipe(workers, *args, env=None, **kw):
    """The command line as a user runs it, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(workers.project),
                           *args], capture_output=True, text=True, timeout=240,
                          env=workers.env(**(env or {})), **kw)


def _rows(workers, run_id, out, store=None):
    args = ["--store", store] if store else []
    r = _h3pipe(workers, *args, "export", "ds", "--run", run_id, "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out).to_pylist()
    cells = [row["h3_index"] for row in rows]
    assert len(cells) == len(set(cells))  # never a duplicate cell
    return {row["h3_index"]: row for row in rows}


@pytest.fixture
def local(tmp_path, workers):
    """The reference: the same run computed by the local pool on an embedded store."""
    _project(workers.project)
    folder = tmp_path / "local-store"
    r = _h3pipe(workers, "--store", str(folder), "run", PIPELINE, "--bbox", BBOX,
                "--workers", "1")
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[1]
    return _rows(workers, run_id, tmp_path / "local.parquet", store=str(folder))


def _detached(workers):
    """Submit the run with --detach; its id, as the command prints it."""
    r = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER, "--detach")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _upgrade(workers):
    r = _h3pipe(workers, "db", "upgrade")
    assert r.returncode == 0, r.stderr


def _run_id(stdout):
    return stdout.split()[1] if stdout.startswith("run ") else stdout.split()[0]


def test_a_queue_run_equals_a_local_run(tmp_path, workers, local):
    _upgrade(workers)
    w = workers.start(concurrency=2)
    workers.wait_ready(w)
    r = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER)
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout
    got = _rows(workers, _run_id(r.stdout), tmp_path / "queue.parquet")
    assert got == local
    # The workers counted each batch's cells with no valid pixel (count 0) as they wrote it.
    with psycopg.connect(workers.store) as db:
        counted = db.execute("SELECT count(null_rows), count(*), sum(null_rows) FROM "
                             "h3pipe.tasks WHERE run_id = %s", (_run_id(r.stdout),)).fetchone()
    assert counted == (30, 30, sum(row["count"] == 0 for row in local.values()))
    # One line per batch in the worker's log, none of Celery's chatter per task.
    assert workers.log(0).count(" cells -> ") == 30
    # Done already: reported, not recomputed.
    again = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER)
    assert again.returncode == 0 and "already completed" in again.stdout


def test_a_queue_sweep_equals_a_local_one(tmp_path, workers):
    """Every scenario and band of a sweep, through workers on the queue: the rows a local
    run of the same project gives."""
    from tests.execution.test_sweep import BBOX as SWEEP_BBOX
    from tests.execution.test_sweep import BUILDINGS, EXPOSURE, SOURCE, make_scene

    make_scene(workers.project)
    write_project(workers.project, sources={"hz": SOURCE, "b": BUILDINGS},
                  pipelines={"e": EXPOSURE})
    folder = tmp_path / "local-store"
    r = _h3pipe(workers, "--store", str(folder), "run", "e", "--bbox", SWEEP_BBOX,
                "--workers", "1")
    assert r.returncode == 0, r.stderr
    local = tmp_path / "local.parquet"
    assert _h3pipe(workers, "--store", str(folder), "export", "eds", "-o",
                   str(local)).returncode == 0
    _upgrade(workers)
    workers.wait_ready(workers.start(concurrency=2))
    r = _h3pipe(workers, "run", "e", "--bbox", SWEEP_BBOX, "--queue", BROKER)
    assert r.returncode == 0, r.stderr
    queued = tmp_path / "queue.parquet"
    assert _h3pipe(workers, "export", "eds", "-o", str(queued)).returncode == 0
    key = lambda row: (row["h3_index"], row["scenario"])  # noqa: E731
    got = sorted(pq.read_table(queued).to_pylist(), key=key)
    assert len(got) > 100 and got == sorted(pq.read_table(local).to_pylist(), key=key)


def test_detach_prints_the_run_id_and_runs_wait_follows_it(tmp_path, workers, local):
    _upgrade(workers)
    r = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER, "--detach")
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    # Nobody computes yet: the run waits on the queue, alive, not judged dead.
    shown = _h3pipe(workers, "runs", "list")
    assert run_id in shown.stdout and "dead" not in shown.stdout
    w = workers.start(concurrency=2)
    waited = _h3pipe(workers, "runs", "wait", run_id)
    assert waited.returncode == 0, waited.stderr + workers.log(0)
    assert _rows(workers, run_id, tmp_path / "queue.parquet") == local
    assert w.poll() is None


def test_a_worker_killed_mid_batch_leaves_its_batch_to_another(tmp_path, workers, local):
    _upgrade(workers)
    slow = workers.start(concurrency=1, H3PIPE_FAULTS="batch:sleep=3")
    workers.wait_ready(slow)
    run_id = _detached(workers)
    taken = _wait_for_task(workers.store, run_id, "running")
    workers.kill(slow)  # the machine is gone, its batch unacknowledged
    other = workers.start(concurrency=2)
    waited = _h3pipe(workers, "runs", "wait", run_id)
    assert waited.returncode == 0, waited.stderr + workers.log(1)
    assert _rows(workers, run_id, tmp_path / "queue.parquet") == local
    with psycopg.connect(workers.store) as db:
        deliveries, worker = db.execute(
            "SELECT deliveries, worker FROM h3pipe.tasks WHERE run_id = %s AND step_id = %s "
            "AND task_no = %s", (run_id, *taken)).fetchone()
    assert deliveries == 2 and worker.endswith(f":{_pool_pid(other, worker)}")


def _wait_for_task(url, run_id, status, timeout=60):
    with psycopg.connect(url, autocommit=True) as db:
        return wait_until(lambda: db.execute(
            "SELECT step_id, task_no FROM h3pipe.tasks WHERE run_id = %s AND status = %s "
            "LIMIT 1", (run_id, status)).fetchone(), timeout, f"a task of {run_id} {status}")


def _completed(db) -> int:
    return db.execute("SELECT count(*) FROM h3pipe.tasks WHERE status = 'completed'"
                      ).fetchone()[0]


def _pool_pid(proc, worker):
    """The pool process of ``proc`` named in ``worker`` (host:pid), when it is one."""
    import psutil

    pid = int(worker.rsplit(":", 1)[1])
    children = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    assert pid in children, f"{worker} is not a process of the second worker"
    return pid


def test_a_poison_batch_fails_the_run_after_its_deliveries_and_the_rest_finish(
        tmp_path, workers, local):
    _upgrade(workers)
    # Task 7 kills every process that starts it, as a batch that runs out of memory would.
    w = workers.start(concurrency=2, H3PIPE_FAULTS="task.stats#7:kill@1")
    workers.wait_ready(w)
    r = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]  # after the progress lines: the error, once
    assert last.startswith("error: ") and "stats#7" in last and "delivered 3 time(s)" in last
    assert "Traceback" not in r.stderr
    with psycopg.connect(workers.store) as db:
        states = dict(db.execute("SELECT status, count(*) FROM h3pipe.tasks WHERE run_id = "
                                 "%s GROUP BY status", (_run_of(db),)).fetchall())
    assert states == {"completed": 29, "failed": 1}
    # Without the fault, the same command resumes: only the poison batch is recomputed.
    workers.kill(w)
    workers.start(concurrency=2)
    again = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER)
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stdout
    assert _rows(workers, _run_id(again.stdout), tmp_path / "queue.parquet") == local


def _run_of(db):
    return db.execute("SELECT run_id FROM h3pipe.runs").fetchone()[0]


def test_the_submitter_killed_loses_nothing_and_the_same_command_follows_again(
        tmp_path, workers, local):
    _upgrade(workers)
    # 30 batches of a second on two processes: still running when the command comes back.
    workers.start(concurrency=2, H3PIPE_FAULTS="batch:sleep=1")
    command = [sys.executable, "-m", "h3pipe", "--project", str(workers.project), "run",
               PIPELINE, "--bbox", BBOX, "--queue", BROKER]
    submitter = subprocess.Popen(command, env=workers.env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
    with psycopg.connect(workers.store, autocommit=True) as db:
        wait_until(lambda: _completed(db) >= 3, 60, "three completed tasks")
    submitter.send_signal(signal.SIGKILL)
    submitter.wait(timeout=30)
    again = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER)
    assert again.returncode == 0, again.stderr
    assert "following it" in again.stderr
    assert _rows(workers, _run_id(again.stdout), tmp_path / "queue.parquet") == local


def test_ctrl_c_of_the_submitter_cancels_and_the_same_command_resumes(
        tmp_path, workers, local):
    _upgrade(workers)
    workers.start(concurrency=1, H3PIPE_FAULTS="batch:sleep=0.5")
    command = [sys.executable, "-m", "h3pipe", "--project", str(workers.project), "run",
               PIPELINE, "--bbox", BBOX, "--queue", BROKER, "--grace", "20"]
    submitter = subprocess.Popen(command, env=workers.env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    with psycopg.connect(workers.store, autocommit=True) as db:
        try:
            wait_until(lambda: _completed(db), 60, "a completed task")
        except AssertionError:
            submitter.kill()
            raise AssertionError(submitter.communicate(timeout=30)[1]) from None
        submitter.send_signal(signal.SIGINT)
        _, err = submitter.communicate(timeout=60)
        assert submitter.returncode == 130, err
        status, error = db.execute("SELECT status, error FROM h3pipe.runs").fetchone()
        assert status == "interrupted" and "left for the resume" in error
        left = db.execute("SELECT count(*) FROM h3pipe.tasks WHERE status != 'completed'"
                          ).fetchone()[0]
        assert left > 0
        assert not db.execute("SELECT count(*) FROM h3pipe.tasks WHERE status = 'running'"
                              ).fetchone()[0]
    again = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER)
    assert again.returncode == 0, again.stderr
    assert _rows(workers, _run_id(again.stdout), tmp_path / "queue.parquet") == local


def test_the_broker_restarted_mid_run(tmp_path, workers, local):
    _upgrade(workers)
    workers.start(concurrency=2, H3PIPE_FAULTS="batch:sleep=0.4")
    run_id = _detached(workers)
    _wait_for_task(workers.store, run_id, "completed")
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    with psycopg.connect(workers.store) as db:
        left = db.execute("SELECT count(*) FROM h3pipe.tasks WHERE status != 'completed'"
                          ).fetchone()[0]
    assert left > 0  # the broker went down mid-run
    # Down long enough for the worker to lose it (not a guess at how long that takes).
    wait_until(lambda: "Connection to broker lost" in workers.log(0), 60,
               "the worker to lose the broker")
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
    waited = _h3pipe(workers, "runs", "wait", run_id)
    assert waited.returncode == 0, waited.stderr + workers.log(0)
    assert _rows(workers, run_id, tmp_path / "queue.parquet") == local


def test_sigterm_lets_running_batches_finish_then_the_worker_exits(workers):
    _project(workers.project)
    _upgrade(workers)
    w = workers.start(concurrency=1, grace=30, H3PIPE_FAULTS="batch:sleep=2")
    workers.wait_ready(w)
    run_id = _detached(workers)
    _wait_for_task(workers.store, run_id, "running")
    os.kill(w.pid, signal.SIGTERM)
    assert w.wait(timeout=30) == 0
    with psycopg.connect(workers.store) as db:
        states = dict(db.execute("SELECT status, count(*) FROM h3pipe.tasks WHERE run_id = "
                                 "%s GROUP BY status", (run_id,)).fetchall())
    assert states.get("completed") == 1 and "running" not in states  # it finished its batch
    assert "stopping (SIGTERM)" in workers.log(0)


def test_a_batch_past_the_grace_period_goes_back_to_the_queue(tmp_path, workers, local):
    _upgrade(workers)
    w = workers.start(concurrency=1, grace=1, H3PIPE_FAULTS="batch:sleep=6")
    workers.wait_ready(w)
    run_id = _detached(workers)
    _wait_for_task(workers.store, run_id, "running")
    started = time.monotonic()
    os.kill(w.pid, signal.SIGTERM)
    w.wait(timeout=30)
    assert time.monotonic() - started < 5  # the grace period, not the batch's 6 s
    assert "grace period over" in workers.log(0)
    workers.start(concurrency=2)
    waited = _h3pipe(workers, "runs", "wait", run_id)
    assert waited.returncode == 0, waited.stderr + workers.log(1)
    assert _rows(workers, run_id, tmp_path / "queue.parquet") == local


def test_runs_cancel_stops_a_detached_run_and_the_same_command_resumes(
        tmp_path, workers, local):
    _upgrade(workers)
    w = workers.start(concurrency=1, H3PIPE_FAULTS="batch:sleep=0.5")
    workers.wait_ready(w)
    run_id = _detached(workers)
    _wait_for_task(workers.store, run_id, "completed")
    cancelled = _h3pipe(workers, "runs", "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    waited = _h3pipe(workers, "runs", "wait", run_id)
    assert waited.returncode == 130 and "cancelled" in waited.stderr
    shown = _h3pipe(workers, "runs", "show", run_id)
    assert "interrupted (cancelled)" in shown.stdout
    assert "guest@127.0.0.1" in shown.stdout or run_id in shown.stdout
    assert "guest:guest" not in shown.stdout  # the broker's password is never shown
    again = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER)
    assert again.returncode == 0, again.stderr
    assert _rows(workers, _run_id(again.stdout), tmp_path / "queue.parquet") == local


def test_the_embedded_store_serves_workers_on_its_own_machine_when_the_project_says_so(
        tmp_path, workers, local):
    folder = str(tmp_path / "shared-store")
    (workers.project / "h3pipe.yaml").write_text(
        f"queue: {{url: '{BROKER}', shared_store: true}}\n")
    w = workers.start(concurrency=2, store=folder)
    workers.wait_ready(w)
    r = _h3pipe(workers, "--store", folder, "run", PIPELINE, "--bbox", BBOX)
    assert r.returncode == 0, r.stderr + workers.log(0)
    run_id = _run_id(r.stdout)
    assert _rows(workers, run_id, tmp_path / "queue.parquet", store=folder) == local
    assert workers.log(0).count(" cells -> ") == 30  # the worker computed them, not the run


def test_a_batch_past_the_task_time_limit_fails_naming_the_limit(workers):
    _project(workers.project)
    _upgrade(workers)
    # The hard limit 31 s, so the soft one (30 s earlier) is 1 s: a 5 s batch passes it.
    (workers.project / "h3pipe.yaml").write_text(
        f"queue: {{url: '{BROKER}', task_seconds: 31}}\n")
    w = workers.start(concurrency=1, H3PIPE_FAULTS="task.stats#2:sleep=5")
    workers.wait_ready(w)
    r = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "stats#2" in last and "time limit (1 s)" in last and "--batch-size" in last


def test_a_queue_run_checks_conservation_as_a_local_one_does(tmp_path, workers):
    """An extensive source through workers: the run records the same figures as a local
    run, and a tolerance below rounding fails it with nothing published."""
    write_raster(workers.project / "pop.tif",
                 (np.arange(200 * 200, dtype="float32").reshape(200, 200) % 13),
                 west=29.0, north=-1.9, res=0.001)
    pipeline = zonal_pipeline("pop", "pop", ["sum"], dataset="people", resolution=8,
                              batch_size=20)
    strict = pipeline.replace("{stats: [sum]}", "{stats: [sum], conservation_tolerance: "
                              "1.0e-300}").replace("id: pop\n", "id: strict\n", 1)
    write_project(workers.project, sources={"pop": raster_source(
        "pop", str(workers.project / "pop.tif"), measure="extensive")},
        pipelines={"pop": pipeline, "strict": strict.replace("dataset: people",
                                                             "dataset: strict")})
    folder = tmp_path / "local-store"
    r = _h3pipe(workers, "--store", str(folder), "run", "pop", "--bbox", BBOX,
                "--workers", "1")
    assert r.returncode == 0, r.stderr
    local = _h3pipe(workers, "--store", str(folder), "runs", "show", "latest").stdout
    _upgrade(workers)
    workers.wait_ready(workers.start(concurrency=2))
    r = _h3pipe(workers, "run", "pop", "--bbox", BBOX, "--queue", BROKER)
    assert r.returncode == 0, r.stderr
    queued = _h3pipe(workers, "runs", "show", _run_id(r.stdout)).stdout
    line = [x for x in queued.splitlines() if x.startswith("conservation:")]
    assert line and line == [x for x in local.splitlines() if x.startswith("conservation:")]
    r = _h3pipe(workers, "run", "strict", "--bbox", BBOX, "--queue", BROKER)
    assert r.returncode == 1
    assert "the cells' sum is" in r.stderr and "nothing was published" in r.stderr
    e = _h3pipe(workers, "export", "strict", "-o", str(tmp_path / "x.parquet"))
    assert e.returncode == 2 and not (tmp_path / "x.parquet").exists()
