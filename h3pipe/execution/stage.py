"""One barrier stage of a run: :class:`StageRun` records its steps and tasks, keeps what a
resumed run already completed, hands the rest to the executor and records each outcome.

Order matters for crash safety: a task's output is written (atomically) before its row
says completed, and a completed task is kept on resume only if its output still exists.
Completions are recorded a few at a time (:class:`_Recorder`, within :data:`RECORD_SECONDS`),
in one transaction with their events and their steps' progress, and before anything else
is recorded (a failure, a retry, a stop, the stage's end): a run killed in between leaves
outputs that no row claims yet, and the resume computes those tasks again.
"""

from __future__ import annotations

import contextlib
import threading
import time

from h3pipe import faults
from h3pipe.errors import StoreError
from h3pipe.execution.executors import Executor, Outcome, Stopping
from h3pipe.execution.reporting import Reporter
from h3pipe.execution.stopping import StopRequest
from h3pipe.operations import Batch
from h3pipe.planning.coverage import null_rows
from h3pipe.spec import Retry, StepSpec
from h3pipe.storage.base import Store, kept_tasks
from h3pipe.storage.catalog import now
from h3pipe.storage.runlog import Completed, RunLog, TaskKey

# How long a completed task may wait to be recorded with others that complete meanwhile;
# also how often a cancel request is looked for. A few commits a second is what a watcher
# notices; five statements and their commits per task were most of what the PostgreSQL
# store added to a run of many small tasks (issue 29).
RECORD_SECONDS = 0.5


