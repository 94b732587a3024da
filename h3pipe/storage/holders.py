"""Who holds a run, read from its row: :func:`holder_alive`, :func:`why_dead`,
:func:`describe`.

A holder is dead when, on this host, its pid is gone, or, on another host, its heartbeat is
older than :data:`STALE_SECONDS`. The run lock (:mod:`h3pipe.execution.lock`) claims on
these facts; listings, plans and cleanup read them.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

STALE_SECONDS = 120.0


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
