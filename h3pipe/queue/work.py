"""What a queue worker does with a message: :func:`batch_task` computes one batch,
:func:`advance_task` plans a stage (or publishes the run); :func:`advance` is also how the
submitting process sends the first stage.

A batch message names a task. The worker counts the delivery (a task delivered more than
the queue's ``max_deliveries`` times has killed every worker that took it, and fails),
computes the batch with the step's retries, and writes the output and the task's
completion in one transaction: a second delivery of the same task finds it completed and
writes nothing. Then it looks at the stage: when its last task is in, exactly one worker
closes the stage and sends the next stage's message; when a task failed for good, the run
fails once the stage's other tasks are in.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from h3pipe import faults, lineage, storage
from h3pipe.errors import H3PipeError, OperationError
from h3pipe.execution.cleanup import release
from h3pipe.execution.executors.base import Finished, compute
from h3pipe.execution.reporting import Reporter
from h3pipe.execution.runner import (
    check_and_record_balance,
    complete_run,
    publish_outputs,
)
from h3pipe.execution.stage import StageRun
from h3pipe.planning.batching import Batcher
from h3pipe.planning.coverage import null_rows
from h3pipe.planning.feeds import OutputFeed
from h3pipe.queue import codec
from h3pipe.queue.messages import ADVANCE_TASK, BATCH_TASK, send
from h3pipe.spec import Retry
from h3pipe.storage.base import Store, kept_tasks
from h3pipe.storage.queuelog import QueueLog
from h3pipe.storage.runlog import RunLog, TaskKey

if TYPE_CHECKING:
    from celery import Celery

    from h3pipe.operations import Batch
    from h3pipe.planning.prepare import RunPlan

log = logging.getLogger("h3pipe.worker")
# A message that cannot even be recorded (the store is down) waits this long before it
# goes back to the queue, so a worker cut off from its store does not spin.
_BACK_OFF_SECONDS = 5.0


@dataclass
class Context:
    """What one worker process keeps between messages: its store and its name."""

    app: Celery
    store: Store
    runs: RunLog
    queue: QueueLog
    worker: str  # host:pid, as recorded on the task and named in errors

    @classmethod
    def open(cls, app: Celery) -> Context:
        store = storage.open_store(app.conf.h3pipe_store, app.conf.h3pipe_root)
        storage.read_outputs_with(store)  # batches of later stages read their rows here
        return cls(app, store, RunLog(store.catalog), QueueLog(store.catalog),
                   f"{socket.gethostname()}:{os.getpid()}")


_CONTEXTS: dict[int, Context] = {}


def context(app: Celery) -> Context:
    """This process's context; opened on first use (a forked pool child opens its own
    connections: a pool inherited through fork is not safe to use)."""
    pid = os.getpid()
    if pid not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[pid] = Context.open(app)
    return _CONTEXTS[pid]


# -- a batch ------------------------------------------------------------------------------

def batch_task(task: Any, run_id: str, stage: int, step_id: str, task_no: int) -> None:
    """The Celery task ``h3pipe.batch``: compute one batch, if it is still to be done."""
    key = TaskKey(run_id, step_id, task_no)
    with _guarded(task, key.label, run_id, key):
        _batch(context(task.app), key, stage, task.app.conf.task_soft_time_limit)


def _batch(ctx: Context, key: TaskKey, stage: int, soft_limit: float) -> None:
    run_id, step_id, task_no = key.run_id, key.step_id, key.task_no
    skipped = _admit(ctx, key)
    if skipped:
        log.info("%s %s: skipped (%s)", run_id, key.label, skipped)
        return
    delivery = ctx.queue.deliver(key, ctx.worker)
    if delivery is None:
        log.info("%s %s: skipped (done already: a repeated delivery)", run_id, key.label)
        return
    limit = int((ctx.queue.run(run_id) or {}).get("max_deliveries") or 1)
    if delivery.count > limit:
        _fail(ctx, key, 0.0, f"step '{step_id}' batch {task_no} was delivered {limit} "
              "time(s) and never finished: it kills the worker that computes it (out of "
              "memory, or a crash in a library); try a smaller --batch-size")
    else:
        _compute_and_commit(ctx, key, soft_limit)
    settle(ctx, run_id, stage)


@contextmanager
def _guarded(task: Any, what: str, run_id: str, key: TaskKey | None = None) -> Iterator[None]:
    """A message whose handling raised must neither vanish (acknowledged, the run waiting
    for ever) nor spin: the failure is recorded on the task or the run; when even that is
    impossible (the store is down), the message goes back to the queue after a pause."""
    from celery.exceptions import Reject, SoftTimeLimitExceeded

    try:
        yield
    except Exception as exc:
        error = f"{what} on worker {socket.gethostname()}:{os.getpid()}: {exc}"
        if SoftTimeLimitExceeded in (type(exc), type(exc.__cause__)):  # while writing, say
            error = (f"{what} on worker {socket.gethostname()}:{os.getpid()} ran past the "
                     f"queue's task time limit ({task.app.conf.task_soft_time_limit:g} s); "
                     "use a smaller --batch-size, or raise queue.task_seconds")
        log.warning("%s %s: %s", run_id, what, error)
        try:
            ctx = context(task.app)
            if key is not None:
                _fail(ctx, key, 0.0, error)
            end(ctx.store, run_id, "failed", error)
        except Exception as again:
            log.warning("%s %s: cannot record the failure (%s); the message goes back to "
                        "the queue", run_id, what, again)
            time.sleep(_BACK_OFF_SECONDS)
            raise Reject(str(again), requeue=True) from again


def _admit(ctx: Context, key: TaskKey) -> str | None:
    """Why this message is not to be computed (None when it is)."""
    run = ctx.runs.run(key.run_id)
    if run is None:
        return f"no run {key.run_id} in the store at {ctx.store.location}"
    if run["status"] != "running":
        return f"the run is {run['status']}"
    if run["cancel_requested_at"]:
        ctx.queue.release(key)  # taken by a worker that was lost: not running any more
        settle_cancel(ctx.store, key.run_id)
        return "the run was cancelled"
    return None


def _compute_and_commit(ctx: Context, key: TaskKey, soft_limit: float) -> None:
    payload = ctx.queue.batch(key)
    if payload is None:
        raise OperationError(f"task {key.label} of run {key.run_id} has no batch in the store")
    batch, retry, storage = own_store(
        codec.decode_batch(payload, f"{key.label} of run {key.run_id}"), key)
    faults.point(f"task.{key.label}")
    done = _attempts(ctx, key, batch, retry, soft_limit)
    if done.error is not None:
        _fail(ctx, key, done.seconds, f"on worker {ctx.worker}: {done.error}")
        return
    assert done.result is not None  # a finished batch has a result or an error
    table, tiles = done.result.table, done.result.tile_seconds
    nulls = null_rows(batch, table)

    def record(tx: Any, ref: str) -> bool:
        return QueueLog.complete_in(tx, key, seconds=done.seconds, rows=table.num_rows,
                                    output=ref, tile_seconds=_json(tiles), null_rows=nulls)

    if ctx.store.commit_task_output(key.run_id, key.step_id, key.task_no, table, storage,
                                    record) is None:
        log.info("%s %s: computed, but another delivery completed it first", key.run_id,
                 key.label)
        return
    ctx.runs.event(key.run_id, "task", key.label, "completed",
                   f"{table.num_rows} rows in {done.seconds:.2f} s on {ctx.worker}")
    tasks_done, rows = ctx.queue.step_totals(key.run_id, key.step_id)
    ctx.runs.step_progress(key.run_id, key.step_id, tasks_done=tasks_done, rows_out=rows)
    log.info("%s %s: %d %s -> %d rows in %.2f s", key.run_id, key.label, batch.size,
             "cells" if batch.block is not None else "rows", table.num_rows, done.seconds)


def own_store(held: tuple[Batch, Retry, str], key: TaskKey) -> tuple[Batch, Retry, str]:
    """A batch as sent, if it reads earlier rows from this worker's own store: the queue
    plans them so (``OutputFeed.store`` empty), and a row of the store that names another
    database or folder was not written by h3pipe."""
    feed = held[0].feed
    if isinstance(feed, OutputFeed) and feed.store:
        raise OperationError(f"the batch of task {key.label} of run {key.run_id} names a "
                             "store of its own to read; a queue worker reads earlier steps' "
                             "rows only from the store it was started with",
                             hint="check who can write the store, and run it again")
    return held


def _attempts(ctx: Context, key: TaskKey, batch: Batch, retry: Retry,
              soft_limit: float) -> Finished:
    """The batch computed here, a transient failure tried again as the step says."""
    from celery.exceptions import SoftTimeLimitExceeded

    attempt = 1
    while True:
        try:
            done = compute(0, batch, passthrough=(SoftTimeLimitExceeded,))
        except SoftTimeLimitExceeded:
            return Finished(0, (key.step_id, key.task_no), None, OperationError(
                f"step '{key.step_id}' batch {key.task_no} ran past the queue's task time "
                f"limit ({soft_limit:g} s)", hint="use a smaller --batch-size, or raise "
                "queue.task_seconds"), soft_limit)
        if done.error is None or not done.error.transient or attempt > retry.retries:
            return done
        ctx.runs.task_retrying(key, attempt, f"on worker {ctx.worker}: {done.error}")
        time.sleep(retry.delay(attempt))
        attempt += 1


def _fail(ctx: Context, key: TaskKey, seconds: float, error: str) -> None:
    ctx.runs.task_failed(key, seconds, error)
    log.warning("%s %s: failed: %s", key.run_id, key.label, error)


def _json(tiles: dict[str, float] | None) -> str | None:
    import json

    return json.dumps(tiles) if tiles else None


# -- stages -------------------------------------------------------------------------------

def settle(ctx: Context, run_id: str, stage: int) -> None:
    """After a task of ``stage`` ended: close the stage (and send the next) if it was the
    last; fail the run once every task is in and one failed; honour a cancel request."""
    count = ctx.queue.stage_count(run_id, stage)
    if not count.settled:
        if ctx.runs.cancel_requested(run_id):
            settle_cancel(ctx.store, run_id)
        return
    if count.failed:
        failed = ctx.queue.first_failure(run_id)
        assert failed is not None  # counted just now
        end(ctx.store, run_id, "failed",
            f"task {failed['step_id']}#{failed['task_no']} failed: {failed['error']}")
        return
    close_stage(ctx.app, ctx.store, run_id, stage)


def close_stage(app: Celery, store: Store, run_id: str, stage: int) -> None:
    """If every task of ``stage`` completed, close it (exactly one caller does), record its
    steps completed and send the message that plans the next stage."""
    runs, queue = RunLog(store.catalog), QueueLog(store.catalog)
    if not queue.close_stage(run_id, stage):
        return
    for step_id in queue.stage_steps(run_id, stage):
        runs.step_completed(run_id, step_id, queue.step_totals(run_id, step_id)[1])
    runs.event(run_id, "stage", str(stage), "completed")
    qrun = queue.run(run_id)
    assert qrun is not None  # a queue run's row outlives its stages
    send(app, ADVANCE_TASK, [run_id, stage + 1], qrun["queue_name"])


def settle_cancel(store: Store, run_id: str) -> None:
    """A cancelled run ends 'interrupted' once none of its tasks is running."""
    if QueueLog(store.catalog).running_tasks(run_id) == 0:
        left = RunLog(store.catalog).tasks_left(run_id)
        end(store, run_id, "interrupted",
            f"interrupted (cancelled); {left} task(s) left for the resume")


def end(store: Store, run_id: str, status: str, reason: str) -> bool:
    """Record how a queue run ended (once, whoever gets here first) and let go of what
    its steps' cleanup policies allow; True for the caller that ended it."""
    runs, queue = RunLog(store.catalog), QueueLog(store.catalog)
    if not queue.end_run(run_id, status, reason):
        return False
    runs.steps_interrupted(run_id)
    runs.event(run_id, "run", run_id, status, reason)
    queue.drop_batches(run_id)
    release(store, run_id, succeeded=False)
    log.warning("%s: %s: %s", run_id, status, reason)
    ended(store, run_id)
    return True


