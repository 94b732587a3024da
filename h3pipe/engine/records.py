"""Reading what runs left behind: run listings (:func:`list_runs`, :func:`show_run`) and
dataset exports (:func:`export_dataset`)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from h3pipe.config.project import Project, suggest
from h3pipe.engine.runner import open_store
from h3pipe.errors import ConfigError, UsageError

FORMATS = ("parquet", "csv", "geojson")


def migrations(project: Project, *, upgrade: bool) -> tuple[str, list[str], list[str]]:
    """(store shown safely, migrations applied, pending); with ``upgrade``, apply them first
    and report what was applied now."""
    from h3pipe.storage import is_database
    from h3pipe.storage.catalog import Catalog, safe_url

    project.read_settings()
    location = project.store_location()
    if is_database(location):
        url, where = location, safe_url(location)
    else:
        root = Path(location).expanduser()
        root = root if root.is_absolute() else project.root / root
        url, where = f"sqlite:///{root / 'catalog.sqlite'}", str(root)
    catalog = Catalog(url, migrate=False)
    try:
        if upgrade:
            return where, catalog.migrate(), catalog.pending()
        return where, catalog.applied(), catalog.pending()
    finally:
        catalog.close()


def list_runs(project: Project, limit: int = 20,
              pipeline: str | None = None) -> list[dict[str, Any]]:
    store = open_store(project, project.read_settings(), create=False)
    try:
        sql = "SELECT * FROM runs"
        params: dict[str, Any] = {"limit": limit}
        if pipeline:
            sql += " WHERE pipeline_id = :pipeline"
            params["pipeline"] = pipeline
        return store.catalog.query(sql + " ORDER BY created_at DESC LIMIT :limit", params)
    finally:
        store.close()


def show_run(project: Project, run_id: str) -> dict[str, Any]:
    store = open_store(project, project.read_settings(), create=False)
    try:
        if run_id == "latest":
            runs = store.catalog.query("SELECT * FROM runs ORDER BY created_at DESC LIMIT 1")
            if not runs:
                raise ConfigError("no runs yet", hint="start one with 'h3pipe run'")
        else:
            runs = store.catalog.query("SELECT * FROM runs WHERE run_id = :id", {"id": run_id})
        if not runs:
            matches = store.catalog.query("SELECT * FROM runs WHERE run_id LIKE :p "
                                          "ORDER BY created_at DESC", {"p": run_id + "%"})
            if len(matches) != 1:
                raise ConfigError(f"no run '{run_id}'" + (" (ambiguous prefix)" if matches else ""),
                                  hint="list runs with 'h3pipe runs list'")
            runs = matches
        run = runs[0]
        rid = run["run_id"]
        one = {"id": rid}
        run["steps"] = store.catalog.query("SELECT * FROM steps WHERE run_id = :id "
                                           "ORDER BY stage, step_id", one)
        run["failed_tasks"] = store.catalog.query(
            "SELECT step_id, task_no, rows_in, error FROM tasks WHERE run_id = :id AND "
            "status = 'failed' ORDER BY task_no", one)
        run["slowest_tasks"] = store.catalog.query(
            "SELECT step_id, task_no, rows_in, seconds FROM tasks WHERE run_id = :id AND "
            "seconds IS NOT NULL ORDER BY seconds DESC LIMIT 5", one)
        run["slowest_tiles"] = _slowest_tiles(store.catalog.query(
            "SELECT tile_seconds FROM tasks WHERE run_id = :id AND tile_seconds IS NOT NULL",
            one))
        run["items"] = store.catalog.query(
            "SELECT source_id, item_id, href FROM run_items WHERE run_id = :id "
            "ORDER BY source_id, item_id", one)
        run["events"] = store.catalog.query(
            "SELECT at, kind, subject, status, detail FROM events WHERE run_id = :id "
            "AND kind != 'task' ORDER BY id", one)
        run["task_events"] = store.catalog.query(
            "SELECT count(*) AS n FROM events WHERE run_id = :id AND kind = 'task'", one
        )[0]["n"]
        run["params"] = json.loads(run["params"])
        return run
    finally:
        store.close()


def _slowest_tiles(rows: list[dict[str, Any]], limit: int = 5) -> list[dict[str, Any]]:
    """Tiles by the seconds tasks spent opening, reading and decoding them, slowest first."""
    seconds: dict[str, float] = {}
    tasks: dict[str, int] = {}
    for row in rows:
        for tile, s in json.loads(row["tile_seconds"]).items():
            seconds[tile] = seconds.get(tile, 0.0) + s
            tasks[tile] = tasks.get(tile, 0) + 1
    ranked = sorted(seconds, key=lambda t: -seconds[t])[:limit]
    return [{"tile": t, "seconds": seconds[t], "tasks": tasks[t]} for t in ranked]


def cancel_run(project: Project, run_id: str) -> str:
    """Ask a running run to stop taking new tasks; on this host, also send it SIGTERM.
    Returns what was done."""
    import os
    import signal
    import socket

    from h3pipe.engine.lock import holder_alive
    from h3pipe.storage.catalog import now

    store = open_store(project, project.read_settings(), create=False)
    try:
        rows = store.catalog.query("SELECT * FROM runs WHERE run_id = :id", {"id": run_id})
        if not rows:
            raise ConfigError(f"no run '{run_id}'", hint="list runs with 'h3pipe runs list'")
        run = rows[0]
        if not holder_alive(run):
            raise ConfigError(f"run '{run_id}' is not running (status {run['status']})")
        store.catalog.update("runs", {"run_id": run_id}, cancel_requested_at=now())
        store.catalog.event(run_id, "run", run_id, "cancel requested")
    finally:
        store.close()
    if run["host"] == socket.gethostname():
        os.kill(run["pid"], signal.SIGTERM)
        return f"asked run {run_id} to stop (SIGTERM to pid {run['pid']})"
    return (f"asked run {run_id} to stop; its process on {run['host']} stops before its next "
            "task")


def export_dataset(project: Project, dataset: str, out: Path, fmt: str, *,
                   iso3: str | None = None, resolution: int | None = None) -> int:
    """Write one row per cell of ``dataset`` to ``out``; return the number of rows."""
    if fmt not in FORMATS:
        raise UsageError(f"--format '{fmt}' is not one of {', '.join(FORMATS)}")
    store = open_store(project, project.read_settings(), create=False)
    try:
        scope_key = f"iso3={iso3.strip().upper()}" if iso3 else None
        entries = store.result_entries(dataset, resolution, scope_key)
        if not entries:
            known = sorted({e["dataset"] for e in store.result_entries()})
            if dataset not in known:
                raise ConfigError(f"no results for dataset '{dataset}'" + suggest(dataset, known)
                                  + f" (datasets with results: {', '.join(known) or 'none'})")
            have = store.result_entries(dataset)
            options = ", ".join(f"{e['scope_label']} at resolution {e['resolution']}" for e in have)
            raise ConfigError(f"no results for dataset '{dataset}' with the filters given "
                              f"(it has: {options})")
        table = store.read_results(entries)
    finally:
        store.close()
    _write(table, out, fmt)
    return table.num_rows


def _write(table: Any, out: Path, fmt: str) -> None:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out = out.expanduser()
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            pq.write_table(table, tmp, compression="zstd")
        elif fmt == "csv":
            pcsv.write_csv(table, tmp)
        else:
            _write_geojson(table, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):  # e.g. the folder is really a file
            tmp.unlink(missing_ok=True)
        # The output path is the user's to choose: a bad one is bad input (exit 2).
        raise ConfigError(f"cannot write {out}: {exc}",
                          hint="check the folder exists, is a folder and is writable") from exc


def _write_geojson(table: Any, path: Path) -> None:
    import h3

    cols = table.column_names
    with path.open("w", encoding="utf-8") as f:
        f.write('{"type": "FeatureCollection", "features": [\n')
        for i, row in enumerate(table.to_pylist()):
            ring = [[lng, lat] for lat, lng in h3.cell_to_boundary(row["h3_index"])]
            ring.append(ring[0])
            feature = {"type": "Feature", "properties": {c: row[c] for c in cols},
                       "geometry": {"type": "Polygon", "coordinates": [ring]}}
            f.write(("," if i else "") + json.dumps(feature, allow_nan=False) + "\n")
        f.write("]}\n")
