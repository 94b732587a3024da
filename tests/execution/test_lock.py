"""One writer per run, on either store: a second invocation of the same run exits 75
naming the holder, or waits with --wait; a dead holder's lock is taken over; of two
started together exactly one wins; a holder keeps its heartbeat fresh."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.stores import Backend
from tests.waiting import wait_until

BBOX = "29.02,-2.18,29.18,-2.02"


def _project(tmp_path, resolution=10):
    data = np.random.default_rng(5).normal(10, 1, (250, 250)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.95, res=0.001)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"],
                                                        resolution=resolution, batch_size=25)})


def _start(backend: Backend, proj, *extra, faults: str = ""):
    env = {k: v for k, v in os.environ.items() if k != "H3PIPE_FAULTS"}
    if faults:
        env["H3PIPE_FAULTS"] = faults
    return subprocess.Popen([sys.executable, "-m", "h3pipe", *backend.args, "--project",
                             str(proj), "run", "p", "--bbox", BBOX, "--workers", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _running(backend: Backend):
    """The (run id, pid) of the run recorded as running, if any (None before the catalog
    exists)."""
    try:
        rows = backend.sql("SELECT run_id, pid FROM runs WHERE status = 'running'")
    except (sqlite3.OperationalError, psycopg.Error):
        return None
    return rows[0] if rows else None


class _Lines:
    """A process's stderr, read line by line as it comes (by a thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.text += line

    def done(self) -> str:
        self._thread.join(timeout=30)
        return self.text


@contextlib.contextmanager
def _stopped(proc: subprocess.Popen[str]) -> Iterator[None]:
    """``proc`` stopped (SIGSTOP): alive, holding its lock, finishing nothing."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def _reap(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.communicate(timeout=30)


# Batches slowed, so a run is seen holding its lock before it ends.
SLOW = "batch:sleep=0.2"


def test_second_invocation_exits_75_naming_the_holder_or_waits(tmp_path, cli, store_backend):
    proj = _project(tmp_path, resolution=7)
    first = _start(store_backend, proj, faults=SLOW)
    procs = [first]
    try:
        run_id, pid = wait_until(lambda: _running(store_backend), 60, "the run to start")
        assert pid == first.pid
        with _stopped(first):  # so it is still running whatever the others' pace
            r = cli(*store_backend.args, "--project", proj, "run", "p", "--bbox", BBOX)
            assert r.exit_code == 75
            assert f"run {run_id} is already running, held by pid {pid} on " \
                   f"{socket.gethostname()}" in r.stderr and "--wait" in r.stderr
            waiter = _start(store_backend, proj, "--wait")
            procs.append(waiter)
            told = _Lines(waiter)
            wait_until(lambda: "waiting" in told.text, 60, "the second run to wait")
            assert waiter.poll() is None
        assert waiter.wait(timeout=120) == 0, told.done()
        assert "already completed" in waiter.stdout.read()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    finally:
        _reap(procs)


def test_two_started_together_one_wins(tmp_path, store_backend):
    proj = _project(tmp_path, resolution=7)
    procs = [_start(store_backend, proj, faults=SLOW) for _ in range(2)]
    try:
        run_id, pid = wait_until(lambda: _running(store_backend), 60, "one run to claim")
        [winner] = [p for p in procs if p.pid == pid]
        [loser] = [p for p in procs if p is not winner]
        # The winner stopped until the loser has decided, so the loser cannot arrive after
        # the run completed and report it done: exactly one may win, never both.
        with _stopped(winner):
            try:
                out, err = loser.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                # It waits on SQLite's write lock, held by the stopped winner: it decides
                # (and is refused: the row is there) once the winner goes on.
                pass
        out, err = loser.communicate(timeout=120)
        assert loser.returncode == 75, err
        assert f"run {run_id} " in err and "Traceback" not in err
        out, err = winner.communicate(timeout=120)
        assert winner.returncode == 0, err
    finally:
        _reap(procs)
    assert store_backend.sql("SELECT count(*), min(status), max(pid) FROM runs") == [
        (1, "completed", pid)]


def _plant(backend: Backend, proj, cli, host, pid, beat_age_s):
    """A run row that claims to be running, held by (host, pid), last beat that long ago."""
    r = cli(*backend.args, "--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    beat = (datetime.now(UTC) - timedelta(seconds=beat_age_s)).isoformat()
    backend.sql("UPDATE runs SET status = 'running', host = ?, pid = ?, heartbeat_at = ?",
                (host, pid, beat))


def test_a_dead_holders_lock_is_taken_over(tmp_path, cli, store_backend):
    proj = _project(tmp_path, resolution=8)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    _plant(store_backend, proj, cli, socket.gethostname(), dead.pid, 0)
    r = cli(*store_backend.args, "--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout, r.stderr
    assert store_backend.sql("SELECT status, pid, host FROM runs") == [
        ("completed", os.getpid(), socket.gethostname())]


def test_other_hosts_are_judged_by_their_heartbeat(tmp_path, cli, store_backend):
    proj = _project(tmp_path, resolution=8)
    _plant(store_backend, proj, cli, "another-host", 12345, 10)  # beat 10 s ago: alive
    r = cli(*store_backend.args, "--project", proj, "run", "p", "--bbox", BBOX)
    assert r.exit_code == 75 and "on another-host" in r.stderr
    old = (datetime.now(UTC) - timedelta(seconds=600)).isoformat()
    store_backend.sql("UPDATE runs SET heartbeat_at = ?", (old,))  # silent 10 minutes: dead
    r = cli(*store_backend.args, "--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout, r.stderr
    assert store_backend.sql("SELECT status, host FROM runs") == [
        ("completed", socket.gethostname())]


def test_a_holder_keeps_its_heartbeat_fresh(store_backend):
    from h3pipe.execution.lock import Heartbeat, claim
    from h3pipe.storage.catalog import now
    from h3pipe.storage.runlog import RunLog

    def beat() -> str:
        return store_backend.sql("SELECT heartbeat_at FROM runs WHERE run_id = 'r1'")[0][0]

    with store_backend.open() as store:
        log = RunLog(store.catalog)
        claim(log, "r1", None, {"run_id": "r1", "pipeline_id": "p", "pipeline_version": 1,
                                "pipeline_hash": "h", "dataset": "d", "scope_key": "k",
                                "scope_label": "k", "resolution": 5, "params": "{}",
                                "created_at": now()})
        first = beat()
        heartbeat = Heartbeat(log, "r1", every=0.05).start()
        try:  # two beats after the claim's: it keeps beating, not once
            second = wait_until(lambda: beat() > first and beat(), 30, "a heartbeat")
            wait_until(lambda: beat() > second, 30, "another heartbeat")
        finally:
            heartbeat.stop()
        stopped = beat()
        # Stopped: no more beats (the thread is joined, nothing can write after stop()).
        assert not heartbeat._thread.is_alive() and beat() == stopped
