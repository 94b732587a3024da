"""Submitting a run to the queue and following it: :func:`run_queued`, :func:`wait_run`.

Submitting claims the run as a local run would (the same run id, the same resume rules),
marks its row with the queue, keeps its plan in the store and sends the first stage; from
then on workers advance it. Following it only reads the store: the submitting process may
go away (``--detach``, or killed) and nothing is lost; the same command, or
``h3pipe runs wait``, follows it again. Stopping the follower (SIGINT, SIGTERM) cancels the
run: workers take none of its tasks any more, the running ones finish within the grace
period, and the run ends 'interrupted', to be resumed by the same command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from h3pipe import lineage, storage
from h3pipe.config.project import ProjectConfig
from h3pipe.errors import Cancelled, ConfigError, RunFailed, StoreUnavailable, UsageError
from h3pipe.execution.lock import wait_or_refuse
from h3pipe.execution.reporting import Reporter
from h3pipe.execution.runner import RunResult, claim_run, recorded_coverage
from h3pipe.execution.stopping import StopRequest, graceful
from h3pipe.lineage import Lineage
from h3pipe.planning.prepare import RunOptions, RunPlan, as_recorded, prepare
from h3pipe.planning.scope import Scope
from h3pipe.queue.app import check_broker, make_app
from h3pipe.queue.codec import encode_plan
from h3pipe.queue.settings import QueueSettings
from h3pipe.queue.work import advance, end, settle_cancel
from h3pipe.results.runs import find_run
from h3pipe.storage.base import Store
from h3pipe.storage.history import request_cancel
from h3pipe.storage.holders import holder_alive, why_dead
from h3pipe.storage.queuelog import QueueLog
from h3pipe.storage.records import RunRecord
from h3pipe.storage.runlog import RunLog

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Submitted:
    run_id: str
    state: str  # submitted | resumed | following (on the queue already) | already


def run_queued(project: ProjectConfig, pipeline_id: str, scope: Scope, options: RunOptions,
               settings: QueueSettings, reporter: Reporter, *, detach: bool
               ) -> RunResult | Submitted:
    """Submit the run (or find it on the queue already) and, unless ``detach``, follow
    it to its end: the same result and exit codes as a local run."""
    options.check()
    if options.workers is not None:
        raise UsageError("--workers sizes the local pool; with --queue, workers are the "
                         "'h3pipe worker' processes (--concurrency N each)")
    plan = prepare(project, pipeline_id, scope, options)
    _check_store(plan, settings)
    lineage.use(Lineage.of(project.settings, project.root, reporter.message))
    app = make_app(settings)
    check_broker(app, settings)
    with storage.open_store(plan.store_location, project.root) as store:
        state = _submit(app, plan, store, settings, reporter)
        if state == "already" or detach:
            return Submitted(plan.run_id, state)
        try:
            run = wait_run(store, plan.run_id, reporter, plan.options.grace_seconds)
        except StoreUnavailable as exc:  # the workers may well carry on: say how to look
            raise StoreUnavailable(f"lost sight of run {plan.run_id}: {exc.message}",
                                   where=exc.where, hint="once the database is up, "
                                   f"'h3pipe runs wait {plan.run_id}' follows it again"
                                   ) from exc
        return _result(plan, run, store, "completed" if state == "submitted" else "resumed")


def _check_store(plan: RunPlan, settings: QueueSettings) -> None:
    if not storage.is_database(plan.store_location) and not settings.shared_store:
        raise ConfigError(
            f"the queue backend needs the PostgreSQL store, not the folder "
            f"{plan.store_location}: workers on other machines write each task's rows and "
            "its completion in one transaction, which a folder's SQLite catalog cannot take "
            "from many hosts", hint="pass --store postgresql://... (or set H3PIPE_STORE) and "
            "start the workers with the same store; for workers on this machine only, set "
            "queue.shared_store: true in h3pipe.yaml")


def _submit(app: Any, plan: RunPlan, store: Store, settings: QueueSettings,
            reporter: Reporter) -> str:
    log, queue = RunLog(store.catalog), QueueLog(store.catalog)
    row = log.run(plan.run_id)
    opts = plan.options
    if opts.reports_done(row):
        return "already"
    if row is not None and row["status"] == "running" and row.get("queue"):
        reporter.message(f"run {plan.run_id} is on the queue at {row['queue']} already; "
                         "following it")
        return "following"
    row = wait_or_refuse(log, plan.run_id, wait=opts.wait, on_wait=reporter.message)
    plan = as_recorded(plan, store, row)
    claim_run(log, plan, row, store)
    queue.mark_queued(plan.run_id, settings.shown)
    # The store's address may hold its password; workers use their own address of it.
    queue.save_run(plan.run_id, encode_plan(replace(plan, store_location="")),
                   queue_name=settings.name, max_deliveries=settings.max_deliveries)
    log.event(plan.run_id, "run", plan.run_id, "queued",
              f"{plan.scope.label}, resolution {plan.resolution}, {len(plan.cells)} cells, "
              f"on {settings.shown} (queue {settings.name})")
    lineage.current().started(plan, store)
    try:
        advance(app, store, plan.run_id, 1, plan)
    except BaseException as exc:
        # Some of the stage's tasks may not have been sent: a run left 'running' would
        # wait for them for ever. Failed, the same command resumes it and sends them.
        end(store, plan.run_id, "failed", f"submitting stage 1: {exc or type(exc).__name__}")
        raise
    return "resumed" if row is not None and not opts.force else "submitted"


def wait_run(store: Store, run_id: str, reporter: Reporter,
             grace_seconds: float) -> RunRecord:
    """Follow a queue run to its end and return its row; a stop (SIGINT, SIGTERM) cancels
    it and lets its running tasks finish within ``grace_seconds``. Raises like a local
    run: :class:`RunFailed` when it failed, the stop when it was interrupted."""
    stop = StopRequest(grace_seconds)
    try:
        with graceful(stop):
            row = _follow(store, run_id, reporter, stop)
    except BaseException:
        _interrupt(store, run_id, stop)
        raise
    return judge(row, stop)


def follow_run(project: ProjectConfig, run_id: str, reporter: Reporter) -> RunRecord:
    """``h3pipe runs wait``: the row of a run once it has ended (a queue run, or one
    running in a process here or elsewhere), judged as :func:`wait_run` does. Stopping
    the wait changes nothing about the run."""
    with storage.open_store(project.store_location(), project.root, create=False) as store:
        row = find_run(store.catalog, run_id)
        if row.get("queue"):
            return judge(_follow(store, row["run_id"], reporter, StopRequest(0)), StopRequest())
        log = RunLog(store.catalog)
        while holder_alive(row):
            time.sleep(POLL_SECONDS)
            row = log.run(row["run_id"]) or row
    dead = why_dead(row)
    if dead:
        raise RunFailed(f"run {row['run_id']} is recorded as running but {dead}",
                        run_id=row["run_id"], hint=f"resume it with 'h3pipe resume "
                        f"{row['run_id']}'")
    return judge(row, StopRequest())


def judge(row: RunRecord, stop: StopRequest) -> RunRecord:
    """A run's ended row, or the exception a local run would have ended with."""
    run_id = row["run_id"]
    if row["status"] == "completed":
        return row
    if row["status"] == "interrupted":
        raise stop.exception() if stop.requested else Cancelled()
    raise RunFailed(f"run {run_id} failed: {row['error']}", run_id=run_id,
                    hint=f"see 'h3pipe runs show {run_id}'")


