"""When the ``h3pipe run`` process alone is SIGKILLed (the OOM killer, ``kill -9``), its
workers must not outlive it: a worker can be inside a long batch, or holding results that
no one will read, and still has to exit within a few seconds."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.waiting import wait_until, within

BBOX = "29.0,-2.2,29.2,-2.0"


def _project(tmp_path: Path, batch_size: int) -> Path:
    """Resolution 11 over a 0.2-degree box: about 200,000 cells."""
    data = np.random.default_rng(1).normal(100, 10, (400, 400)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.98, res=0.0006)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=11,
                                                        batch_size=batch_size)})


def _stage_running(project: Path) -> bool:
    try:
        db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")
        return bool(db.execute("SELECT count(*) FROM events WHERE kind = 'stage' "
                               "AND status = 'running'").fetchone()[0])
    except sqlite3.OperationalError:  # the catalog is not made yet
        return False


def _start(project: Path, faults: str) -> tuple[subprocess.Popen[bytes], list[psutil.Process]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "--project", str(project), "-q", "run", "p",
         "--bbox", BBOX, "--workers", "2"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Worker processes are what this file is about (threads end with the run itself).
        env={**os.environ, "H3PIPE_FAULTS": faults, "H3PIPE_THREADS": "0"})
    wait_until(lambda: proc.poll() is not None or _stage_running(project), 60,
               "the run to reach its stage")
    assert proc.poll() is None, "the run ended before its stage"

    def workers() -> list[psutil.Process] | None:
        assert proc.poll() is None, "the run ended before its workers started"
        found = [c for c in psutil.Process(proc.pid).children(recursive=True)
                 if "spawn_main" in " ".join(c.cmdline())]
        return found if len(found) == 2 else None

    # The pool starts with the first stage that needs processes, maybe just after the
    # stage is recorded as running.
    wait_until(workers, 60, "two worker processes")
    return proc, psutil.Process(proc.pid).children(recursive=True)


def _left_after_kill(proc: subprocess.Popen[bytes], children: list[psutil.Process],
                     wait: float = 10.0) -> list[psutil.Process]:
    """SIGKILL the parent alone; the processes it started that are still there ``wait``
    seconds later (the resource tracker included: it ends when the last worker has)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, left = psutil.wait_procs(children, timeout=wait)
    return [c for c in left if _alive(c)]


def _wchan(pid: int, tid: int | None = None) -> str:
    """Where in the kernel a thread waits (its main thread's, by default): 'nanosleep' in
    time.sleep, 'pipe_read'/'pipe_write' blocked on a pipe ('anon_' first on newer
    kernels)."""
    try:
        return Path(f"/proc/{pid}/task/{tid or pid}/wchan").read_text()
    except OSError:  # gone
        return ""


def _threads_waiting(pid: int, where: str) -> bool:
    try:
        return any(where in _wchan(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return False


def _workers(children: list[psutil.Process]) -> list[psutil.Process]:
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def reap():
    """Whatever the outcome, kill what a failing case left behind."""
    started: list[psutil.Process] = []
    yield started
    for p in started:
        if _alive(p):
            p.kill()


def test_workers_inside_a_long_batch_exit_with_their_parent(tmp_path, reap):
    # Each batch sleeps 60 s in its worker: both are mid-batch when the parent dies.
    proc, children = _start(_project(tmp_path, 2000), "batch:sleep=60")
    reap.extend(children)
    workers = _workers(children)
    wait_until(lambda: all("nanosleep" in _wchan(w.pid) for w in workers), 60,
               "both workers to be inside a batch (its 60 s sleep)")
    left = _left_after_kill(proc, children)
    assert not left, [" ".join(p.cmdline()) for p in left]


def test_workers_holding_unread_results_exit_with_their_parent(tmp_path, reap):
    # Batches of 5,000 cells give results of a few hundred kB, more than a pipe holds; the
    # parent sleeps on its first write, so the workers' results pile up unread.
    proc, children = _start(_project(tmp_path, 5000), "task-output-written:sleep=60")
    reap.extend(children)
    workers = _workers(children)
    # The batches in flight computed (each worker waits for another) and their results
    # unread: a worker's thread blocked writing to the results' pipe, while the parent
    # sleeps.
    wait_until(lambda: "nanosleep" in _wchan(proc.pid)
               and all("pipe_read" in _wchan(w.pid) for w in workers)
               and any(_threads_waiting(w.pid, "pipe_write") for w in workers), 60,
               "the workers' results to pile up unread")
    left = _left_after_kill(proc, children)
    assert not left, [" ".join(p.cmdline()) for p in left]


_LEAVES_WITHOUT_CLOSING = """
import sys
from h3pipe.execution.executors.local import PoolExecutor
if __name__ == "__main__":
    ex = PoolExecutor(2)
    print(" ".join(str(p.pid) for p in ex._pool._procs), flush=True)
    sys.stdin.readline()  # until the test has seen the workers ignore SIGTERM
    raise SystemExit(3)   # as if an exception had escaped the executor's close
"""


def _ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_a_process_that_never_closed_its_pool_still_exits(tmp_path):
    """multiprocessing stops daemon workers at exit with SIGTERM, which ours ignore, and
    then waits for them: without our own exit handler the run would hang for ever."""
    script = tmp_path / "leave.py"
    script.write_text(_LEAVES_WITHOUT_CLOSING)
    repo = str(Path(__file__).resolve().parents[3])
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ,
                                                                    "PYTHONPATH": repo})
    try:
        pids = [int(p) for p in within(60, "the workers' pids", proc.stdout.readline).split()]
        wait_until(lambda: all(_ignores_sigterm(p) for p in pids), 60,
                   "the workers to ignore SIGTERM")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=20) == 3
    finally:
        proc.kill()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)
