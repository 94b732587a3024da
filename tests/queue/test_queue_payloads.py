"""What workers trust: a row of the store's queue tables or a message on the broker is
data, never code. A pickle put in the store by hand, a plan of another format, and a
pickled Celery message are refused by name with real RabbitMQ, PostgreSQL and
``h3pipe worker`` processes, and the file their unpickling would create never appears."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import psycopg

from h3pipe.about import version
from h3pipe.queue import codec
from tests.queue.test_queue_runs import BBOX, PIPELINE, _h3pipe, _project, _upgrade
from tests.waiting import wait_until
from tests.workers import BROKER


class _Touch:
    """Unpickling this creates ``path`` (by ``pathlib.Path.touch``: no test code needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _detached(workers) -> str:
    _project(workers.project)
    _upgrade(workers)
    r = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER, "--detach")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _statuses(workers, run_id):
    with psycopg.connect(workers.store) as db:
        return dict(db.execute("SELECT status, count(*) FROM h3pipe.tasks WHERE run_id = %s "
                               "GROUP BY status", (run_id,)).fetchall())


def test_a_pickled_batch_in_the_store_fails_its_task_and_never_runs(tmp_path, workers):
    run_id = _detached(workers)  # no worker yet: the batches wait in the store
    marker = tmp_path / "unpickled"
    with psycopg.connect(workers.store, autocommit=True) as db:
        assert db.execute("UPDATE h3pipe.queue_batches SET payload = %s WHERE run_id = %s "
                          "AND step_id = 'stats' AND task_no = 3",
                          (pickle.dumps(_Touch(marker)), run_id)).rowcount == 1
    workers.wait_ready(workers.start(concurrency=1))
    waited = _h3pipe(workers, "runs", "wait", run_id)
    assert waited.returncode == 1, waited.stderr
    last = waited.stderr.strip().splitlines()[-1]
    assert "stats#3" in last and "was recorded by an older h3pipe" in last, last
    assert "Traceback" not in waited.stderr
    assert not marker.exists()
    statuses = _statuses(workers, run_id)  # the run failed at once: the rest are pending
    assert statuses["failed"] == 1 and "running" not in statuses, statuses
    shown = _h3pipe(workers, "runs", "show", run_id)
    assert "was recorded by an older h3pipe" in shown.stdout
    # Run again, as the message says: the batch is written anew and the run completes.
    again = _h3pipe(workers, "run", PIPELINE, "--bbox", BBOX, "--queue", BROKER)
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stdout and not marker.exists()


def test_a_plan_of_another_format_is_refused_naming_both_versions(tmp_path, workers):
    run_id = _detached(workers)
    other = {"format": 99, "h3pipe": "9.9.9", "kind": "plan", "value": None}
    with psycopg.connect(workers.store, autocommit=True) as db:
        db.execute("UPDATE h3pipe.queue_runs SET plan = %s WHERE run_id = %s",
                   (json.dumps(other).encode(), run_id))
    workers.wait_ready(workers.start(concurrency=1))
    # Stage 1's batches are in the store already; publishing needs the plan.
    waited = _h3pipe(workers, "runs", "wait", run_id)
    assert waited.returncode == 1
    assert (f"the plan of run {run_id} was written by h3pipe 9.9.9 with plan format 99; "
            f"this h3pipe {version()} reads format {codec.FORMAT}; upgrade h3pipe on this "
            "worker") in waited.stderr
    e = _h3pipe(workers, "export", "ds", "-o", str(tmp_path / "x.parquet"))
    assert e.returncode == 2 and not (tmp_path / "x.parquet").exists()  # nothing published


def test_a_pickled_message_on_the_queue_is_refused_by_the_worker(tmp_path, workers):
    from celery import Celery

    _project(workers.project)
    _upgrade(workers)
    w = workers.start(concurrency=1)
    workers.wait_ready(w)
    marker = tmp_path / "unpickled"
    sender = Celery("attacker", broker=BROKER, set_as_current=False)
    sender.conf.update(task_serializer="pickle", accept_content=["pickle"])
    sender.send_task("h3pipe.batch", args=[_Touch(marker), 1, "stats", 1],
                     queue=workers.queue_name, serializer="pickle")
    try:
        wait_until(lambda: "untrusted content" in workers.log(0), 60,
                   "the worker to refuse the pickle")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {workers.log(0)}") from None
    assert "application/x-python-serialize" in workers.log(0)
    assert not marker.exists() and w.poll() is None
