"""Where runs submitted over HTTP execute: :class:`Jobs`, made by :meth:`Jobs.start` as
:class:`WarmJobs` (a pool of warm local worker processes) or :class:`QueueJobs` (the queue
backend's ``h3pipe worker`` processes).

A job is a run: its id is the run id, decided by ``Project.prepare`` in the server (some
15 ms), so the same request twice is the same job. Without a queue the plan goes to one of
``workers`` processes that imported the libraries and compiled the kernels when they
started, and that run ``Project.execute(plan)`` one plan at a time; the others wait in the
server, in the order they came. Every call here is blocking and made from FastAPI's
threadpool (sync routes), never from the event loop.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h3pipe.api
from h3pipe import grid
from h3pipe.api import Project, Reporter, Scope, ScopeRef
from h3pipe.errors import ConfigError, H3PipeError, NotFound, UsageError
from h3pipe.operations import warm_up
from h3pipe.server.recent import Recent
from h3pipe.server.status import ENDED, job_status, rfc3339
from h3pipe.storage import is_database

if TYPE_CHECKING:
    from h3pipe.api import RunPlan

# How long close() lets running runs stop gracefully (they are asked to stop, and their
# running tasks finish) before their workers are killed; a killed run resumes later.
CLOSE_SECONDS = 10.0
# A run's record is read from the store at most this often, however many clients poll it.
RECORD_SECONDS = 0.1
# How often the watcher looks at the workers' health when no message comes.
WATCH_SECONDS = 0.2
# Runs that ended on this server, remembered for what the store cannot tell (dropped
# before they started, or their worker died).
KEPT = 10_000
# How often an idle worker checks that the server is still there.
PARENT_SECONDS = 0.5


@dataclass(frozen=True)
class Job:
    """What a submission answers: the run's id, whether this request started it (False:
    the same run was already waiting, running or completed) and its OGC status."""

    run_id: str
    created: bool
    status: str


class Jobs:
    """Runs submitted over HTTP. :meth:`start` picks the backend."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._records: Recent[dict[str, Any]] = Recent(RECORD_SECONDS)
        with project.open_store(create=True):  # a new project's: runs are read from it
            pass
        self.folder = _server_folder(project)

    @classmethod
    def start(cls, project: Project, *, workers: int, queue: str | None) -> Jobs:
        """Warm local workers, or the queue when ``queue`` (or $H3PIPE_QUEUE, or
        ``queue:`` of h3pipe.yaml) names one."""
        if project.queue_settings(queue) is not None:
            return QueueJobs(project, queue)
        return WarmJobs(project, workers)

    def submit(self, pipeline: str, scope: Scope, resolution: int | None = None,
               **options: Any) -> Job:
        raise NotImplementedError

    def cancel(self, run_id: str) -> str:
        """Ask the run to stop, as ``h3pipe runs cancel`` does; returns what was done."""
        try:
            return self.project.cancel(run_id)
        finally:
            self.forget(run_id)

    def in_flight(self) -> set[str]:
        """Runs submitted here that have not ended."""
        raise NotImplementedError

    def record(self, run_id: str) -> dict[str, Any]:
        """The run's record as :func:`~h3pipe.server.status.job_status` reads it, also for
        a run still waiting here (which the store knows nothing of yet); NotFound for a
        run neither here nor in the store. Only an exact run id names a job. Read from the
        store at most once per :data:`RECORD_SECONDS` whoever asks (and again as soon as
        a worker here says the run started or ended)."""
        return dict(self._records.get(run_id, lambda: self._from_store(run_id)))

    def forget(self, run_id: str) -> None:
        self._records.forget(run_id)

    def _from_store(self, run_id: str) -> dict[str, Any]:
        missing = NotFound(f"no run '{run_id}'", hint="list jobs with GET /jobs")
        try:
            row = dict(self.project.run_record(run_id))
        except ConfigError:  # NotFound, or an ambiguous prefix (the CLI's shorthand)
            raise missing from None
        if row["run_id"] != run_id:  # a unique prefix, or 'latest': the same
            raise missing
        return row

    def close(self) -> None:
        if self.folder.name.startswith(_TEMP_PREFIX):
            shutil.rmtree(self.folder, ignore_errors=True)


_TEMP_PREFIX = "h3pipe-serve-"


def _server_folder(project: Project) -> Path:
    """Where the server keeps what it writes (AOI files given in requests, the exports of
    results): under the store folder, or a folder of its own in the temp folder when the
    store is PostgreSQL (removed when the server stops)."""
    project.read_settings()
    location = project.store_location()
    if is_database(location):
        return Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
    folder = project.root / location / "server"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- the queue ------------------------------------------------------------------------------