def _follow(store: Store, run_id: str, reporter: Reporter, stop: StopRequest
            ) -> RunRecord:
    """Poll the store until the run is no longer running; on a stop, cancel it."""
    log, queue = RunLog(store.catalog), QueueLog(store.catalog)
    progress = _Progress(reporter)
    while True:
        row = log.run(run_id)
        if row is None:
            raise ConfigError(f"no run '{run_id}' in the store at {store.location}")
        progress.show(queue, run_id)
        if row["status"] != "running":
            progress.close(queue, run_id)
            return row
        if stop.requested and not row["cancel_requested_at"]:
            _cancel(store, run_id)
        time.sleep(POLL_SECONDS)


def _cancel(store: Store, run_id: str) -> None:
    request_cancel(store.catalog, run_id)
    settle_cancel(store, run_id)


def _interrupt(store: Store, run_id: str, stop: StopRequest) -> None:
    """The follower stops for good (grace over, second signal): a run still running is
    recorded interrupted now; tasks that finish later are kept for the resume."""
    if not stop.requested:  # the follower failed (the store out of reach): not the run
        return
    row = RunLog(store.catalog).run(run_id)
    if row is None or row["status"] != "running":
        return
    if not row["cancel_requested_at"]:
        request_cancel(store.catalog, run_id)
    left = RunLog(store.catalog).tasks_left(run_id)
    end(store, run_id, "interrupted", f"interrupted ({stop.reason}); {left} task(s) left "
        "for the resume")


class _Progress:
    """The reporter fed from the store: a stage's start, its tasks as they complete."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.stage: int | None = None
        self.done = 0

    def show(self, queue: QueueLog, run_id: str) -> None:
        qrun = queue.run(run_id)
        if qrun is None:
            return
        stage = int(qrun["stage"])
        steps = queue.stage_steps(run_id, stage)
        if not steps:
            return
        if stage != self.stage:
            if queue.stage_count(run_id, stage).total == 0:
                return  # its tasks are being planned
            if self.stage is not None:
                self._catch_up(queue, run_id)
                self.reporter.stage_finished(self.stage)
            self.stage, self.done = stage, 0
            count = queue.stage_count(run_id, stage)
            self.reporter.stage_started(stage, steps, count.total, count.total, unit="tasks")
        self._catch_up(queue, run_id)

    def _catch_up(self, queue: QueueLog, run_id: str) -> None:
        assert self.stage is not None
        count = queue.stage_count(run_id, self.stage)
        for _ in range(count.completed - self.done):
            self.reporter.task_finished("", 1)
        self.done = max(self.done, count.completed)

    def close(self, queue: QueueLog, run_id: str) -> None:
        if self.stage is not None:
            self._catch_up(queue, run_id)
            self.reporter.stage_finished(self.stage)
            self.stage = None


def _result(plan: RunPlan, run: RunRecord, store: Store, state: str) -> RunResult:
    measured = run.params.measured
    entries = store.result_entries(plan.pipeline.dataset, plan.resolution, plan.scope.key)
    rows = int(entries[0]["rows"]) if entries else 0
    return RunResult(plan.run_id, plan.pipeline.id, plan.pipeline.dataset, plan.scope.label,
                     plan.resolution, len(plan.cells), rows, float(measured.get("wall_s", 0.0)),
                     store.location, state, recorded_coverage(plan, run))


__all__ = ["Submitted", "follow_run", "judge", "run_queued", "wait_run"]
