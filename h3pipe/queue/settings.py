"""Where a run's queue is and how it behaves: :class:`QueueSettings`.

The broker URL comes from ``--queue``, else ``$H3PIPE_QUEUE``, else ``queue:`` in
h3pipe.yaml (a URL, or a mapping with ``url``, ``name``, ``max_deliveries`` and
``task_seconds``, and ``shared_store`` to allow the embedded store for workers on its own
machine). Submitters and workers must agree on the queue's name
(``$H3PIPE_QUEUE_NAME`` or ``queue.name``, default ``h3pipe``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from h3pipe import extras, masking
from h3pipe.errors import ConfigError, UsageError

DEFAULT_NAME = "h3pipe"
# A batch delivered this many times without finishing has killed its worker every time.
DEFAULT_MAX_DELIVERIES = 3
# RabbitMQ closes the channel of a consumer that holds a message unacknowledged longer
# than its consumer_timeout (30 minutes by default); with late acknowledgement a task is
# that long, so its hard limit stays below, with a margin for the acknowledgement.
RABBITMQ_CONSUMER_TIMEOUT = 1800
DEFAULT_TASK_SECONDS = 1500


@dataclass(frozen=True)
class QueueSettings:
    url: str
    name: str = DEFAULT_NAME
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    task_seconds: int = DEFAULT_TASK_SECONDS
    # The embedded store, for workers on the machine that holds it: SQLite's WAL needs
    # shared memory, so no network file system makes it safe across machines.
    shared_store: bool = False

    def __post_init__(self) -> None:
        masking.remember(self.url)
        if not self.url.startswith(("amqp://", "amqps://", "pyamqp://")):
            raise UsageError(f"queue '{self.shown}' is not an amqp:// URL",
                             hint="pass --queue amqp://USER:PASSWORD@HOST:5672//")
        # Every command that uses a queue settles it here first: the one place to say
        # that Celery is missing before any work (app, work and worker say it again).
        extras.require("queue", f"the queue at {self.shown}")
        if self.max_deliveries < 1:
            raise ConfigError(f"queue max_deliveries {self.max_deliveries} must be at least 1")
        if not 1 <= self.task_seconds < RABBITMQ_CONSUMER_TIMEOUT:
            raise ConfigError(f"queue task_seconds {self.task_seconds} must be between 1 and "
                              f"{RABBITMQ_CONSUMER_TIMEOUT - 1} (RabbitMQ's consumer_timeout "
                              "would close the worker's channel first)")

    @property
    def shown(self) -> str:
        """The URL without its password, as it may be printed or recorded."""
        return masking.shown(self.url)

    @property
    def host(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"

    @classmethod
    def find(cls, given: str | None, settings: dict[str, Any]) -> QueueSettings | None:
        """The queue a command uses: ``--queue``, ``$H3PIPE_QUEUE``, then h3pipe.yaml; None
        when none is set (the local pool)."""
        declared = settings.get("queue")
        table: dict[str, Any] = declared if isinstance(declared, dict) else {"url": declared}
        url = given or os.environ.get("H3PIPE_QUEUE") or table.get("url")
        if not url:
            return None
        return cls(url=url,
                   name=os.environ.get("H3PIPE_QUEUE_NAME") or str(table.get("name",
                                                                             DEFAULT_NAME)),
                   max_deliveries=int(table.get("max_deliveries", DEFAULT_MAX_DELIVERIES)),
                   task_seconds=int(table.get("task_seconds", DEFAULT_TASK_SECONDS)),
                   shared_store=bool(table.get("shared_store", False)))


__all__ = ["QueueSettings"]