class QueueJobs(Jobs):
    """Runs go to the queue backend (``h3pipe worker`` processes anywhere); the server only
    submits them (detached) and reads the store."""

    def __init__(self, project: Project, queue: str | None) -> None:
        super().__init__(project)
        self.queue = queue
        self._submitted: set[str] = set()
        self._lock = threading.Lock()  # one submission at a time: Project caches its files

    def submit(self, pipeline: str, scope: Scope, resolution: int | None = None,
               **options: Any) -> Job:
        if options.get("workers") is not None:
            raise UsageError("workers are the queue's 'h3pipe worker' processes here; "
                             "drop 'workers'")
        with self._lock:
            done = self.project.run(pipeline, scope, resolution, queue=self.queue,
                                    detach=True, **options)
        self._submitted.add(done.run_id)
        status = job_status(self.record(done.run_id))["status"]
        return Job(done.run_id, getattr(done, "state", "") in ("submitted", "resumed"),
                   status)

    def in_flight(self) -> set[str]:
        return {r["run_id"] for r in self.project.runs(limit=100)
                if r["run_id"] in self._submitted
                and job_status(r)["status"] not in ENDED}


# -- warm local workers -----------------------------------------------------------------------

@dataclass
class _Entry:
    """A run submitted to this server: waiting, sent to a worker, started (claimed: the
    store knows it from then on), ended, or cancelled before it started. The plan (which
    holds the run's cells) is kept only until a worker has it."""

    plan: RunPlan | None
    summary: dict[str, Any]  # what a record of it says before the store has one
    state: str = "queued"  # queued | sent | started | ended | cancelled
    cancel_asked: bool = False
    error: str | None = None  # a worker that died with the run
    finished: str | None = None

    @classmethod
    def of(cls, plan: RunPlan) -> _Entry:
        return cls(plan, {"run_id": plan.run_id, "pipeline_id": plan.pipeline.id,
                          "dataset": plan.pipeline.dataset, "scope_label": plan.scope.label,
                          "resolution": plan.resolution, "cells": len(plan.cells),
                          "created_at": _now(), "started_at": None})

    @property
    def run_id(self) -> str:
        return str(self.summary["run_id"])

    @property
    def live(self) -> bool:
        return self.state in ("queued", "sent", "started")

    def row(self) -> dict[str, Any]:
        """A run record for the store's row that does not exist yet."""
        cancelled = self.state == "cancelled"
        return self.summary | {
            "status": "cancelled" if cancelled else "failed" if self.error else "queued",
            "error": self.error or ("cancelled before it started" if cancelled else None),
            "finished_at": self.finished}


@dataclass
class _Slot:
    """One warm worker process, its inbox, and the run it holds."""

    process: BaseProcess
    inbox: Queue[RunPlan | None]
    run_id: str | None = None


