"""The messages of the queue backend, named by string: :data:`BATCH_TASK`,
:data:`ADVANCE_TASK` and :func:`send`.

A message carries a task's key, never its batch (that is in the store, see
:mod:`h3pipe.queue.codec`). Senders name a task by its string; only a worker imports the
functions behind the names (:mod:`h3pipe.queue.tasks`, listed by the application as a
string), so the application, the work and the submitter never import each other in a
circle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h3pipe.errors import QueueError

if TYPE_CHECKING:
    from celery import Celery

BATCH_TASK = "h3pipe.batch"  # args: run id, stage, step id, task number
ADVANCE_TASK = "h3pipe.advance"  # args: run id, stage
# A message published while the broker restarts is tried again for about a minute.
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.5, "interval_step": 0.5,
                 "interval_max": 2.0}


def send(app: Celery, task: str, args: list[Any], queue: str) -> None:
    """Publish one message, riding out a broker restart."""
    try:
        app.send_task(task, args=args, queue=queue, retry=True, retry_policy=PUBLISH_RETRY)
    except Exception as exc:
        raise QueueError(f"cannot send {task} {args} to the queue: "
                         f"{' '.join(str(exc).split())[:200]}",
                         hint="check that the broker is up") from exc


__all__ = ["ADVANCE_TASK", "BATCH_TASK", "PUBLISH_RETRY", "send"]
