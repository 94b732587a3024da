"""The documented Python API: what every ``h3pipe`` command does, callable from a notebook,
an orchestrator or another program.
"""

from __future__ import annotations

import os
import signal
import socket

from h3pipe.config.project import ProjectConfig
from h3pipe.results.runs import cancellable, project_store


def cancel_run(project: ProjectConfig, run_id: str) -> str:
    """Ask a running run to stop taking new tasks; on this host, also send it SIGTERM.
    Returns what was done."""
    with project_store(project) as store:
        run = cancellable(store, run_id)
        run_id = run["run_id"]
        if run.get("queue"):  # only ever on the PostgreSQL store
            from h3pipe.queue.work import settle_cancel  # Celery loads only for queue runs

            settle_cancel(store, run_id)  # type: ignore[arg-type]  # ends it now if none of its tasks runs
            return (f"asked run {run_id} to stop; its workers take none of its tasks any "
                    "more, and the running ones finish")
    if run["host"] == socket.gethostname():
        os.kill(run["pid"], signal.SIGTERM)
        return f"asked run {run_id} to stop (SIGTERM to pid {run['pid']})"
    return (f"asked run {run_id} to stop; its process on {run['host']} stops before its next "
            "task")
