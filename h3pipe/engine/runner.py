"""Plan and execute one pipeline run: :func:`run_pipeline`.

A run is recorded before any work starts; every step and task is recorded as it changes
state; results are published only after every stage has finished, so a failed run never
replaces good results with partial ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from h3pipe import faults, storage
from h3pipe.config.dag import StepGraph
from h3pipe.config.project import Project, suggest
from h3pipe.engine.batching import Planner
from h3pipe.engine.cleanup import release
from h3pipe.engine.executors import Executor, Retry, Stopping, make_executor
from h3pipe.engine.lock import Heartbeat, claim, wait_or_refuse
from h3pipe.engine.scope import Scope, scope_cells
from h3pipe.engine.stopping import DEFAULT_GRACE_SECONDS, StopRequest, graceful
from h3pipe.errors import (
    Cancelled,
    ConfigError,
    H3PipeError,
    RunFailed,
    SourceError,
    Terminated,
    UsageError,
)
from h3pipe.operations import Batch, get_operation
from h3pipe.sources.raster import RasterInfo, describe_raster
from h3pipe.sources.stac import ItemRef, describe_stac
from h3pipe.sources.vector import VectorInfo, vector_info
from h3pipe.spec import PipelineSpec, SourceSpec, StepSpec
from h3pipe.storage.catalog import now

DEFAULT_BATCH_SIZE = 500


class Reporter:
    """Receives progress; the CLI draws it, tests may record it. Methods default to no-ops."""

    def run_started(self, run_id: str, pipeline: PipelineSpec, scope: Scope, resolution: int,
                    cells: int, stages: list[list[str]]) -> None: ...

    def stage_started(self, number: int, steps: list[str], tasks: int, cells: int, *,
                      unit: str = "cells") -> None: ...

    def task_finished(self, step_id: str, cells: int) -> None: ...

    def stage_finished(self, number: int) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass(frozen=True)
class RunResult:
    run_id: str
    pipeline_id: str
    dataset: str
    scope_label: str
    resolution: int
    cells: int
    rows: int
    seconds: float
    store: str
    state: str = "completed"  # completed | resumed | already (nothing recomputed)


def open_store(project: Project, settings: dict[str, Any], *, create: bool = True) -> Any:
    project.settings = settings or project.settings
    return storage.open_store(project.store_location(), project.root, create=create)


def run_pipeline(project: Project, pipeline_id: str, scope: Scope, *,
                 resolution: int | None = None, batch_size: int | None = None,
                 workers: int | None = None, reporter: Reporter | None = None,
                 force: bool = False, from_step: str | None = None,
                 wait: bool = False, grace_seconds: float = DEFAULT_GRACE_SECONDS
                 ) -> RunResult:
    """Run a pipeline over a scope. The same inputs give the same run id: a completed run
    is reported, not recomputed (unless ``force``); a failed or interrupted one resumes,
    keeping its completed tasks (from ``from_step`` on, everything is recomputed).

    On SIGINT/SIGTERM (or a cancel request) the run takes no new task, gives the running
    ones ``grace_seconds`` to finish, and ends as 'interrupted'."""
    reporter = reporter or Reporter()
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if grace_seconds < 0:
        raise UsageError(f"--grace {grace_seconds:g} must be 0 or more seconds")
    # Workers take most of a second to start (imports, the compiled kernel): start them
    # now, so they warm up while the project is validated and the run planned.
    guess = workers or os.cpu_count() or 1
    with make_executor(guess) as early:
        sources, pipelines, settings = project.load()
        nworkers, pipeline, res, size = _settle(pipelines, settings, pipeline_id, resolution,
                                                batch_size, workers)
        again = _Again(force, from_step, wait, grace_seconds)
        if nworkers == guess:
            return _run(project, pipeline, scope, res, size, nworkers, sources, settings,
                        early, reporter, again)
    with make_executor(nworkers) as executor:  # a pipeline or project default asked otherwise
        return _run(project, pipeline, scope, res, size, nworkers, sources, settings, executor,
                    reporter, again)


def resume_run(project: Project, run_id: str, *, from_step: str | None = None,
               workers: int | None = None, reporter: Reporter | None = None,
               grace_seconds: float = DEFAULT_GRACE_SECONDS) -> RunResult:
    """Run again what ``run_id`` was run with (pipeline, scope, resolution); its completed
    tasks are kept when its inputs are unchanged."""
    from h3pipe.engine.scope import resolve_scope

    sources, pipelines, settings = project.load()
    store = open_store(project, settings, create=False)
    try:
        rows = store.catalog.query("SELECT * FROM runs WHERE run_id = :id", {"id": run_id})
    finally:
        store.close()
    if not rows:
        raise ConfigError(f"no run '{run_id}'", hint="list runs with 'h3pipe runs list'")
    run = rows[0]
    given = json.loads(run["params"]).get("scope", {})
    if not given.get("argument"):
        raise ConfigError(f"run '{run_id}' does not record how its scope was given",
                          hint="run it again with 'h3pipe run'")
    scope = resolve_scope(**{given["kind"]: given["argument"]})
    return run_pipeline(project, run["pipeline_id"], scope, resolution=run["resolution"],
                        workers=workers, reporter=reporter, from_step=from_step,
                        grace_seconds=grace_seconds)


@dataclass(frozen=True)
class _Again:
    force: bool = False
    from_step: str | None = None
    wait: bool = False
    grace_seconds: float = DEFAULT_GRACE_SECONDS


def run_identity(pipeline: PipelineSpec, scope: Scope, resolution: int,
                 sources: dict[str, SourceSpec], rasters: dict[str, RasterInfo],
                 vectors: dict[str, VectorInfo] | None = None) -> str:
    """The run id: what the results depend on (the pipeline's content and version, the
    scope, the resolution, the sources as expanded, and the data files themselves: a tile
    rewritten in place makes a new run), never when or how fast it ran."""
    vectors = vectors or {}
    used = sorted(_used_sources(pipeline))
    data = {sid: [_fingerprint(t.path) for t in rasters[sid].tiles] for sid in used
            if sid in rasters}
    data |= {sid: [_fingerprint(v.location) if not v.is_postgis else [v.table]]
             for sid, v in vectors.items() if sid in used}
    inputs = {"pipeline": pipeline.id, "version": pipeline.version,
              "content": pipeline.content_hash, "scope": scope.key, "resolution": resolution,
              "sources": {sid: sources[sid].document for sid in used}, "data": data}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode())
    return f"{pipeline.id}-r{resolution}-{digest.hexdigest()[:12]}"


def _settle(pipelines: dict[str, PipelineSpec], settings: dict[str, Any], pipeline_id: str,
            resolution: int | None, batch_size: int | None, workers: int | None
            ) -> tuple[int, PipelineSpec, int, int]:
    """Workers, pipeline, resolution and batch size from options, pipeline and project."""
    if pipeline_id not in pipelines:
        known = sorted(pipelines)
        raise ConfigError(f"unknown pipeline '{pipeline_id}'" + suggest(pipeline_id, known)
                          + f" (pipelines: {', '.join(known) or 'none in pipelines/'})")
    pipeline = pipelines[pipeline_id]
    defaults = {**settings.get("defaults", {}), **pipeline.defaults}
    res = resolution if resolution is not None else defaults.get("resolution")
    if res is None:
        raise UsageError(f"pipeline '{pipeline_id}' sets no default resolution; pass --resolution")
    if not 0 <= res <= 15:
        raise UsageError(f"--resolution {res} is outside 0..15")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} must be at least 1")
    size = batch_size or defaults.get("batch_size") or DEFAULT_BATCH_SIZE
    nworkers = workers or defaults.get("workers") or os.cpu_count() or 1
    return nworkers, pipeline, res, size


def _run(project: Project, pipeline: PipelineSpec, scope: Scope, res: int, size: int,
         nworkers: int, sources: dict[str, SourceSpec], settings: dict[str, Any],
         executor: Executor, reporter: Reporter, again: _Again) -> RunResult:
    if again.from_step is not None and again.from_step not in {s.id for s in pipeline.steps}:
        raise UsageError(f"--from-step '{again.from_step}' is not a step of pipeline "
                         f"'{pipeline.id}'" + suggest(again.from_step,
                                                      [s.id for s in pipeline.steps]))
    rasters: dict[str, RasterInfo] = {}
    vectors: dict[str, VectorInfo] = {}
    used_items: list[dict[str, str]] = []
    for source_id in _used_sources(pipeline):
        source = sources[source_id]
        if source.kind == "vector":
            vectors[source_id] = _vector(source, project)
            continue
        rasters[source_id], items = _raster(source, project, scope)
        used_items += [{"source_id": source_id, "item_id": i.id, "href": i.href} for i in items]
    run_id = run_identity(pipeline, scope, res, sources, rasters, vectors)
    store = open_store(project, settings)
    try:
        row = wait_or_refuse(store, run_id, wait=again.wait, on_wait=reporter.message)
    except BaseException:
        store.close()
        raise
    if row is not None and row["status"] == "completed" and not again.force \
            and again.from_step is None:
        store.close()
        return RunResult(run_id, pipeline.id, pipeline.dataset, scope.label, res,
                         row["cells"] or 0, row["cells"] or 0, 0.0, store.location, "already")
    # Batches: at most max_size cells or rows, fewer when that keeps every worker busy.
    max_size, planned_workers = size, nworkers
    resuming = row is not None and not again.force
    if row is not None and resuming:
        # The batches of a resumed run must be the ones it started with.
        before = json.loads(row["params"])
        size = before.get("batch_size", size)
        max_size = before.get("max_batch_size", size)
        planned_workers = before.get("workers", nworkers)
    cells = scope_cells(scope, res)
    if not resuming:
        size = balanced_batch_size(len(cells), size, nworkers)
    stages = StepGraph(pipeline.steps).stages()

    params = {"batch_size": size, "max_batch_size": max_size, "workers": planned_workers,
              "scope": scope.to_json()}
    started = time.perf_counter()
    state = "completed"
    claim(store, run_id, row, {
        "run_id": run_id, "pipeline_id": pipeline.id, "pipeline_version": pipeline.version,
        "pipeline_hash": pipeline.content_hash, "dataset": pipeline.dataset,
        "scope_key": scope.key, "scope_label": scope.label, "resolution": res,
        "params": json.dumps(params), "cells": len(cells), "created_at": now()})
    if row is not None:
        state = "completed" if again.force else "resumed"
        _forget(store, run_id, stages, again)
    store.catalog.insert_many("run_items", [{"run_id": run_id, **i} for i in used_items],
                              keep_existing=True)
    store.catalog.insert_many("steps", [
        {"run_id": run_id, "step_id": sid, "stage": n, "operation": pipeline.step(sid).operation,
         "status": "pending"}
        for n, stage in enumerate(stages, 1) for sid in stage
    ], keep_existing=True)
    with store.catalog.transaction() as tx:
        tx.execute("INSERT INTO pipelines (id, hash, version, document, file, first_run) "
                   "VALUES (:id, :hash, :v, :doc, :file, :run) ON CONFLICT (id, hash) "
                   "DO NOTHING", {"id": pipeline.id, "hash": pipeline.content_hash,
                                  "v": pipeline.version, "file": pipeline.file, "run": run_id,
                                  "doc": json.dumps(pipeline.document, default=str)})
    # Recorded before anything is written, so a run killed mid-way leaves nothing untracked.
    store.catalog.insert_many("intermediates", [
        {"run_id": run_id, "step_id": s.id,
         "location": store.intermediate_location(run_id, s.id, s.storage),
         "policy": s.cleanup["policy"], "ttl_hours": s.cleanup.get("ttl_hours"),
         "created_at": now()} for s in pipeline.steps], keep_existing=True)
    with store.catalog.transaction() as tx:
        tx.execute("UPDATE intermediates SET dropped_at = NULL WHERE run_id = :id",
                   {"id": run_id})
    store.catalog.event(run_id, "run", run_id, "running" if state == "completed" else "resumed",
                        f"{scope.label}, resolution {res}, {len(cells)} cells")
    reporter.run_started(run_id, pipeline, scope, res, len(cells), stages)
    beat = Heartbeat(store, run_id).start()
    stop = StopRequest(again.grace_seconds)
    try:
        with graceful(stop):
            planner = Planner(run_id, cells, res, size, rasters, vectors, store,
                              row_batch=lambda n: balanced_batch_size(n, max_size,
                                                                      planned_workers))
            outputs = planner.outputs
            for n, stage in enumerate(stages, 1):
                stop.check()
                steps = [pipeline.step(sid) for sid in stage]
                batches = [b for step in steps for b in planner.batches(step)]
                retry = {s.id: Retry(
                    s.retries if s.retries is not None else pipeline.defaults.get("retries", 2),
                    s.retry_backoff if s.retry_backoff is not None
                    else pipeline.defaults.get("retry_backoff", 1.0)) for s in steps}
                _run_stage(store, run_id, n, steps, batches, executor, reporter, outputs,
                           retry, stop)
            stop.check()
            for step in pipeline.steps:
                if step.output == "h3_stats" and not outputs.get(step.id):
                    reporter.message(f"step '{step.id}' has no rows in {scope.label}; "
                                     "its dataset is empty there")
                    outputs[step.id] = {1: store.write_task_output(
                        run_id, step.id, 1, _no_rows(step), step.storage)}
            # Every published step's columns, joined on h3_index into one result.
            rows = store.publish(
                run_id=run_id, dataset=pipeline.dataset, theme=pipeline.theme,
                resolution=res, scope_key=scope.key, scope_label=scope.label,
                step_outputs=[([outputs[s.id][k] for k in sorted(outputs[s.id])],
                               get_operation(s.operation).output_columns(s.params))
                              for s in pipeline.steps if s.output == "h3_stats"])
    except BaseException as exc:
        beat.stop()
        _record_end(store, run_id, exc)
        release(store, run_id, succeeded=False)
        store.close()
        if isinstance(exc, H3PipeError) and not isinstance(exc, RunFailed):
            raise RunFailed(f"run {run_id} failed: {exc}", run_id=run_id,
                            hint=f"see 'h3pipe runs show {run_id}'") from exc
        raise
    beat.stop()
    faults.point("published")
    store.catalog.update("runs", {"run_id": run_id}, status="completed", finished_at=now())
    store.catalog.event(run_id, "run", run_id, "completed", f"{rows} rows published")
    release(store, run_id, succeeded=True)
    store.close()
    return RunResult(run_id, pipeline.id, pipeline.dataset, scope.label, res, len(cells), rows,
                     time.perf_counter() - started, store.location, state)


_STOPPED = {KeyboardInterrupt: "interrupted (SIGINT)", Terminated: "interrupted (SIGTERM)",
            Cancelled: "interrupted (cancelled)"}


def _record_end(store: Any, run_id: str, exc: BaseException) -> None:
    """Record how a run that did not complete ended: 'interrupted' when it was stopped
    (its running steps too), 'failed' otherwise."""
    reason = next((text for kind, text in _STOPPED.items() if isinstance(exc, kind)), None)
    status = "interrupted" if reason else "failed"
    reason = reason or str(exc)
    with store.catalog.transaction() as tx:
        left = tx.one("SELECT count(*) AS n FROM tasks WHERE run_id = :id AND "
                      "status != 'completed'", {"id": run_id})
        tx.execute("UPDATE steps SET status = 'interrupted', finished_at = :t WHERE "
                   "run_id = :id AND status = 'running'", {"id": run_id, "t": now()})
    if status == "interrupted" and left:
        reason += f"; {left['n']} task(s) left for the resume"
    store.catalog.update("runs", {"run_id": run_id}, status=status, finished_at=now(),
                         error=reason)
    store.catalog.event(run_id, "run", run_id, status, reason)


def _fingerprint(path: str) -> list[Any]:
    """A tile as the run saw it: a local file by size and modification time, a URL by
    itself (its content is the server's business)."""
    try:
        st = os.stat(path)
    except OSError:
        return [path]
    return [path, st.st_size, st.st_mtime_ns]


def _forget(store: Any, run_id: str, stages: list[list[str]], again: _Again) -> None:
    """Before running again: with force, forget every task; from a step, that step's and
    every later stage's; otherwise only the tasks that did not complete."""
    first = 0
    if again.from_step is not None:
        first = next(n for n, stage in enumerate(stages) if again.from_step in stage)
    with store.catalog.transaction() as tx:
        if again.force:
            tx.execute("DELETE FROM tasks WHERE run_id = :id", {"id": run_id})
        else:
            tx.execute("DELETE FROM tasks WHERE run_id = :id AND status != 'completed'",
                       {"id": run_id})
            for stage in stages[first:] if again.from_step is not None else []:
                for sid in stage:
                    tx.execute("DELETE FROM tasks WHERE run_id = :id AND step_id = :s",
                               {"id": run_id, "s": sid})
        tx.execute("UPDATE steps SET status = 'pending', error = NULL, finished_at = NULL "
                   "WHERE run_id = :id", {"id": run_id})


def balanced_batch_size(cells: int, size: int, workers: int) -> int:
    """``size`` is a maximum: with few cells, split finer so every worker gets several batches."""
    if workers <= 1:
        return size
    return max(1, min(size, -(-cells // (workers * 4))))


def _raster(source: SourceSpec, project: Project, scope: Scope
            ) -> tuple[RasterInfo, list[ItemRef]]:
    """The source's grid over the scope, and the STAC items it came from (if any)."""
    items: list[ItemRef] = []
    with _named_by(source):
        if source.stac is not None:
            info, items = describe_stac(source.id, source.stac, scope.geometry.bounds,
                                        project.root, band=source.band, nodata=source.nodata,
                                        nodata_override=source.nodata_override)
        else:
            info = describe_raster(source.id, source.location, project.root,
                                   band=source.band, nodata=source.nodata,
                                   nodata_override=source.nodata_override)
    minx, miny, maxx, maxy = _bounds_wgs84(info)
    sminx, sminy, smaxx, smaxy = scope.geometry.bounds
    if maxx <= sminx or minx >= smaxx or maxy <= sminy or miny >= smaxy:
        raise SourceError(
            f"source '{source.id}' (bounds {minx:.4f},{miny:.4f},{maxx:.4f},{maxy:.4f}) does not "
            f"overlap scope {scope.label} ({sminx:.4f},{sminy:.4f},{smaxx:.4f},{smaxy:.4f})",
            hint="choose a scope inside the raster, or check the source's path",
        )
    return info, items


def _bounds_wgs84(info: RasterInfo) -> tuple[float, float, float, float]:
    if info.crs_is_wgs84:
        return info.bounds
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_wkt(info.crs_wkt), CRS.from_epsg(4326), always_xy=True)
    return tr.transform_bounds(*info.bounds, densify_pts=21)


def _no_rows(step: StepSpec) -> Any:
    """An empty output of a published step (its input had no rows in the scope)."""
    import pyarrow as pa

    columns = get_operation(step.operation).output_columns(step.params)
    return pa.table({"h3_index": pa.array([], pa.string()),
                     **{c: pa.array([], pa.float64()) for c in columns}})


def _used_sources(pipeline: PipelineSpec) -> list[str]:
    """Every source a pipeline reads: its steps' sources and vector inputs."""
    named = [s.source for s in pipeline.steps if s.source]
    named += [s.input for s in pipeline.steps if s.input != "cells" and not s.input_step]
    return list(dict.fromkeys(named))


def _vector(source: SourceSpec, project: Project) -> VectorInfo:
    with _named_by(source):
        return vector_info(source.id, source.location, project.root, layer=source.layer,
                           table=source.table, id_field=source.id_field,
                           attributes=source.attributes)


@contextmanager
def _named_by(source: SourceSpec) -> Iterator[None]:
    """A source that cannot be opened: say which file defines it."""
    try:
        yield
    except SourceError as exc:
        raise SourceError(f"{exc.message} (defined in {source.file})", hint=exc.hint) from exc


def _run_stage(store: Any, run_id: str, number: int, steps: list[StepSpec],
               batches: list[Batch], executor: Executor, reporter: Reporter,
               outputs: dict[str, dict[int, str]], retry: dict[str, Retry],
               stop: StopRequest) -> None:
    cat = store.catalog
    # A resumed run keeps the tasks it completed, when their outputs are still there.
    completed = cat.query("SELECT step_id, task_no, output_path, rows_out FROM tasks WHERE "
                          "run_id = :id AND status = 'completed'", {"id": run_id})
    kept = {(t["step_id"], t["task_no"]): t["output_path"] for t in completed
            if store.output_exists(t["output_path"])}
    with cat.transaction() as tx:
        for t in completed:  # completed once, but its output has gone since: do it again
            if (t["step_id"], t["task_no"]) not in kept:
                tx.execute("DELETE FROM tasks WHERE run_id = :id AND step_id = :s AND "
                           "task_no = :n", {"id": run_id, "s": t["step_id"], "n": t["task_no"]})
    for (step_id, task_no), ref in sorted(kept.items()):
        outputs.setdefault(step_id, {})[task_no] = ref
    todo = [b for b in batches if (b.step_id, b.number) not in kept]
    cat.insert_many("tasks", [
        {"run_id": run_id, "step_id": b.step_id, "task_no": b.number, "status": "pending",
         "rows_in": b.size} for b in todo
    ], keep_existing=True)
    for step in steps:
        n = sum(1 for b in batches if b.step_id == step.id)
        cat.update("steps", {"run_id": run_id, "step_id": step.id}, status="running",
                   started_at=now(), tasks_total=n,
                   rows_in=sum(b.size for b in batches if b.step_id == step.id))
    cat.event(run_id, "stage", str(number), "running",
              f"{', '.join(s.id for s in steps)}: {len(batches)} task(s)")
    reporter.stage_started(number, [s.id for s in steps], len(todo),
                           sum(b.size for b in todo),
                           unit="cells" if all(s.input == "cells" for s in steps) else "rows")
    done: dict[str, int] = {s.id: sum(1 for k in kept if k[0] == s.id) for s in steps}
    storage = {s.id: s.storage for s in steps}
    rows: dict[str, int] = {s.id: sum(t["rows_out"] or 0 for t in completed
                                      if t["step_id"] == s.id
                                      and (s.id, t["task_no"]) in kept) for s in steps}
    for outcome in executor.run(todo, retry, stop):
        if isinstance(outcome, Stopping):
            text = (f"stop requested ({stop.reason}): no new tasks; waiting up to "
                    f"{stop.grace_seconds:g} s for {outcome.running} running task(s)")
            cat.event(run_id, "run", run_id, "stopping", text)
            reporter.message(text + ("; press Ctrl-C again to stop now"
                                     if stop.reason == "SIGINT" else ""))
            continue
        if not stop.requested and cat.query(
                "SELECT cancel_requested_at FROM runs WHERE run_id = :id",
                {"id": run_id})[0]["cancel_requested_at"]:
            stop.ask("cancel")
        b = outcome.batch
        key = {"run_id": run_id, "step_id": b.step_id, "task_no": b.number}
        if outcome.retrying:
            cat.update("tasks", key, attempts=outcome.attempt + 1, error=str(outcome.error))
            cat.event(run_id, "task", f"{b.step_id}#{b.number}", "retrying",
                      f"attempt {outcome.attempt} failed: {outcome.error}")
            reporter.message(f"task {b.step_id}#{b.number}: attempt {outcome.attempt} failed "
                             f"({outcome.error}); retrying")
            continue
        if outcome.error is not None:
            cat.update("tasks", key, status="failed", finished_at=now(),
                       seconds=outcome.seconds, error=str(outcome.error))
            cat.update("steps", {"run_id": run_id, "step_id": b.step_id}, status="failed",
                       finished_at=now(), error=str(outcome.error))
            cat.event(run_id, "task", f"{b.step_id}#{b.number}", "failed", str(outcome.error))
            cat.event(run_id, "step", b.step_id, "failed", str(outcome.error))
            raise outcome.error
        table = outcome.table
        assert table is not None  # an outcome carries either a table or an error
        ref = store.write_task_output(run_id, b.step_id, b.number, table,
                                      storage[b.step_id])
        faults.point("task-output-written")
        outputs.setdefault(b.step_id, {})[b.number] = ref
        cat.update("tasks", key, status="completed", finished_at=now(), seconds=outcome.seconds,
                   rows_out=table.num_rows, output_path=ref,
                   tile_seconds=json.dumps(outcome.tile_seconds) if outcome.tile_seconds
                   else None)
        done[b.step_id] += 1
        rows[b.step_id] += table.num_rows
        cat.update("steps", {"run_id": run_id, "step_id": b.step_id}, tasks_done=done[b.step_id],
                   rows_out=rows[b.step_id])
        cat.event(run_id, "task", f"{b.step_id}#{b.number}", "completed",
                  f"{table.num_rows} rows in {outcome.seconds:.2f} s")
        faults.point("task-recorded")
        reporter.task_finished(b.step_id, b.size)
    for step in steps:
        cat.update("steps", {"run_id": run_id, "step_id": step.id}, status="completed",
                   finished_at=now())
        cat.event(run_id, "step", step.id, "completed", f"{rows[step.id]} rows")
    cat.event(run_id, "stage", str(number), "completed")
    faults.point("stage-completed")
    reporter.stage_finished(number)
