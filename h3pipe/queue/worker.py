"""``h3pipe worker``: :func:`start_worker` runs a Celery worker of the queue backend.

Stopping: SIGTERM (a service stop) or SIGINT makes Celery's warm shutdown: no new message
is taken and the running batches go on. If they are not done within the grace period, a
timer asks Celery for its cold shutdown, which gives their messages back to the broker
(late acknowledgement: never acknowledged, so delivered again to another worker); their
tasks' rows say running until a worker takes them again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from h3pipe import lineage, masking, storage
from h3pipe.config.project import ProjectConfig
from h3pipe.errors import ConfigError
from h3pipe.lineage import Lineage
from h3pipe.operations import warm_up
from h3pipe.queue.app import check_broker, make_app
from h3pipe.queue.settings import QueueSettings

log = logging.getLogger("h3pipe.worker")


def start_worker(settings: QueueSettings, store_location: str, root: Path, *,
                 concurrency: int, grace_seconds: float, loglevel: str = "INFO") -> int:
    """Run a worker until it is stopped; returns its exit code."""
    if not storage.is_database(store_location) and not settings.shared_store:
        raise ConfigError(f"a worker needs the PostgreSQL store, not the folder "
                          f"{store_location}", hint="pass --store postgresql://... or set "
                          "H3PIPE_STORE (the same database the runs are submitted to); for "
                          "workers on the store's machine only, queue.shared_store: true")
    with storage.open_store(store_location, root):
        pass  # fail now, in one line, if the store is unreachable or needs migrating
    # Where the runs this worker ends send their last lineage event (its pool processes,
    # forked, inherit it); settings that cannot work fail now.
    lineage.use(Lineage.of(ProjectConfig(root).read_settings(), root, log.warning))
    app = make_app(settings, store=store_location, root=root)
    check_broker(app, settings)
    _log_lines(loglevel)
    _warm_pool_processes()
    _grace_on_shutdown(grace_seconds)
    log.info("worker %s:%d: queue %s on %s, store %s, %d process(es)", socket.gethostname(),
             os.getpid(), settings.name, settings.shown, masking.shown(store_location),
             concurrency)
    argv = ["--quiet", "worker", f"--concurrency={concurrency}", "--pool=prefork",
            f"--hostname=h3pipe-{os.getpid()}@%h", f"--queues={settings.name}",
            "--without-gossip", "--without-mingle", f"--loglevel={loglevel}"]
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _log_lines(level: str) -> None:
    """One line per batch, ours, on stderr; Celery's own only when they matter."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Scrubbed("%(asctime)s %(levelname)s %(message)s"))
    ours = logging.getLogger("h3pipe")
    ours.addHandler(handler)
    ours.setLevel(level)
    ours.propagate = False
    for name in ("celery", "kombu", "amqp"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _Scrubbed(logging.Formatter):
    """A log line, traceback included, with every password masked (a batch's error may
    quote a connection string)."""

    def format(self, record: logging.LogRecord) -> str:
        return masking.scrub(super().format(record))


def _warm_pool_processes() -> None:
    """Each pool process loads the operations' libraries and compiled kernels before its
    first batch (as the local pool's workers do), so no batch pays for them, nor for them
    against its time limit."""
    from celery.signals import worker_process_init

    def warm(**_: Any) -> None:
        try:
            warm_up()
        except Exception as exc:  # shows again, with its context, on the first batch
            log.warning("worker %s: warming up failed: %s", socket.gethostname(), exc)

    worker_process_init.connect(warm, weak=False)


def _grace_on_shutdown(grace_seconds: float) -> None:
    """Say when the worker is ready; once the warm shutdown starts, a cold one follows
    after ``grace_seconds``."""
    from celery.signals import worker_ready, worker_shutting_down

    def on_ready(**_: Any) -> None:
        log.info("worker %s:%d: ready", socket.gethostname(), os.getpid())

    worker_ready.connect(on_ready, weak=False)

    def on_shutdown(sender: Any = None, sig: Any = None, how: Any = None, **_: Any) -> None:
        if str(how).lower() != "warm":
            return
        log.info("worker %s: stopping (%s); running batches get %g s to finish",
                 socket.gethostname(), sig, grace_seconds)
        timer = threading.Timer(grace_seconds, _cold)
        timer.daemon = True
        timer.start()

    worker_shutting_down.connect(on_shutdown, weak=False)


def _cold() -> None:
    log.warning("worker %s: grace period over; giving the running batches back to the "
                "queue", socket.gethostname())
    os.kill(os.getpid(), signal.SIGQUIT)


__all__ = ["start_worker"]
