"""One barrier stage of a run: :class:`StageRun` records its steps and tasks, keeps what a
resumed run already completed, hands the rest to the executor and records each outcome.

Order matters for crash safety: a task's output is written (atomically) before its row
says completed, and a completed task is kept on resume only if its output still exists.
"""

from __future__ import annotations

from h3pipe import faults
from h3pipe.execution.executors import Executor, Outcome, Stopping
from h3pipe.execution.reporting import Reporter
from h3pipe.execution.stopping import StopRequest
from h3pipe.operations import Batch
from h3pipe.planning.coverage import null_rows
from h3pipe.spec import Retry, StepSpec
from h3pipe.storage.base import Store, kept_tasks
from h3pipe.storage.runlog import RunLog, TaskKey


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

    def run(self, executor: Executor, batches: list[Batch], retry: dict[str, Retry],
            stop: StopRequest) -> None:
        todo = self.start(batches)
        for outcome in executor.run(todo, retry, stop):
            if isinstance(outcome, Stopping):
                self._stopping(outcome, stop)
                continue
            if not stop.requested and self.log.cancel_requested(self.run_id):
                stop.ask("cancel")
            self._record(outcome)
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
        self.log.task_completed(key, seconds=outcome.seconds, rows=table.num_rows, output=ref,
                                tile_seconds=outcome.tile_seconds, started=outcome.started,
                                worker=outcome.worker_name, null_rows=nulls)
        self.done[b.step_id] += 1
        self.rows[b.step_id] += table.num_rows
        self.log.step_progress(self.run_id, b.step_id, tasks_done=self.done[b.step_id],
                               rows_out=self.rows[b.step_id])
        faults.point("task-recorded")
        self.progress.task_finished(b.step_id, b.size)


__all__ = ["StageRun"]