class _Recorder:
    """Completed tasks recorded a few at a time: at once when nothing was recorded in the
    last :data:`RECORD_SECONDS`, else by a timer when that much has passed (never waiting
    for the next task to complete), and before anything else a stage records (:meth:`flush`).
    A failure of the timer's recording is raised by the next call from the stage."""

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.pending: list[Completed] = []
        self.progress: dict[tuple[str, str], tuple[int, int]] = {}
        self.last = 0.0  # when tasks were last recorded (monotonic)
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        self.failed: BaseException | None = None

    def add(self, done: Completed, tasks_done: int, rows_out: int) -> None:
        with self.lock:
            self._raise_failure()
            self.pending.append(done)
            self.progress[(done.key.run_id, done.key.step_id)] = (tasks_done, rows_out)
            wait = self.last + RECORD_SECONDS - time.monotonic()
            if wait <= 0:
                self._record()
            elif self.timer is None:
                self.timer = threading.Timer(wait, self._later)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        with self.lock:
            self._raise_failure()
            self._record()

    def _later(self) -> None:
        with self.lock:
            try:
                self._record()
            except BaseException as exc:  # the stage's thread raises it
                self.failed = exc

    def _raise_failure(self) -> None:
        if self.failed is not None:
            failed, self.failed = self.failed, None
            raise failed

    def _record(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        done, progress = self.pending, self.progress
        self.last = time.monotonic()
        if not done:
            return
        self.log.tasks_completed(done, progress)
        self.pending, self.progress = [], {}
        for _ in done:
            faults.point("task-recorded")


class StageRun:
    def __init__(self, run_id: str, number: int, steps: list[StepSpec], store: Store,
                 log: RunLog, progress: Reporter, outputs: dict[str, dict[int, str]],
                 sizes: dict[str, dict[int, int]] | None = None) -> None:
        self.run_id, self.number, self.steps = run_id, number, steps
        self.store, self.log, self.progress, self.outputs = store, log, progress, outputs
        # step id -> task number -> rows of its output: what the next stage batches by
        self.sizes = sizes if sizes is not None else {}
        self.done = {s.id: 0 for s in steps}
        self.rows = {s.id: 0 for s in steps}
        self.storage = {s.id: s.storage for s in steps}
        self.recorder = _Recorder(log)
        self.looked = 0.0  # when a cancel request was last looked for (monotonic)

    def run(self, executor: Executor, batches: list[Batch], retry: dict[str, Retry],
            stop: StopRequest) -> None:
        todo = self.start(batches)
        try:
            for outcome in executor.run(todo, retry, stop):
                if isinstance(outcome, Stopping):
                    self.recorder.flush()
                    self._stopping(outcome, stop)
                    continue
                if not stop.requested and time.monotonic() - self.looked >= RECORD_SECONDS:
                    self.looked = time.monotonic()
                    if self.log.cancel_requested(self.run_id):
                        stop.ask("cancel")
                self._record(outcome)
        except BaseException:
            # What completed before the failure or stop is kept for the resume, if the
            # store takes it; the error that stopped the stage is the one to report.
            with contextlib.suppress(StoreError):
                self.recorder.flush()
            raise
        self.recorder.flush()
        for step in self.steps:
            self.log.step_completed(self.run_id, step.id, self.rows[step.id])
        self.log.event(self.run_id, "stage", str(self.number), "completed")
        faults.point("stage-completed")
        self.progress.stage_finished(self.number)

    def start(self, batches: list[Batch]) -> list[Batch]:
        """Record the stage's steps and pending tasks; return the batches still to do."""
        completed = self.log.completed_tasks(self.run_id)
        kept = kept_tasks(self.store, completed)
        # Completed once, but its output has gone since: do it again.
        self.log.drop_tasks([TaskKey(self.run_id, t["step_id"], t["task_no"])
                             for t in completed if (t["step_id"], t["task_no"]) not in kept])
        for (step_id, task_no), task in sorted(kept.items()):
            self.outputs.setdefault(step_id, {})[task_no] = task["output_path"]
            self.sizes.setdefault(step_id, {})[task_no] = task["rows_out"] or 0
            if step_id in self.done:
                self.done[step_id] += 1
                self.rows[step_id] += task["rows_out"] or 0
        todo = [b for b in batches if (b.step_id, b.number) not in kept]
        self.log.add_tasks(self.run_id, [(b.step_id, b.number, b.size) for b in todo])
        for step in self.steps:
            mine = [b for b in batches if b.step_id == step.id]
            self.log.step_started(self.run_id, step.id, tasks=len(mine),
                                  rows_in=sum(b.size for b in mine))
        self.log.event(self.run_id, "stage", str(self.number), "running",
                       f"{', '.join(s.id for s in self.steps)}: {len(batches)} task(s)")
        self.progress.stage_started(
            self.number, [s.id for s in self.steps], len(todo), sum(b.size for b in todo),
            unit="cells" if all(s.input == "cells" for s in self.steps) else "rows")
        return todo

    def _stopping(self, outcome: Stopping, stop: StopRequest) -> None:
        text = (f"stop requested ({stop.reason}): no new tasks; waiting up to "
                f"{stop.grace_seconds:g} s for {outcome.running} running task(s)")
        self.log.event(self.run_id, "run", self.run_id, "stopping", text)
        self.progress.message(text + ("; press Ctrl-C again to stop now"
                                      if stop.reason == "SIGINT" else ""))

    def _record(self, outcome: Outcome) -> None:
        b = outcome.batch
        key = TaskKey(self.run_id, b.step_id, b.number)
        if outcome.error is not None:
            self.recorder.flush()  # the timeline keeps its order
        if outcome.error is not None and outcome.retrying:
            self.log.task_retrying(key, outcome.attempt, str(outcome.error))
            self.progress.message(f"task {key.label}: attempt {outcome.attempt} failed "
                                  f"({outcome.error}); retrying")
            return
        if outcome.error is not None:
            self.log.task_failed(key, outcome.seconds, str(outcome.error),
                                 started=outcome.started, worker=outcome.worker_name)
            raise outcome.error
        table = outcome.table
        assert table is not None  # an outcome carries either a table or an error
        nulls = null_rows(b, table)  # counted here, batch by batch; the run sums them
        ref = self.store.write_task_output(self.run_id, b.step_id, b.number, table,
                                           self.storage[b.step_id])
        faults.point("task-output-written")
        self.outputs.setdefault(b.step_id, {})[b.number] = ref
        self.sizes.setdefault(b.step_id, {})[b.number] = table.num_rows
        self.done[b.step_id] += 1
        self.rows[b.step_id] += table.num_rows
        self.recorder.add(Completed(key, now(), outcome.seconds, table.num_rows, ref,
                                    outcome.tile_seconds, outcome.started,
                                    outcome.worker_name, nulls),
                          self.done[b.step_id], self.rows[b.step_id])
        self.progress.task_finished(b.step_id, b.size)


__all__ = ["StageRun"]
