"""The Celery application of the queue backend: :func:`make_app`, and :func:`check_broker`.

The application names its task module by string (``include``): it never imports the work,
so a process that only sends messages loads none of it.

Each setting below is there for a failure the system before us met; the docs
(``docs/queue.md``) give the same reasons to whoever runs the broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from h3pipe import extras
from h3pipe.errors import ConfigError, QueueError
from h3pipe.queue.settings import QueueSettings

if TYPE_CHECKING:
    from celery import Celery

# The module whose import registers the functions behind the task names: a worker's.
TASKS_MODULE = "h3pipe.queue.tasks"


def make_app(settings: QueueSettings, **worker_conf: Any) -> Celery:
    """The application for ``settings``; ``worker_conf``: what only workers need (where
    their store is), kept in the app's configuration under ``h3pipe_*`` keys."""
    # Every use of Celery (a worker, its signals, a submitter, a task) starts from here.
    extras.require("queue", f"the queue at {settings.shown}")
    from celery import Celery

    app = Celery("h3pipe", broker=settings.url, set_as_current=False,
                 include=[TASKS_MODULE])
    app.conf.update(
        # Acknowledge a message only when its task has returned: a worker lost mid-batch
        # (killed, out of memory, its machine gone) leaves the message unacknowledged, and
        # RabbitMQ delivers it again to another worker.
        task_acks_late=True,
        # ... and when only the worker's child process dies (SIGKILL, the OOM killer),
        # requeue its message instead of acknowledging it as failed.
        task_reject_on_worker_lost=True,
        # One message reserved per process: a long batch never holds others back that an
        # idle worker elsewhere could take, and a lost worker takes few with it.
        worker_prefetch_multiplier=1,
        # No result backend: outcomes live in the store, written in the task's own
        # transaction; Celery's result would be a second, weaker record.
        task_ignore_result=True,
        result_backend=None,
        # Below RabbitMQ's consumer_timeout (30 min by default), which would otherwise close
        # the channel of a worker still computing a late-acknowledged message.
        task_time_limit=settings.task_seconds,
        task_soft_time_limit=max(1, settings.task_seconds - 30),
        # JSON only: a message carries a task's key; the batch itself is in the store (as
        # data too: queue.codec). A pickled message is refused, never unpickled: whoever
        # can publish to the queue must not be able to run code in a worker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=settings.name,
        task_create_missing_queues=True,
        # A pool process warms up (libraries, the compiled kernel: seconds) before it says
        # it is up; Celery's default of 4 s would kill it as stuck.
        worker_proc_alive_timeout=120,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # Our own log line per batch; Celery's per-task lines and events add nothing.
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_redirect_stdouts=False,
        **{f"h3pipe_{k}": v for k, v in worker_conf.items()},
    )
    return app


def check_broker(app: Celery, settings: QueueSettings) -> None:
    """Fail now, in one line naming the broker, if it cannot be reached."""
    from amqp.exceptions import AccessRefused

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except AccessRefused as exc:  # the broker is up: waiting or starting it will not help
        user = urlsplit(settings.url).username or "guest"
        raise ConfigError(f"the queue at {settings.host} refused the login of user '{user}'",
                          hint="check the user and password in --queue / H3PIPE_QUEUE / "
                          "'queue:' of h3pipe.yaml") from exc
    except Exception as exc:
        raise QueueError(f"cannot reach the queue at {settings.shown}: "
                         f"{' '.join(str(exc).split())[:200]}",
                         hint=f"start RabbitMQ on {settings.host} ('rabbitmq-server "
                         "-detached') or check --queue / H3PIPE_QUEUE") from exc


__all__ = ["TASKS_MODULE", "check_broker", "make_app"]
