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
from datetime import UTC, datetime
from typing import Any

from h3pipe.errors import Locked, StoreError
from h3pipe.storage.catalog import now

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
    if row["status"] != "running":
        return False
    if row["host"] == socket.gethostname():
        return pid_alive(row["pid"])
    beat = row.get("heartbeat_at") or row.get("started_at")
    if not beat:
        return False
    age = (datetime.now(UTC) - datetime.fromisoformat(beat)).total_seconds()
    return age < STALE_SECONDS


def describe(row: dict[str, Any]) -> str:
    return (f"held by pid {row['pid']} on {row['host']} since "
            f"{(row.get('started_at') or '?').replace('T', ' ')[:19]}")


def wait_or_refuse(store: Any, run_id: str, *, wait: bool, on_wait: Any = None
                   ) -> dict[str, Any] | None:
    """The run's row once no live process holds it (None when there is no row yet)."""
    told = False
    while True:
        rows = store.catalog.query("SELECT * FROM runs WHERE run_id = :id", {"id": run_id})
        if not rows or not holder_alive(rows[0]):
            return rows[0] if rows else None
        if not wait:
            raise Locked(f"run {run_id} is already running, {describe(rows[0])}",
                         hint="wait for it, or pass --wait to queue behind it")
        if not told and on_wait is not None:
            on_wait(f"run {run_id} is running, {describe(rows[0])}; waiting")
            told = True
        time.sleep(WAIT_POLL_SECONDS)


def claim(store: Any, run_id: str, previous: dict[str, Any] | None,
          values: dict[str, Any]) -> None:
    """Become the holder: insert the row, or take it over from the state seen in
    ``previous``; raise :class:`Locked` if another process got there first."""
    mine = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": now(), "heartbeat_at": now()}
    if previous is None:
        try:
            store.catalog.insert("runs", **(values | mine))
        except StoreError:
            rows = store.catalog.query("SELECT * FROM runs WHERE run_id = :id",
                                       {"id": run_id})
            if rows:
                raise Locked(f"run {run_id} was started by another process, "
                             f"{describe(rows[0])}") from None
            raise
        return
    with store.catalog.transaction() as tx:
        taken = tx.execute(
            "UPDATE runs SET status = :status, pid = :pid, host = :host, "
            "started_at = :started_at, heartbeat_at = :heartbeat_at, finished_at = NULL, "
            "error = NULL, cancel_requested_at = NULL, params = :params "
            "WHERE run_id = :id AND status = :old_status AND "
            "COALESCE(pid, 0) = :old_pid AND COALESCE(host, '') = :old_host",
            mine | {"params": values["params"], "id": run_id,
                    "old_status": previous["status"], "old_pid": previous["pid"] or 0,
                    "old_host": previous["host"] or ""})
    if taken != 1:
        raise Locked(f"run {run_id} was taken by another process just now",
                     hint="pass --wait to queue behind it")


class Heartbeat:
    """Refreshes the run's heartbeat from a thread while the run works."""

    def __init__(self, store: Any, run_id: str, every: float = HEARTBEAT_SECONDS) -> None:
        self._store, self._run_id, self._every = store, run_id, every
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
                with self._store.catalog.transaction() as tx:
                    tx.execute("UPDATE runs SET heartbeat_at = :at WHERE run_id = :id",
                               {"at": now(), "id": self._run_id})
            except StoreError:
                pass  # a missed beat only makes the run look older; the next one retries
