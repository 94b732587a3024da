"""Reading what runs recorded: :func:`recent_runs`, :func:`find_run`, :func:`run_history`
(one run's steps, tasks, items and events as a :class:`RunHistory`), :func:`task_spans`
(where and when each task ran) and the one write a
reader makes, :func:`request_cancel`.

Every function takes the store's :class:`~h3pipe.storage.catalog.Catalog`, so the same SQL
serves the embedded store and PostgreSQL. Judging the rows (is a 'running' run alive?) is
the engine's business, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from h3pipe.storage.catalog import Catalog, now
from h3pipe.storage.records import Row, RunRecord


@dataclass(frozen=True)
class RunHistory:
    """What one run left in the catalog besides its own row."""

    steps: list[Row]
    failed_tasks: list[Row]
    slowest_tasks: list[Row]
    tile_seconds: list[str]  # each task's JSON {tile: seconds}
    items: list[Row]
    events: list[Row]  # everything but task events, which would drown the timeline
    task_events: int


def recent_runs(catalog: Catalog, *, limit: int, pipeline: str | None = None
                ) -> list[RunRecord]:
    """Run rows, newest first."""
    sql, params = "SELECT * FROM runs", dict[str, Any](limit=limit)
    if pipeline:
        sql += " WHERE pipeline_id = :pipeline"
        params["pipeline"] = pipeline
    return [RunRecord(r) for r in
            catalog.query(sql + " ORDER BY created_at DESC LIMIT :limit", params)]


def find_run(catalog: Catalog, run_id: str) -> RunRecord | None:
    """The run row with exactly this id."""
    rows = catalog.query("SELECT * FROM runs WHERE run_id = :id", {"id": run_id})
    return RunRecord(rows[0]) if rows else None


def latest_run(catalog: Catalog) -> RunRecord | None:
    rows = recent_runs(catalog, limit=1)
    return rows[0] if rows else None


def runs_with_prefix(catalog: Catalog, prefix: str) -> list[RunRecord]:
    """Runs whose id starts with ``prefix``, newest first."""
    # Run ids hold '_' (pipeline ids do), which LIKE would take for any character.
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return [RunRecord(r) for r in catalog.query(
        "SELECT * FROM runs WHERE run_id LIKE :p ESCAPE '\\' ORDER BY created_at DESC",
        {"p": escaped + "%"})]


def run_history(catalog: Catalog, run_id: str) -> RunHistory:
    one = {"id": run_id}
    with catalog.transaction(readonly=True) as tx:  # one consistent picture of a live run
        return RunHistory(
            steps=tx.rows("SELECT * FROM steps WHERE run_id = :id ORDER BY stage, step_id",
                          one),
            failed_tasks=tx.rows(
                "SELECT step_id, task_no, rows_in, error FROM tasks WHERE run_id = :id AND "
                "status = 'failed' ORDER BY task_no", one),
            slowest_tasks=tx.rows(
                "SELECT step_id, task_no, rows_in, seconds FROM tasks WHERE run_id = :id AND "
                "seconds IS NOT NULL ORDER BY seconds DESC LIMIT 5", one),
            tile_seconds=[r["tile_seconds"] for r in tx.rows(
                "SELECT tile_seconds FROM tasks WHERE run_id = :id AND "
                "tile_seconds IS NOT NULL", one)],
            items=tx.rows("SELECT source_id, item_id, href FROM run_items WHERE run_id = :id "
                          "ORDER BY source_id, item_id", one),
            events=tx.rows("SELECT at, kind, subject, status, detail FROM events "
                           "WHERE run_id = :id AND kind != 'task' ORDER BY id", one),
            task_events=int(tx.rows("SELECT count(*) AS n FROM events WHERE run_id = :id "
                                    "AND kind = 'task'", one)[0]["n"]),
        )


def task_spans(catalog: Catalog, run_id: str) -> list[Row]:
    """Every task of the run with where and when it ran (a timeline per worker), in the
    order they started; tasks that never started come last."""
    return catalog.query(
        "SELECT step_id, task_no, status, worker, started_at, finished_at, seconds, rows_in, "
        "rows_out, attempts FROM tasks WHERE run_id = :id "
        # Portable "NULLS LAST": SQLite puts NULLs first, PostgreSQL last.
        "ORDER BY CASE WHEN started_at IS NULL THEN 1 ELSE 0 END, started_at, task_no, "
        "step_id", {"id": run_id})


def pipeline_document(catalog: Catalog, pipeline_id: str, content_hash: str) -> Row | None:
    """The pipeline definition a run ran, as it was recorded then."""
    import json

    rows = catalog.query("SELECT document FROM pipelines WHERE id = :id AND hash = :hash",
                         {"id": pipeline_id, "hash": content_hash})
    return dict(json.loads(rows[0]["document"])) if rows else None


def request_cancel(catalog: Catalog, run_id: str) -> None:
    """Mark the run for its holder to stop before its next task, and say so in its timeline."""
    catalog.update("runs", {"run_id": run_id}, cancel_requested_at=now())
    catalog.event(run_id, "run", run_id, "cancel requested")


__all__ = ["RunHistory", "find_run", "latest_run", "pipeline_document", "recent_runs",
           "request_cancel", "run_history", "runs_with_prefix", "task_spans"]
