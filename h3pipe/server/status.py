"""A run as OGC API – Processes sees a job: :func:`job_status` turns a run record (a row of
``Project.runs()`` or ``Project.run_record()``) into a ``statusInfo`` document. The jobs
and the runs endpoints both answer with it, so a run's status and progress are worked out
in one place."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# The run row's status -> OGC's. 'interrupted' is a run stopped by a signal or a cancel:
# OGC calls a job stopped on request 'dismissed'; 'queued' and 'cancelled' are the server's
# own words for a run waiting for a warm worker, and one dropped before it started.
STATUSES = {"pending": "accepted", "queued": "accepted", "running": "running",
            "completed": "successful", "failed": "failed", "interrupted": "dismissed",
            "cancelled": "dismissed"}
ENDED = ("successful", "failed", "dismissed")


def job_status(record: Mapping[str, Any]) -> dict[str, Any]:
    """The statusInfo of a run: ``jobID`` (the run id), ``processID`` (its pipeline),
    ``status`` (accepted, running, successful, failed or dismissed), ``message``,
    ``progress`` (0-100), ``created``, ``started``, ``finished``, ``updated`` (RFC 3339).
    A run recorded as running whose holder is gone (``dead``) is failed, and says why.
    Without ``steps`` in the record (a listing's row) a running run's progress is left
    out rather than guessed."""
    status = _status(record)
    info: dict[str, Any] = {
        "jobID": record["run_id"], "processID": record.get("pipeline_id"),
        "type": "process", "status": status, "message": _message(record, status),
        "created": rfc3339(record.get("created_at")),
        "started": rfc3339(record.get("started_at")),
        "finished": rfc3339(record.get("finished_at")) if status in ENDED else None,
        "updated": rfc3339(_updated(record)),
    }
    progress = _progress(record, status)
    if progress is not None:
        info["progress"] = progress
    return {k: v for k, v in info.items() if v is not None}


def _status(record: Mapping[str, Any]) -> str:
    if record.get("status") == "running" and record.get("dead"):
        return "failed"
    return STATUSES.get(str(record.get("status")), "failed")


def _message(record: Mapping[str, Any], status: str) -> str:
    scope = f"{record.get('scope_label', '?')} at resolution {record.get('resolution', '?')}"
    if record.get("status") == "running" and record.get("dead"):
        return f"the run's process died: {record['dead']}"
    if status == "accepted":
        return f"waiting for a worker: {scope}"
    if status == "running":
        asked = " (cancel requested)" if record.get("cancel_requested_at") else ""
        return f"running: {scope}{asked}"
    if status == "successful":
        return f"completed: {scope}, {record.get('cells', '?')} cells"
    return str(record.get("error") or f"{status}: {scope}")


def _progress(record: Mapping[str, Any], status: str) -> int | None:
    """Percent of the work done: every barrier stage an equal share, a stage's share
    filled by its tasks done over its tasks planned (a stage's tasks are known only once
    it starts, so counting all tasks at once would jump back when a later stage starts).
    100 only once the run is successful: publishing follows the last task."""
    if status == "successful":
        return 100
    if status == "accepted":
        return 0
    steps = record.get("steps")
    if not steps:
        return None
    stages: dict[int, list[Mapping[str, Any]]] = {}
    for step in steps:
        stages.setdefault(int(step["stage"]), []).append(step)
    done = sum(_stage_share(s) for s in stages.values()) / len(stages)
    return min(99, int(done * 100))


def _stage_share(steps: list[Mapping[str, Any]]) -> float:
    if all(s["status"] == "completed" for s in steps):
        return 1.0
    total = sum(int(s["tasks_total"] or 0) for s in steps)
    done = sum(int(s["tasks_done"] or 0) for s in steps)
    return min(1.0, done / total) if total else 0.0


def _updated(record: Mapping[str, Any]) -> Any:
    """The latest moment the record knows of the run."""
    moments = [record.get(k) for k in ("created_at", "started_at", "heartbeat_at",
                                       "cancel_requested_at", "finished_at")]
    moments += [s.get(k) for s in record.get("steps") or ()
                for k in ("started_at", "finished_at")]
    stamps = [m for m in (_parsed(m) for m in moments) if m is not None]
    return max(stamps) if stamps else None


def rfc3339(moment: Any) -> str | None:
    """A catalog timestamp (ISO 8601 text, or a datetime) as RFC 3339 in UTC with 'Z'."""
    parsed = _parsed(moment)
    if parsed is None:
        return None
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parsed(moment: Any) -> datetime | None:
    if moment is None or moment == "":
        return None
    stamp = moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
