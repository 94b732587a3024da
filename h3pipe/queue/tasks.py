"""The functions behind the queue's task names, registered with every Celery application
(``shared_task``). Only a worker imports this module: the application lists it by name
(``include``), and senders name tasks by :mod:`h3pipe.queue.messages`' strings."""

from __future__ import annotations

from celery import shared_task

from h3pipe.queue import work
from h3pipe.queue.messages import ADVANCE_TASK, BATCH_TASK

batch = shared_task(name=BATCH_TASK, bind=True)(work.batch_task)
advance = shared_task(name=ADVANCE_TASK, bind=True)(work.advance_task)

__all__ = ["advance", "batch"]
