"""Database blips absorbed: a PostgreSQL server of this test's own (never the shared one) is
restarted while a local run and a queue run write to it; both end with exit 0 and the same
rows as a run without the restart. A server that stays down past the retry bound ends the
run with exit 69 and a message saying how to resume, which then gives the same rows."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.storage.test_postgis_store import assert_same_bits
from tests.workers import BROKER, REPO, Workers, broker_up

BIN = Path("/usr/lib/postgresql/15/bin")
BBOX = "29.0,-2.1,29.2,-1.9"
DEADLINE_S = 120


class Cluster:
    """A PostgreSQL 15 cluster in a temporary folder, run as the postgres user on a free
    port of 127.0.0.1, that a test may stop, start and restart."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="h3pipe-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data, self.log = self.root / "data", self.root / "server.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._as_postgres(BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                          "--no-sync")
        self.start()

    def _as_postgres(self, *args: str | Path) -> None:
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def _ctl(self, *args: str) -> None:
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                          *args)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def database(self) -> str:
        name = f"h3pipe_{secrets.token_hex(4)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not (BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 binaries not found in {BIN}")
    c = Cluster()
    yield c
    c.remove()


def _project(root: Path) -> Path:
    data = (np.arange(200 * 200, dtype="float32").reshape(200, 200) % 97) + 1000
    data[50:60, 50:60] = -9999
    write_raster(root / "dem.tif", data, west=29.0, north=-1.9, res=0.001, nodata=-9999)
    return write_project(root, sources={"dem": raster_source("dem", str(root / "dem.tif"))},
                         pipelines={"elev": zonal_pipeline(
                             "elev", "dem", ["count", "sum", "mean", "min", "max"],
                             resolution=8, batch_size=10)})


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("H3PIPE_")}
    return env | {"PYTHONPATH": str(REPO)} | extra


def _h3pipe(project: Path, store: str, *args: str, **env: str
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(project),
                           "--store", store, *args], capture_output=True, text=True,
                          timeout=300, env=_env(**env))


def _start(project: Path, store: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "h3pipe", "--project", str(project),
                             "--store", store, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(**env))


def _upgraded(project: Path, store: str) -> str:
    r = _h3pipe(project, store, "db", "upgrade")
    assert r.returncode == 0, r.stderr
    return store


def _completed_tasks(store: str) -> int:
    """Tasks recorded completed, or -1 while the server cannot answer."""
    try:
        with psycopg.connect(store, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM h3pipe.tasks "
                               "WHERE status = 'completed'").fetchone()
    except psycopg.Error:
        return -1
    return int(row[0]) if row else 0


def _when(ready: Callable[[], bool], proc: subprocess.Popen[str] | None, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not ready():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"ended ({proc.returncode}) before {what}: {out}{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {DEADLINE_S} s")
        time.sleep(0.05)


def _export(project: Path, store: str, out: Path):
    r = _h3pipe(project, store, "export", "ds", "-o", str(out))
    assert r.returncode == 0, r.stderr
    return pq.read_table(out)


@pytest.fixture(scope="module")
def reference(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    """The run's rows with no restart, on a database of the same server."""
    root = tmp_path_factory.mktemp("reference")
    project = _project(root / "p")
    store = _upgraded(project, cluster.database())
    r = _h3pipe(project, store, "run", "elev", "--bbox", BBOX, "--workers", "1")
    assert r.returncode == 0, r.stderr
    table = _export(project, store, root / "ref.parquet")
    assert table.num_rows > 500
    return table


SLOW = {"H3PIPE_FAULTS": "task-recorded:sleep=0.03"}  # a run of several seconds


def test_a_restart_mid_run_costs_nothing(cluster, reference, tmp_path):
    project = _project(tmp_path / "p")
    store = _upgraded(project, cluster.database())
    run = _start(project, store, "run", "elev", "--bbox", BBOX, "--workers", "1", **SLOW)
    _when(lambda: _completed_tasks(store) >= 10, run, "10 tasks done")
    cluster.restart()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, out + err
    assert _completed_tasks(store) > 10  # tasks were recorded after the restart too
    assert_same_bits(_export(project, store, tmp_path / "out.parquet"), reference)


def test_a_store_down_past_the_bound_fails_the_run_and_resume_completes_it(
        cluster, reference, tmp_path):
    project = _project(tmp_path / "p")
    store = _upgraded(project, cluster.database())
    run = _start(project, store, "run", "elev", "--bbox", BBOX, "--workers", "1",
                 H3PIPE_STORE_RETRY_SECONDS="2", **SLOW)
    _when(lambda: _completed_tasks(store) >= 10, run, "10 tasks done")
    cluster.stop()
    try:
        out, err = run.communicate(timeout=120)
    finally:
        cluster.start()
    assert run.returncode == 69, out + err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # one line, after the progress
    assert last.startswith("error: run "), err
    run_id = last.split("run ", 1)[1].split()[0]
    assert f"'h3pipe resume {run_id}'" in last and f"127.0.0.1:{cluster.port}" in last
    shown = _h3pipe(project, store, "runs", "show", run_id)
    assert "dead" in shown.stdout and f"h3pipe resume {run_id}" in shown.stdout, shown.stdout
    r = _h3pipe(project, store, "resume", run_id)
    assert r.returncode == 0, r.stderr
    assert_same_bits(_export(project, store, tmp_path / "out.parquet"), reference)


def test_a_restart_during_a_queue_run_costs_nothing(cluster, reference, tmp_path):
    broker_up()
    project = _project(tmp_path / "p")
    store = _upgraded(project, cluster.database())
    (tmp_path / "logs").mkdir()
    workers = Workers(store, project, f"h3pipe-test-{secrets.token_hex(4)}", tmp_path / "logs")
    try:
        for _ in range(2):
            workers.wait_ready(workers.start(**SLOW))
        run = _start(project, store, "run", "elev", "--bbox", BBOX, "--queue", BROKER,
                     H3PIPE_QUEUE_NAME=workers.queue_name)
        _when(lambda: _completed_tasks(store) >= 10, run, "10 tasks done")
        cluster.restart()
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, out + err + workers.log(0)
    finally:
        workers.stop_all()
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", workers.queue_name],
                       capture_output=True, timeout=30)
    assert_same_bits(_export(project, store, tmp_path / "out.parquet"), reference)