class WarmJobs(Jobs):
    """``workers`` warm worker processes, at most that many runs at once; the rest wait
    here, first come first served. A worker that dies is replaced, and its run answers
    failed (the store's row, left 'running' with its pid gone, is recorded failed by
    whoever acts on it: 'h3pipe clean', or the next run or resume, which takes it over)."""

    def __init__(self, project: Project, workers: int) -> None:
        super().__init__(project)
        # spawn, not fork: GDAL and DuckDB keep threads and caches that do not survive
        # fork, and this process runs uvicorn's threads.
        self._ctx = multiprocessing.get_context("spawn")
        self._outbox: Queue[tuple[Any, ...]] = self._ctx.Queue()
        self._lock = threading.RLock()
        self._preparing = threading.Lock()  # Project caches the project's files
        self._jobs: dict[str, _Entry] = {}
        self._waiting: deque[str] = deque()
        self._stopping = threading.Event()
        self._slots = [self._spawn(n) for n in range(max(1, workers))]
        atexit.register(self._kill)  # after multiprocessing's own: so it runs first
        threading.Thread(target=self._watch, name="h3pipe-jobs", daemon=True).start()
        threading.Thread(target=self._warm, name="h3pipe-warm", daemon=True).start()

    # -- what the routes call ---------------------------------------------------------

    def submit(self, pipeline: str, scope: Scope, resolution: int | None = None,
               **options: Any) -> Job:
        with self._preparing:
            plan = self.project.prepare(pipeline, scope, resolution, **options)
        run_id = plan.run_id
        here = self._live(run_id)
        if here is not None:
            return here
        known = self._stored(run_id)
        if known is not None and _stands(known, force=bool(options.get("force"))):
            return Job(run_id, False, job_status(known)["status"])
        with self._lock:
            here = self._live(run_id)  # the same request, a moment earlier
            if here is not None:
                return here
            self._forget_ended()
            self._jobs[run_id] = _Entry.of(plan)
            self._waiting.append(run_id)
            self._dispatch()
        return Job(run_id, True, "accepted")

    def _live(self, run_id: str) -> Job | None:
        """The job of a run waiting or running here, if it is one."""
        with self._lock:
            entry = self._jobs.get(run_id)
            if entry is not None and entry.live:
                return Job(run_id, False, job_status(self._row(entry))["status"])
        return None

    def cancel(self, run_id: str) -> str:
        with self._lock:
            entry = self._jobs.get(run_id)
            if entry is not None and entry.state == "queued":
                self._waiting.remove(run_id)
                entry.state, entry.plan, entry.finished = "cancelled", None, _now()
                return f"run {run_id} had not started: dropped from the queue"
            if entry is not None and entry.state == "cancelled":
                return f"run {run_id} was dropped before it started"
            if entry is not None and entry.state == "sent":
                # Its worker has it but has not claimed it yet: there is nothing to signal.
                entry.cancel_asked = True
                return f"asked run {run_id} to stop as soon as it starts"
        return super().cancel(run_id)

    def in_flight(self) -> set[str]:
        with self._lock:
            return {rid for rid, e in self._jobs.items() if e.live}

    def record(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            entry = self._jobs.get(run_id)
            if entry is not None and entry.state in ("queued", "sent", "cancelled"):
                return self._row(entry)
        try:
            row = super().record(run_id)
        except NotFound:
            if entry is None:
                raise
            return entry.row()
        return _died(row, entry) if entry is not None and entry.error else row

    def close(self) -> None:
        """Stop: waiting runs are dropped, running ones asked to stop (their running
        tasks finish) for up to :data:`CLOSE_SECONDS`, then the workers end."""
        self._stopping.set()
        with self._lock:
            self._waiting.clear()
            running = [s.run_id for s in self._slots if s.run_id]
        for run_id in running:
            with contextlib.suppress(H3PipeError):
                self.project.cancel(run_id)  # SIGTERM to its worker: a graceful stop
        for slot in self._slots:
            with contextlib.suppress(Exception):
                slot.inbox.put(None)  # leave once the current run has ended
        deadline = time.monotonic() + CLOSE_SECONDS
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
        self._kill()
        atexit.unregister(self._kill)
        super().close()

    # -- the pool ---------------------------------------------------------------------

    def _spawn(self, number: int) -> _Slot:
        inbox: Queue[RunPlan | None] = self._ctx.Queue()
        # Not daemonic: a run on a worker may start a pool of its own (--workers N).
        process = self._ctx.Process(
            target=_work, name=f"h3pipe-serve-worker-{number + 1}", daemon=False,
            args=(str(self.project.root), self.project.store_override, inbox,
                  self._outbox, os.getpid(), number))
        process.start()
        return _Slot(process, inbox)

    def _dispatch(self) -> None:
        """Waiting runs to idle workers (with the lock held)."""
        for slot in self._slots:
            if not self._waiting or self._stopping.is_set():
                return
            if slot.run_id is None and slot.process.is_alive():
                run_id = self._waiting.popleft()
                entry = self._jobs[run_id]
                slot.inbox.put(entry.plan)
                entry.state, entry.plan, slot.run_id = "sent", None, run_id

    def _watch(self) -> None:
        """The workers' messages, their health, and handing out waiting runs."""
        while not self._stopping.is_set():
            try:
                message = self._outbox.get(timeout=WATCH_SECONDS)
            except (queue.Empty, OSError, ValueError):
                message = None
            cancel = None
            with self._lock:
                if message is not None:
                    cancel = self._heard(*message)
                if not self._stopping.is_set():
                    self._replace_dead()
                    self._dispatch()
            if cancel:
                with contextlib.suppress(H3PipeError):
                    self.project.cancel(cancel)

    def _heard(self, kind: str, number: int, pid: int, run_id: str | None = None,
               *_: Any) -> str | None:
        """A worker's message; returns a run to cancel now that it started."""
        slot = self._slots[number]
        if slot.process.pid != pid or run_id is None:  # a replaced worker's last words
            return None
        entry = self._jobs.get(run_id)
        if entry is None:
            return None
        self.forget(run_id)  # its record changed
        if kind == "started":
            entry.state = "started"
            return run_id if entry.cancel_asked else None
        if kind == "ended":
            entry.state, entry.finished = "ended", _now()
            slot.run_id = None
        return None

    def _forget_ended(self) -> None:
        """Keep at most :data:`KEPT` runs that ended here (the oldest go first): the store
        has the rest."""
        ended = [rid for rid, e in self._jobs.items() if not e.live]
        for run_id in ended[:max(0, len(ended) - KEPT)]:
            del self._jobs[run_id]

    def _replace_dead(self) -> None:
        for number, slot in enumerate(self._slots):
            if slot.process.is_alive():
                continue
            code = slot.process.exitcode
            if slot.run_id is not None:
                entry = self._jobs[slot.run_id]
                entry.state, entry.finished = "ended", _now()
                entry.error = (f"the worker process running it died (exit code {code}; "
                               "killed, or out of memory?)")
                self.forget(slot.run_id)
            with contextlib.suppress(Exception):
                slot.inbox.close()
            self._slots[number] = self._spawn(number)

    def _kill(self) -> None:
        for slot in self._slots:
            if slot.process.is_alive():
                slot.process.kill()
        for slot in self._slots:
            slot.process.join(5)
        queues: list[Queue[Any]] = [*(s.inbox for s in self._slots), self._outbox]
        for q in queues:
            q.cancel_join_thread()
            q.close()

    def _warm(self) -> None:
        """Load what preparing a run needs (the project's files, the planning modules),
        so the first request is answered as fast as the next ones."""
        with contextlib.suppress(Exception), self._preparing:
            self.project.load()
            _load("RunPlan", "Forecast")
            _warm_h3()

    # -- reading ----------------------------------------------------------------------

    def _row(self, entry: _Entry) -> dict[str, Any]:
        if entry.state in ("queued", "sent", "cancelled"):
            return entry.row()
        return self.record(entry.run_id)

    def _stored(self, run_id: str) -> dict[str, Any] | None:
        try:
            return Jobs.record(self, run_id)
        except NotFound:
            return None


def _stands(row: Mapping[str, Any], *, force: bool) -> bool:
    """Whether a stored run is the job a new request asks for: completed (and not forced
    again), or running in a live process (a CLI run of the same inputs, say)."""
    if row["status"] == "completed":
        return not force
    return row["status"] == "running" and not row.get("dead")


def _died(row: dict[str, Any], entry: _Entry) -> dict[str, Any]:
    """The store's row of a run whose worker died: failed with why, unless the row tells
    of a later attempt."""
    finished = rfc3339(row.get("finished_at"))
    if row["status"] == "running" or finished is None or finished < (entry.finished or ""):
        return row | {"status": "failed", "error": entry.error, "dead": None,
                      "finished_at": entry.finished}
    return row


def _now() -> str:
    return rfc3339(datetime.now(UTC)) or ""


# -- in a worker process ------------------------------------------------------------------------

class _Started(Reporter):
    """Tells the server when the run is claimed: from then on the store knows it."""

    def __init__(self, outbox: Queue[tuple[Any, ...]], number: int, run_id: str) -> None:
        self.outbox, self.number, self.run_id = outbox, number, run_id

    def run_started(self, plan: Any, view: Any) -> None:
        self.outbox.put(("started", self.number, os.getpid(), self.run_id))


WORKER_NICENESS = 10


def _work(root: str, store: str | None, inbox: Queue[RunPlan | None],
          outbox: Queue[tuple[Any, ...]], parent: int, number: int) -> None:
    """A warm worker: load the libraries and kernels, then run plans until told to leave
    (None) or the server is gone. A run handles SIGTERM and SIGINT itself (a graceful
    stop: 'runs cancel' sends SIGTERM to the pid its row holds, this process's); between
    runs both are ignored, so a cancel that arrives late does not end the worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Runs are batch work: on a busy machine the server, answering status and maps, goes
    # first (a run's own worker processes inherit this).
    os.nice(WORKER_NICENESS)
    outbox.cancel_join_thread()
    project = Project(root, store)
    _warm_worker(project)
    while True:
        try:
            plan = inbox.get(timeout=PARENT_SECONDS)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if plan is None:
            return
        error = _execute(project, plan, outbox, number)
        outbox.put(("ended", number, os.getpid(), plan.run_id, error))


def _execute(project: Project, plan: RunPlan, outbox: Queue[tuple[Any, ...]],
             number: int) -> str | None:
    try:
        project.execute(plan, _Started(outbox, number, plan.run_id))
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - a stopped or failed run: the store has it
        return str(exc) or type(exc).__name__
    return None


def _warm_worker(project: Project) -> None:
    """What a run needs, loaded before the first one: the operations' libraries and
    compiled kernels, the runner, H3 in bulk, the project's files."""
    with contextlib.suppress(Exception):
        warm_up()
        _load("RunResult")
        _warm_h3()
        project.load()


def _warm_h3() -> None:
    """H3 in bulk (h3ronpy, and the pandas it imports: a fifth of a second), and the
    cells of a small box found as a run's scope finds them."""
    grid.children(grid.base_cells()[:1], 1)
    ScopeRef.parse("bbox:0,0,0.01,0.01").resolve()


def _load(*names: str) -> None:
    """Import the modules of these names of the API (it loads each on first use)."""
    for name in names:
        getattr(h3pipe.api, name)