def ended(store: Store, run_id: str, plan: RunPlan | None = None) -> None:
    """A queue run's end is recorded (here, whichever process recorded it): its
    run-results file, and its lineage's last event."""
    try:
        plan = plan or codec.decode_plan(QueueLog(store.catalog).plan(run_id), run_id)
    except H3PipeError as exc:  # a plan this h3pipe cannot read: the end stands without
        log.warning("%s: no run results nor lineage event: %s", run_id, exc)
        return
    lineage.current().ended(plan, store)


def advance_task(task: Any, run_id: str, stage: int) -> None:
    """The Celery task ``h3pipe.advance``: plan ``stage`` of a run, or publish it."""
    with _guarded(task, f"stage {stage}", run_id):
        ctx = context(task.app)
        advance(ctx.app, ctx.store, run_id, stage)


def advance(app: Celery, store: Store, run_id: str, stage: int,
            plan: RunPlan | None = None) -> None:
    """Plan and send ``stage``'s batches (the tasks a resumed run completed are kept), or
    after the last stage publish the run. Safe to repeat: a repeated message finds the
    run past the stage, or records and sends the same tasks again."""
    runs, queue = RunLog(store.catalog), QueueLog(store.catalog)
    run, qrun = runs.run(run_id), queue.run(run_id)
    if run is None or qrun is None or run["status"] != "running":
        return
    counted = queue.count_advance(run_id, stage)
    if counted is None:
        return  # the run is past this stage: a repeated message
    if counted > qrun["max_deliveries"]:
        end(store, run_id, "failed", f"stage {stage} was delivered {counted - 1} time(s) "
            "for planning or publishing and never finished (its worker was lost each time)")
        return
    plan = plan or codec.decode_plan(queue.plan(run_id), run_id)
    outputs, sizes = _outputs(runs, store, run_id)
    if stage > len(plan.stages):
        _publish(plan, store, runs, outputs, run)
        return
    steps = [plan.pipeline.step(sid) for sid in plan.stages[stage - 1]]
    # Later stages read earlier outputs from the store of the worker that computes them
    # (workers may reach the database at different addresses).
    planner = Batcher.of(plan, store)
    planner.store_location = ""
    planner.outputs, planner.sizes = outputs, sizes
    batches = [b for s in steps for b in planner.batches(s)]
    todo = StageRun(run_id, stage, steps, store, runs, Reporter(), outputs, sizes
                    ).start(batches)
    queue.save_batches(run_id, [(b.step_id, b.number, codec.encode_batch(
        b, plan.retry(plan.pipeline.step(b.step_id)), plan.pipeline.step(b.step_id).storage))
        for b in todo])
    pending = queue.pending_tasks(run_id, stage)
    for key in pending:
        send(app, BATCH_TASK, [run_id, stage, key.step_id, key.task_no], qrun["queue_name"])
    if not pending:  # nothing left to do in it (every task kept from before)
        close_stage(app, store, run_id, stage)


