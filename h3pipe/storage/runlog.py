"""What a run records as it goes: :class:`RunLog`, every statement about runs, steps, tasks,
events and intermediates that a run (its lock, its stages, its cleanup) writes or reads.

The engine decides *when* a state changes; this module alone knows the tables. Each method
is one short transaction, so ``runs list`` in another terminal sees progress as it happens,
and an update that touches no row raises (a state change is never silently lost).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from h3pipe import masking
from h3pipe.errors import StoreError
from h3pipe.storage.catalog import Catalog, now, stamp_of
from h3pipe.storage.records import Row, RunParams, RunRecord
from h3pipe.storage.retry import retried


@dataclass(frozen=True)
class TaskKey:
    run_id: str
    step_id: str
    task_no: int

    def where(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step_id": self.step_id, "task_no": self.task_no}

    @property
    def label(self) -> str:
        return f"{self.step_id}#{self.task_no}"


@dataclass(frozen=True)
class Completed:
    """A task whose output is written, as :meth:`RunLog.tasks_completed` records it:
    ``at`` is when it finished (:func:`~h3pipe.storage.catalog.now`), ``started`` (epoch
    seconds) and ``worker`` its last attempt's, if known; ``null_rows`` its rows with no
    valid pixel (None: not counted)."""

    key: TaskKey
    at: str
    seconds: float
    rows: int
    output: str
    tile_seconds: dict[str, float] | None = None
    started: float | None = None
    worker: str | None = None
    null_rows: int | None = None

    def values(self) -> Row:
        return self.key.where() | {
            "t": self.at, "sec": self.seconds, "rows": self.rows, "out": self.output,
            "tiles": json.dumps(self.tile_seconds) if self.tile_seconds else None,
            "nulls": self.null_rows, "worker": self.worker,
            "started": None if self.started is None else stamp_of(self.started)}


@retried
class RunLog:
    """The run records of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- the run row (the lock) -----------------------------------------------------------

    def run(self, run_id: str) -> RunRecord | None:
        rows = self.catalog.query("SELECT * FROM runs WHERE run_id = :id", {"id": run_id})
        return RunRecord(rows[0]) if rows else None

    def insert_run(self, values: Row) -> bool:
        """Insert the run row; False when a row with that id appeared first."""
        try:
            self.catalog.insert("runs", **values)
        except StoreError:
            if self.run(values["run_id"]) is not None:
                return False
            raise
        return True

    def take_over(self, run_id: str, previous: Row, mine: Row, params: str) -> bool:
        """Compare-and-swap the run row from the state seen in ``previous`` to ``mine``."""
        with self.catalog.transaction() as tx:
            taken = tx.execute(
                "UPDATE runs SET status = :status, pid = :pid, host = :host, "
                "started_at = :started_at, heartbeat_at = :heartbeat_at, finished_at = NULL, "
                "error = NULL, cancel_requested_at = NULL, params = :params "
                "WHERE run_id = :id AND status = :old_status AND "
                "COALESCE(pid, 0) = :old_pid AND COALESCE(host, '') = :old_host",
                mine | {"params": params, "id": run_id, "old_status": previous["status"],
                        "old_pid": previous["pid"] or 0, "old_host": previous["host"] or ""})
        return taken == 1

    def beat(self, run_id: str) -> None:
        with self.catalog.transaction() as tx:
            tx.execute("UPDATE runs SET heartbeat_at = :at WHERE run_id = :id",
                       {"at": now(), "id": run_id})

    def cancel_requested(self, run_id: str) -> bool:
        rows = self.catalog.query("SELECT cancel_requested_at FROM runs WHERE run_id = :id",
                                  {"id": run_id})
        return bool(rows and rows[0]["cancel_requested_at"])

    def running_runs(self) -> list[Row]:
        return self.catalog.query("SELECT run_id, pid, host FROM runs WHERE status = 'running'")

    def statuses(self) -> dict[str, str]:
        return {r["run_id"]: r["status"] for r in
                self.catalog.query("SELECT run_id, status FROM runs")}

    def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        self.catalog.update("runs", {"run_id": run_id}, status=status, finished_at=now(),
                            error=_scrubbed(error))

    def add_params(self, run_id: str, **values: Any) -> None:
        """Merge ``values`` into the run's recorded parameters (what was measured)."""
        run = self.run(run_id)
        if run is None:
            raise StoreError(f"catalog: no run {run_id} to record parameters on")
        params = run.params.raw | values
        self.catalog.update("runs", {"run_id": run_id}, params=json.dumps(params))

    # -- what a run is made of --------------------------------------------------------------

    def record_setup(self, run_id: str, *, steps: list[Row], items: list[Row],
                     pipeline: Row, intermediates: list[Row]) -> None:
        """Steps, STAC items, the pipeline definition and the intermediates a run will
        write, recorded before anything is written: a run killed mid-way leaves nothing
        untracked. Rows already there (a resumed run) are kept."""
        self.catalog.insert_many("run_items", [{"run_id": run_id, **i} for i in items],
                                 keep_existing=True)
        self.catalog.insert_many("steps", [{"run_id": run_id, **s} for s in steps],
                                 keep_existing=True)
        with self.catalog.transaction() as tx:
            tx.execute("INSERT INTO pipelines (id, hash, version, document, file, first_run) "
                       "VALUES (:id, :hash, :version, :document, :file, :run) "
                       "ON CONFLICT (id, hash) DO NOTHING", pipeline | {"run": run_id})
        self.catalog.insert_many("intermediates", [{"run_id": run_id, **i}
                                                   for i in intermediates], keep_existing=True)
        with self.catalog.transaction() as tx:
            tx.execute("UPDATE intermediates SET dropped_at = NULL WHERE run_id = :id",
                       {"id": run_id})

    def forget(self, run_id: str, *, everything: bool, steps: list[str]) -> None:
        """Before running again: forget every task (``everything``), or those that did not
        complete and every task of ``steps``; every step is pending again."""
        with self.catalog.transaction() as tx:
            if everything:
                tx.execute("DELETE FROM tasks WHERE run_id = :id", {"id": run_id})
            else:
                tx.execute("DELETE FROM tasks WHERE run_id = :id AND status != 'completed'",
                           {"id": run_id})
                for sid in steps:
                    tx.execute("DELETE FROM tasks WHERE run_id = :id AND step_id = :s",
                               {"id": run_id, "s": sid})
            tx.execute("UPDATE steps SET status = 'pending', error = NULL, finished_at = NULL "
                       "WHERE run_id = :id", {"id": run_id})

    # -- tasks ------------------------------------------------------------------------------

    def completed_tasks(self, run_id: str) -> list[Row]:
        return self.catalog.query("SELECT step_id, task_no, output_path, rows_out FROM tasks "
                                  "WHERE run_id = :id AND status = 'completed'", {"id": run_id})

    def drop_tasks(self, keys: list[TaskKey]) -> None:
        with self.catalog.transaction() as tx:
            for k in keys:
                tx.execute("DELETE FROM tasks WHERE run_id = :run_id AND step_id = :step_id "
                           "AND task_no = :task_no", k.where())

    def add_tasks(self, run_id: str, tasks: list[tuple[str, int, int]]) -> None:
        """Pending tasks as (step id, task number, rows in)."""
        self.catalog.insert_many("tasks", [
            {"run_id": run_id, "step_id": s, "task_no": n, "status": "pending", "rows_in": r}
            for s, n, r in tasks], keep_existing=True)

    def task_retrying(self, key: TaskKey, attempt: int, error: str) -> None:
        error = masking.scrub(error)
        self.catalog.update("tasks", key.where(), attempts=attempt + 1, error=error)
        self.event(key.run_id, "task", key.label, "retrying",
                   f"attempt {attempt} failed: {error}")

    def task_failed(self, key: TaskKey, seconds: float, error: str, *,
                    started: float | None = None, worker: str | None = None) -> None:
        """The task failed for good; ``started`` (epoch seconds) and ``worker`` are its last
        attempt's (None: as the row says, e.g. a queue delivery's)."""
        error = masking.scrub(error)
        self.catalog.update("tasks", key.where(), status="failed", finished_at=now(),
                            seconds=seconds, error=error, **_ran(started, worker))
        self.catalog.update("steps", {"run_id": key.run_id, "step_id": key.step_id},
                            status="failed", finished_at=now(), error=error)
        self.event(key.run_id, "task", key.label, "failed", error)
        self.event(key.run_id, "step", key.step_id, "failed", error)

    def task_completed(self, key: TaskKey, *, seconds: float, rows: int, output: str,
                       tile_seconds: dict[str, float] | None, started: float | None = None,
                       worker: str | None = None, null_rows: int | None = None) -> None:
        """The task's output is written; ``started`` and ``worker`` as in :meth:`task_failed`;
        ``null_rows``: its rows with no valid pixel (None: not counted)."""
        self.catalog.update("tasks", key.where(), status="completed", finished_at=now(),
                            seconds=seconds, rows_out=rows, output_path=output,
                            tile_seconds=json.dumps(tile_seconds) if tile_seconds else None,
                            null_rows=null_rows, **_ran(started, worker))
        self.event(key.run_id, "task", key.label, "completed",
                   f"{rows} rows in {seconds:.2f} s")

    def tasks_completed(self, done: list[Completed],
                        steps: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Several tasks' outputs written, recorded in one transaction with their events
        and the progress of their steps ((run, step) -> (tasks done, rows out)): a run
        of many short tasks pays one commit for a few of them, not five for each."""
        if not done:
            return
        with self.catalog.transaction() as tx:
            updated = tx.many(
                "UPDATE tasks SET status = 'completed', finished_at = :t, seconds = :sec, "
                "rows_out = :rows, output_path = :out, tile_seconds = :tiles, "
                "null_rows = :nulls, started_at = COALESCE(:started, started_at), "
                "worker = COALESCE(:worker, worker) "
                "WHERE run_id = :run_id AND step_id = :step_id AND task_no = :task_no",
                [d.values() for d in done])
            if updated != len(done):
                raise StoreError(f"catalog: expected to complete {len(done)} task(s) of run "
                                 f"{done[0].key.run_id}, updated {updated}")
            tx.many("INSERT INTO events (run_id, at, kind, subject, status, detail) "
                    "VALUES (:run_id, :at, 'task', :subject, 'completed', :detail)",
                    [{"run_id": d.key.run_id, "at": d.at, "subject": d.key.label,
                      "detail": f"{d.rows} rows in {d.seconds:.2f} s"} for d in done])
            for (run_id, step_id), (tasks_done, rows_out) in steps.items():
                if tx.execute("UPDATE steps SET tasks_done = :n, rows_out = :rows WHERE "
                              "run_id = :run AND step_id = :step",
                              {"n": tasks_done, "rows": rows_out, "run": run_id,
                               "step": step_id}) != 1:
                    raise StoreError(f"catalog: no step {step_id} of run {run_id} to "
                                     "record progress on")

    def null_rows(self, run_id: str) -> dict[str, tuple[int, int]]:
        """Per step whose every completed task counted them: (rows with no valid pixel,
        rows), summed over its tasks."""
        rows = self.catalog.query(
            "SELECT step_id, SUM(null_rows) AS nulls, SUM(rows_out) AS rows_out, "
            "COUNT(null_rows) AS counted, COUNT(*) AS tasks FROM tasks "
            "WHERE run_id = :id AND status = 'completed' GROUP BY step_id", {"id": run_id})
        return {r["step_id"]: (int(r["nulls"]), int(r["rows_out"] or 0)) for r in rows
                if r["counted"] == r["tasks"]}

    def tasks_left(self, run_id: str) -> int:
        with self.catalog.transaction(readonly=True) as tx:
            left = tx.one("SELECT count(*) AS n FROM tasks WHERE run_id = :id AND "
                          "status != 'completed'", {"id": run_id})
        return int(left["n"]) if left else 0

    # -- steps ------------------------------------------------------------------------------

    def step_started(self, run_id: str, step_id: str, *, tasks: int, rows_in: int) -> None:
        self.catalog.update("steps", {"run_id": run_id, "step_id": step_id}, status="running",
                            started_at=now(), tasks_total=tasks, rows_in=rows_in)

    def step_progress(self, run_id: str, step_id: str, *, tasks_done: int, rows_out: int
                      ) -> None:
        self.catalog.update("steps", {"run_id": run_id, "step_id": step_id},
                            tasks_done=tasks_done, rows_out=rows_out)

    def step_completed(self, run_id: str, step_id: str, rows: int) -> None:
        self.catalog.update("steps", {"run_id": run_id, "step_id": step_id},
                            status="completed", finished_at=now())
        self.event(run_id, "step", step_id, "completed", f"{rows} rows")

    def steps_interrupted(self, run_id: str) -> None:
        with self.catalog.transaction() as tx:
            tx.execute("UPDATE steps SET status = 'interrupted', finished_at = :t WHERE "
                       "run_id = :id AND status = 'running'", {"id": run_id, "t": now()})

    # -- events and intermediates -------------------------------------------------------------

    def event(self, run_id: str, kind: str, subject: str, status: str,
              detail: str | None = None) -> None:
        self.catalog.event(run_id, kind, subject, status, _scrubbed(detail))

    def open_intermediates(self, run_id: str | None = None) -> list[Row]:
        """Intermediates not dropped yet: of one run, or of every run."""
        if run_id is None:
            return self.catalog.query("SELECT * FROM intermediates WHERE dropped_at IS NULL")
        return self.catalog.query("SELECT * FROM intermediates WHERE run_id = :r AND "
                                  "dropped_at IS NULL", {"r": run_id})

    def intermediate_dropped(self, run_id: str, step_id: str) -> None:
        self.catalog.update("intermediates", {"run_id": run_id, "step_id": step_id},
                            dropped_at=now())

    # -- what earlier runs measured ---------------------------------------------------------

    def throughput(self) -> list[Row]:
        """Per operation, over the completed steps of completed runs: tasks' seconds and
        rows in, with each run's recorded parameters (where pixels and workers are)."""
        return [r | {"params": RunParams.parse(r["params"]).raw} for r in self.catalog.query(
            "SELECT s.run_id, s.step_id, s.operation, r.params, r.cells, "
            "SUM(t.seconds) AS seconds, SUM(t.rows_in) AS rows_in, COUNT(*) AS tasks "
            "FROM steps s JOIN runs r ON r.run_id = s.run_id "
            "JOIN tasks t ON t.run_id = s.run_id AND t.step_id = s.step_id "
            "WHERE r.status = 'completed' AND s.status = 'completed' "
            "AND t.status = 'completed' AND t.seconds IS NOT NULL "
            "GROUP BY s.run_id, s.step_id, s.operation, r.params, r.cells "
            "ORDER BY MAX(r.created_at) DESC LIMIT 200")]


def _scrubbed(text: str | None) -> str | None:
    """An error as the store keeps it: a library's message may quote a password, and
    'runs show' prints what is kept."""
    return None if text is None else masking.scrub(text)


def _ran(started: float | None, worker: str | None) -> Row:
    """Where and when a task's attempt ran, as columns: only what is known."""
    known: Row = {}
    if started is not None:
        known["started_at"] = stamp_of(started)
    if worker is not None:
        known["worker"] = worker
    return known


__all__ = ["Completed", "RunLog", "TaskKey"]
