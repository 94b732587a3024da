"""One writer per run: :func:`claim` makes this process the run's holder, or says who is.

The run row is the lock: status 'running' with the holder's pid and host, and a heartbeat
the holder refreshes (:class:`Heartbeat`). A holder is dead when, on this host, its pid is
gone, or, on another host, its heartbeat is older than :data:`STALE_SECONDS`. Claiming is a
compare-and-swap on the row, so of two cron invocations started together exactly one wins.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from h3pipe.errors import Locked, StoreError
from h3pipe.storage import retry
from h3pipe.storage.catalog import now
from h3pipe.storage.runlog import RunLog

STALE_SECONDS = 120.0
HEARTBEAT_SECONDS = 15.0
WAIT_POLL_SECONDS = 2.0


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(row: dict[str, Any]) -> bool:
    return row["status"] == "running" and why_dead(row) is None


def why_dead(run: dict[str, Any]) -> str | None:
    """Why a run recorded as running cannot be (its process is gone), or None when it is
    not recorded as running or may still be working: on this host its pid is gone, from
    another its heartbeat is older than :data:`STALE_SECONDS`."""
    if run["status"] != "running":
        return None
    if run.get("queue"):
        # A queue run is advanced by whichever worker finishes a stage; the process that
        # submitted it may be long gone. It lives until it completes, fails or is cancelled.
        return None
    if run["host"] == socket.gethostname():
        return None if pid_alive(run["pid"]) else f"pid {run['pid']} is gone on this host"
    beat = run.get("heartbeat_at") or run.get("started_at")
    if not beat:
        return f"no heartbeat from {run['host']} ever recorded"
    age = (datetime.now(UTC) - datetime.fromisoformat(beat)).total_seconds()
    return None if age < STALE_SECONDS else f"no heartbeat from {run['host']} for {age:.0f} s"


def describe(row: dict[str, Any]) -> str:
    if row.get("queue"):
        return (f"on the queue at {row['queue']} since "
                f"{(row.get('started_at') or '?').replace('T', ' ')[:19]}")
    return (f"held by pid {row['pid']} on {row['host']} since "
            f"{(row.get('started_at') or '?').replace('T', ' ')[:19]}")


def wait_or_refuse(log: RunLog, run_id: str, *, wait: bool,
                   on_wait: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The run's row once no live process holds it (None when there is no row yet)."""
    told = False
    while True:
        row = log.run(run_id)
        if row is None or not holder_alive(row):
            return row
        if not wait:
            raise Locked(f"run {run_id} is already running, {describe(row)}",
                         hint="wait for it, or pass --wait to queue behind it")
        if not told and on_wait is not None:
            on_wait(f"run {run_id} is running, {describe(row)}; waiting")
            told = True
        time.sleep(WAIT_POLL_SECONDS)


def claim(log: RunLog, run_id: str, previous: dict[str, Any] | None,
          values: dict[str, Any]) -> None:
    """Become the holder: insert the row, or take it over from the state seen in
    ``previous``; raise :class:`Locked` if another process got there first."""
    mine = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": now(), "heartbeat_at": now()}
    if previous is None:
        if not log.insert_run(values | mine):
            row = log.run(run_id)
            holder = f", {describe(row)}" if row else ""
            raise Locked(f"run {run_id} was started by another process{holder}")
        return
    if not log.take_over(run_id, previous, mine, values["params"]):
        raise Locked(f"run {run_id} was taken by another process just now",
                     hint="pass --wait to queue behind it")


class Heartbeat:
    """Refreshes the run's heartbeat from a thread while the run works."""

    def __init__(self, log: RunLog, run_id: str, every: float = HEARTBEAT_SECONDS) -> None:
        self._log, self._run_id, self._every = log, run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="h3pipe-heartbeat",
                                        daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with retry.once():  # a beat that cannot wait: the next one tries again
                    self._log.beat(self._run_id)
            except StoreError:
                pass  # a missed beat only makes the run look older