def _outputs(runs: RunLog, store: Store, run_id: str
             ) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, int]]]:
    """The outputs of the run's completed tasks and their rows: step id -> task number ->
    reference, and -> rows."""
    outputs: dict[str, dict[int, str]] = {}
    sizes: dict[str, dict[int, int]] = {}
    for (step_id, task_no), t in sorted(kept_tasks(store, runs.completed_tasks(run_id)).items()):
        outputs.setdefault(step_id, {})[task_no] = t["output_path"]
        sizes.setdefault(step_id, {})[task_no] = t["rows_out"] or 0
    return outputs, sizes


def _publish(plan: RunPlan, store: Store, runs: RunLog,
             outputs: dict[str, dict[int, str]], run: dict[str, Any]) -> None:
    def say(text: str) -> None:
        runs.event(plan.run_id, "run", plan.run_id, "note", text)

    check_and_record_balance(plan, store, runs, outputs)
    rows = publish_outputs(plan, store, outputs, say)
    started = datetime.fromisoformat(run["started_at"])
    complete_run(plan, store, runs, rows, (datetime.now(UTC) - started).total_seconds())
    QueueLog(store.catalog).drop_batches(plan.run_id)
    log.info("%s: completed, %d rows published", plan.run_id, rows)
    ended(store, plan.run_id, plan)


__all__ = ["advance", "advance_task", "batch_task", "context", "end", "ended", "settle",
           "settle_cancel"]
