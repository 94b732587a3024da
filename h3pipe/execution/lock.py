"""One writer per run: :func:`claim` makes this process the run's holder, or says who is.

The run row is the lock: status 'running' with the holder's pid and host, and a heartbeat
the holder refreshes (:class:`Heartbeat`); :mod:`h3pipe.storage.holders` says when a
holder is dead. Claiming is a
compare-and-swap on the row, so of two cron invocations started together exactly one wins.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from h3pipe.errors import Locked, StoreError
from h3pipe.storage import retry
from h3pipe.storage.catalog import now
from h3pipe.storage.holders import describe, holder_alive
from h3pipe.storage.records import RunRecord
from h3pipe.storage.runlog import RunLog

HEARTBEAT_SECONDS = 15.0
WAIT_POLL_SECONDS = 2.0


def wait_or_refuse(log: RunLog, run_id: str, *, wait: bool,
                   on_wait: Callable[[str], None] | None = None) -> RunRecord | None:
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
