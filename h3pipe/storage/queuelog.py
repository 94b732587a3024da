"""What a queue run keeps in the store beside its run records: :class:`QueueLog`.

Workers on other machines share nothing with the process that submitted a run but the
broker and this store, so the store holds what they need: the run's plan (to plan and
publish later stages), each batch sent (a message carries only the task's key), the stage
the run is at, and each task's deliveries. Every decision two workers could race on is
one statement: taking a delivery, completing a task with its output, and closing a stage
(the last task to finish "turns out the lights").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from h3pipe.storage.catalog import Catalog, Tx, now
from h3pipe.storage.retry import retried
from h3pipe.storage.runlog import TaskKey


@dataclass(frozen=True)
class Delivery:
    """A worker's claim on a task: the how-manieth delivery this is."""

    count: int
    status: str  # the task's status before this delivery


@dataclass(frozen=True)
class StageCount:
    total: int
    completed: int
    failed: int
    running: int

    @property
    def settled(self) -> bool:
        return self.completed + self.failed == self.total


@retried
class QueueLog:
    """The queue's records in one catalog: PostgreSQL, or SQLite for workers on the
    machine that holds it."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- the run's plan and stage ----------------------------------------------------------

    def save_run(self, run_id: str, plan: bytes, *, queue_name: str, max_deliveries: int
                 ) -> None:
        """Keep the plan; the run starts again at stage 1 (kept tasks are not resent)."""
        with self.catalog.transaction() as tx:
            tx.execute("INSERT INTO queue_runs (run_id, plan, stage, queue_name, "
                       "max_deliveries) VALUES (:r, :p, 1, :q, :m) ON CONFLICT (run_id) DO "
                       "UPDATE SET plan = :p, stage = 1, queue_name = :q, max_deliveries = :m, "
                       "advances = 0",
                       {"r": run_id, "p": plan, "q": queue_name, "m": max_deliveries})

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.catalog.query("SELECT run_id, stage, queue_name, max_deliveries, advances "
                                  "FROM queue_runs WHERE run_id = :r", {"r": run_id})
        return rows[0] if rows else None

    def plan(self, run_id: str) -> bytes:
        rows = self.catalog.query("SELECT plan FROM queue_runs WHERE run_id = :r",
                                  {"r": run_id})
        return bytes(rows[0]["plan"])

    def count_advance(self, run_id: str, stage: int) -> int | None:
        """Count one delivery of the message that plans ``stage``; None when the run is
        past it already (a duplicate)."""
        with self.catalog.transaction() as tx:
            row = tx.one("UPDATE queue_runs SET advances = advances + 1 WHERE run_id = :r "
                         "AND stage = :s RETURNING advances", {"r": run_id, "s": stage})
        return None if row is None else int(row["advances"])

    def close_stage(self, run_id: str, stage: int) -> bool:
        """Move the run past ``stage`` if every task of it completed; True for exactly one
        caller (compare-and-swap: each caller committed its own task first, so the last
        to look sees every task done)."""
        with self.catalog.transaction() as tx:
            return tx.execute(
                "UPDATE queue_runs SET stage = :s + 1, advances = 0 WHERE run_id = :r AND "
                "stage = :s AND NOT EXISTS (SELECT 1 FROM tasks t JOIN steps st ON "
                "st.run_id = t.run_id AND st.step_id = t.step_id WHERE t.run_id = :r AND "
                "st.stage = :s AND t.status != 'completed')", {"r": run_id, "s": stage}) == 1

    def stage_count(self, run_id: str, stage: int) -> StageCount:
        with self.catalog.transaction(readonly=True) as tx:
            row = tx.one(
                "SELECT count(*) AS total, "
                "count(*) FILTER (WHERE t.status = 'completed') AS completed, "
                "count(*) FILTER (WHERE t.status = 'failed') AS failed, "
                "count(*) FILTER (WHERE t.status = 'running') AS running "
                "FROM tasks t JOIN steps st ON st.run_id = t.run_id AND "
                "st.step_id = t.step_id WHERE t.run_id = :r AND st.stage = :s",
                {"r": run_id, "s": stage})
        assert row is not None  # an aggregate always gives a row
        return StageCount(*(int(row[k]) for k in ("total", "completed", "failed", "running")))

    def stage_steps(self, run_id: str, stage: int) -> list[str]:
        return [r["step_id"] for r in self.catalog.query(
            "SELECT step_id FROM steps WHERE run_id = :r AND stage = :s ORDER BY step_id",
            {"r": run_id, "s": stage})]

    def first_failure(self, run_id: str) -> dict[str, Any] | None:
        rows = self.catalog.query("SELECT step_id, task_no, error FROM tasks WHERE run_id = :r "
                                  "AND status = 'failed' ORDER BY step_id, task_no LIMIT 1",
                                  {"r": run_id})
        return rows[0] if rows else None

    def running_tasks(self, run_id: str) -> int:
        with self.catalog.transaction(readonly=True) as tx:
            row = tx.one("SELECT count(*) AS n FROM tasks WHERE run_id = :r AND "
                         "status = 'running'", {"r": run_id})
        return int(row["n"]) if row else 0

    # -- batches and deliveries ------------------------------------------------------------

    def save_batches(self, run_id: str, batches: list[tuple[str, int, bytes]]) -> None:
        """The batches of a stage as sent: (step id, task number, encoded batch: see
        h3pipe.queue.codec; never a pickle)."""
        with self.catalog.transaction() as tx:
            tx.many("INSERT INTO queue_batches (run_id, step_id, task_no, payload) VALUES "
                    "(:r, :s, :n, :p) ON CONFLICT (run_id, step_id, task_no) DO UPDATE SET "
                    "payload = :p", [{"r": run_id, "s": s, "n": n, "p": p}
                                     for s, n, p in batches])

    def batch(self, key: TaskKey) -> bytes | None:
        rows = self.catalog.query("SELECT payload FROM queue_batches WHERE run_id = :run_id "
                                  "AND step_id = :step_id AND task_no = :task_no", key.where())
        return bytes(rows[0]["payload"]) if rows else None

    def drop_batches(self, run_id: str) -> None:
        with self.catalog.transaction() as tx:
            tx.execute("DELETE FROM queue_batches WHERE run_id = :r", {"r": run_id})

    def deliver(self, key: TaskKey, worker: str) -> Delivery | None:
        """Count one delivery of a task to ``worker`` and mark it running; None when the
        task is done already or no longer exists (a duplicate or stale message)."""
        with self.catalog.transaction() as tx:
            # SQLite's write transactions hold the whole catalog already.
            lock = " FOR UPDATE" if self.catalog.dialect == "postgresql" else ""
            row = tx.one("SELECT status FROM tasks WHERE run_id = :run_id AND step_id = "
                         ":step_id AND task_no = :task_no" + lock, key.where())
            if row is None or row["status"] in ("completed", "failed"):
                return None
            counted = tx.one("UPDATE tasks SET deliveries = deliveries + 1, status = "
                             "'running', worker = :w, started_at = :t WHERE run_id = :run_id "
                             "AND step_id = :step_id AND task_no = :task_no RETURNING "
                             "deliveries", key.where() | {"w": worker, "t": now()})
        assert counted is not None  # the row was locked above
        return Delivery(int(counted["deliveries"]), row["status"])

    def release(self, key: TaskKey) -> None:
        """A task handed back unfinished (its worker is stopping): pending again."""
        with self.catalog.transaction() as tx:
            tx.execute("UPDATE tasks SET status = 'pending', worker = NULL WHERE run_id = "
                       ":run_id AND step_id = :step_id AND task_no = :task_no AND "
                       "status = 'running'", key.where())

    def pending_tasks(self, run_id: str, stage: int) -> list[TaskKey]:
        rows = self.catalog.query(
            "SELECT t.step_id, t.task_no FROM tasks t JOIN steps st ON st.run_id = t.run_id "
            "AND st.step_id = t.step_id WHERE t.run_id = :r AND st.stage = :s AND "
            "t.status NOT IN ('completed', 'failed') ORDER BY t.step_id, t.task_no",
            {"r": run_id, "s": stage})
        return [TaskKey(run_id, r["step_id"], r["task_no"]) for r in rows]

    @staticmethod
    def complete_in(tx: Tx, key: TaskKey, *, seconds: float, rows: int, output: str,
                    tile_seconds: str | None, null_rows: int | None = None) -> bool:
        """Within the transaction that wrote the task's output: mark it completed; False
        when another delivery completed it first (then the caller rolls back)."""
        return tx.execute(
            "UPDATE tasks SET status = 'completed', finished_at = :t, seconds = :sec, "
            "rows_out = :rows, output_path = :out, tile_seconds = :tiles, "
            "null_rows = :nulls, error = NULL "
            "WHERE run_id = :run_id AND step_id = :step_id AND task_no = :task_no AND "
            "status NOT IN ('completed', 'failed')",
            key.where() | {"t": now(), "sec": seconds, "rows": rows, "out": output,
                           "tiles": tile_seconds, "nulls": null_rows}) == 1

    def step_totals(self, run_id: str, step_id: str) -> tuple[int, int]:
        """Tasks done and rows out of a step, counted from its tasks."""
        with self.catalog.transaction(readonly=True) as tx:
            row = tx.one("SELECT count(*) AS n, COALESCE(sum(rows_out), 0) AS rows FROM tasks "
                         "WHERE run_id = :r AND step_id = :s AND status = 'completed'",
                         {"r": run_id, "s": step_id})
        assert row is not None
        return int(row["n"]), int(row["rows"])

    # -- the run row ------------------------------------------------------------------------

    def end_run(self, run_id: str, status: str, error: str | None = None) -> bool:
        """Record how a running queue run ended; True for the one caller that did."""
        with self.catalog.transaction() as tx:
            return tx.execute("UPDATE runs SET status = :st, finished_at = :t, error = :e "
                              "WHERE run_id = :r AND status = 'running'",
                              {"st": status, "t": now(), "e": error, "r": run_id}) == 1

    def mark_queued(self, run_id: str, queue: str) -> None:
        self.catalog.update("runs", {"run_id": run_id}, queue=queue)


__all__ = ["Delivery", "QueueLog", "StageCount"]
