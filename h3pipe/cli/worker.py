"""``h3pipe worker``: compute the batches of queue runs on this machine."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from h3pipe.cli import options as opt
from h3pipe.cli.app import app, project_of


@app.command("worker")
def worker(
    ctx: typer.Context,
    queue: opt.Queue = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", "-c", min=1, help="Batches computed at once, each in its own "
        "process (default: this machine's CPUs).")] = None,
    grace: opt.Grace = 30.0,
) -> int:
    """Take batches of queue runs from the broker and compute them; each task's output
    and its completion are written to the store in one transaction. Needs the broker, the
    PostgreSQL store (--store or H3PIPE_STORE) and the runs' data. Logs one line per
    batch. On SIGTERM it takes no new batch, lets running ones finish within --grace
    seconds, then gives the rest back to the queue.

    Example:

        h3pipe --store postgresql://h3@db/h3 worker --queue amqp://h3:secret@mq:5672// -c 2
    """
    # Read by Celery's process pool when it is first imported, so set before: SIGTERM is
    # then Celery's warm shutdown with our grace timer (h3pipe.queue.worker).
    os.environ.pop("REMAP_SIGTERM", None)
    return project_of(ctx).worker(queue, concurrency=concurrency, grace_seconds=grace)
