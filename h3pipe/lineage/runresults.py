"""A run's results as one machine-readable JSON document, as dbt's ``run_results.json``
is for its runs: :func:`build` reads it from the catalog, :func:`write` keeps it beside the
run's record.

The document (``schema_version`` 1; its JSON Schema is ``run_results.v1.json`` beside this
module) holds the run (status, error, times, settings), each step (status, times, tasks by
status, rows in and out, cells with no valid pixel, seconds of its tasks), the checks
(coverage against ``max_null_share``, conservation of extensive sums, warnings) and the
outputs the run published. Everything comes from the catalog, so the document written at
the end of a run and one built later (``h3pipe runs show RUN --json``) say the same, on
either store; only ``outputs`` may shrink, once a later run replaces the result.

Where the file is: ``<store>/run_results/<run id>.json`` for the embedded store, beside
``catalog.sqlite``; for the PostgreSQL store, which has no folder of its own, in
``.h3pipe/run_results/`` of the project on the machine that ended the run (where its
Parquet intermediates go too). Each end of a run (a resume's too) replaces it atomically.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from h3pipe.about import version
from h3pipe.errors import ConfigError
from h3pipe.lineage.events import run_uuid
from h3pipe.storage import history
from h3pipe.storage.base import Store
from h3pipe.storage.embedded import EmbeddedStore
from h3pipe.storage.records import Row
from h3pipe.storage.runlog import RunLog

SCHEMA_VERSION = 1
FOLDER = "run_results"
SCHEMA_FILE = Path(__file__).resolve().parent / f"run_results.v{SCHEMA_VERSION}.json"


def location(store: Store, run_id: str) -> Path:
    """Where the run-results file of ``run_id`` is kept for ``store``."""
    base = store.root if isinstance(store, EmbeddedStore) else Path(
        getattr(store, "scratch", ".h3pipe"))
    return base / FOLDER / f"{run_id}.json"


def write(store: Store, run_id: str) -> Path:
    """Build the document and replace the run's file with it, atomically (a temporary
    file in the same folder, flushed, then renamed over it). Returns its path."""
    doc = build(store, run_id)
    path = location(store, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def build(store: Store, run_id: str) -> Row:
    """The run-results document of ``run_id``, from the catalog."""
    catalog = store.catalog
    run = history.find_run(catalog, run_id)
    if run is None:
        raise ConfigError(f"no run '{run_id}'", hint="list runs with 'h3pipe runs list'")
    params = run.params.raw
    past = history.run_history(catalog, run_id)
    tasks = history.task_spans(catalog, run_id)
    nulls = RunLog(catalog).null_rows(run_id)
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "generator": f"h3pipe {version()}",
        "run": _run(run, params),
        "steps": [_step(s, [t for t in tasks if t["step_id"] == s["step_id"]],
                        nulls.get(s["step_id"])) for s in past.steps],
        "checks": _checks(params, past.events),
        "inputs": _items(past.items),
        "outputs": _outputs(store, run),
    }


def _run(run: Row, params: Row) -> Row:
    return {
        "run_id": run["run_id"],
        "openlineage_run_id": run_uuid(run["run_id"], run["started_at"])
        if run["started_at"] else None,
        "pipeline_id": run["pipeline_id"], "pipeline_version": run["pipeline_version"],
        "pipeline_hash": run["pipeline_hash"], "dataset": run["dataset"],
        "scope_key": run["scope_key"], "scope_label": run["scope_label"],
        "resolution": run["resolution"], "cells": run["cells"],
        "status": run["status"], "error": run["error"],
        "created_at": run["created_at"], "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "elapsed_s": _elapsed(run["started_at"], run["finished_at"]),
        "queue": run.get("queue"), "workers": params.get("workers"),
        "batch_size": params.get("batch_size"), "measured": params.get("measured"),
    }


def _step(step: Row, tasks: list[Row], nulls: tuple[int, int] | None) -> Row:
    by_status: dict[str, int] = {}
    for t in tasks:
        by_status[t["status"]] = by_status.get(t["status"], 0) + 1
    seconds = [float(t["seconds"]) for t in tasks if t["seconds"] is not None]
    rows_out = sum(int(t["rows_out"] or 0) for t in tasks if t["status"] == "completed")
    null_rows = nulls[0] if nulls else None
    return {
        "step_id": step["step_id"], "stage": step["stage"], "operation": step["operation"],
        "status": step["status"], "error": step["error"],
        "started_at": step["started_at"], "finished_at": step["finished_at"],
        "elapsed_s": _elapsed(step["started_at"], step["finished_at"]),
        "tasks": {"total": len(tasks), **dict(sorted(by_status.items()))},
        "rows_in": sum(int(t["rows_in"] or 0) for t in tasks),
        "rows_out": rows_out,
        "null_rows": null_rows,
        "null_share": null_rows / rows_out if null_rows is not None and rows_out else None,
        "task_seconds": {"sum": round(sum(seconds), 3),
                         "max": round(max(seconds), 3) if seconds else None},
        "attempts": sum(int(t["attempts"] or 1) for t in tasks),
    }


def _checks(params: Row, events: list[Row]) -> Row:
    coverage = params.get("coverage")
    checked = None
    if coverage:
        limit, strict = coverage.get("max_null_share", 0.5), bool(coverage.get("strict"))
        steps = []
        for s in coverage.get("steps", []):
            share = s["null"] / s["rows"] if s.get("null") is not None and s.get("rows") \
                else None
            over = share is not None and s["published"] and share > limit
            steps.append({"step_id": s["step"], "source": s["source"],
                          "published": s["published"], "null_rows": s.get("null"),
                          "rows": s.get("rows"), "null_share": share,
                          "status": ("fail" if strict else "warn") if over else "pass"})
        checked = {"max_null_share": limit, "strict": strict,
                   "footprints": coverage.get("footprints", {}), "steps": steps}
    conservation = [{"step_id": step_id, **figure, "status": "pass"}
                    for step_id, found in params.get("conservation", {}).items()
                    for figure in found]
    return {"coverage": checked, "conservation": conservation,
            "warnings": [e["detail"] for e in events
                         if e["kind"] == "run" and e["status"] == "warning"]}


def _items(items: list[Row]) -> Row:
    """STAC items read, counted per source."""
    counted: dict[str, int] = {}
    for item in items:
        counted[item["source_id"]] = counted.get(item["source_id"], 0) + 1
    return {"stac_items": counted}


def _outputs(store: Store, run: Row) -> list[Row]:
    entries = store.result_entries(run["dataset"], run["resolution"], run["scope_key"])
    where = store.root if isinstance(store, EmbeddedStore) else None
    return [{"dataset": e["dataset"], "theme": e["theme"], "resolution": e["resolution"],
             "scope_key": e["scope_key"], "scope_label": e["scope_label"],
             "rows": e["rows"], "columns": json.loads(e["columns"]),
             "location": str(where / e["path"]) if where else e["path"],
             "published_at": e["updated_at"]}
            for e in entries if e["run_id"] == run["run_id"]]


def _elapsed(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return round(seconds, 3)


__all__ = ["FOLDER", "SCHEMA_FILE", "SCHEMA_VERSION", "build", "location", "write"]
