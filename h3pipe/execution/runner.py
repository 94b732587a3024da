"""Execute a prepared run: :func:`run_pipeline`, :func:`resume_run` and :func:`execute`.

The runner claims the run, records it before any work starts, runs its stages one barrier
at a time, records every step and task as it changes state, and publishes only after every
stage has finished, so a failed run never replaces good results with partial ones. What
the run *is* was decided by :func:`h3pipe.planning.prepare.prepare`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h3pipe import faults, storage
from h3pipe.config.project import ProjectConfig
from h3pipe.errors import (
    Cancelled,
    ConfigError,
    H3PipeError,
    RunFailed,
    StoreError,
    StoreFull,
    StoreUnavailable,
    Terminated,
)
from h3pipe.execution.balance import check_balance, checked_steps
from h3pipe.execution.cleanup import release
from h3pipe.execution.executors import Executor, make_executor
from h3pipe.execution.lock import Heartbeat, claim, wait_or_refuse
from h3pipe.execution.reporting import Reporter
from h3pipe.execution.stage import StageRun
from h3pipe.execution.stopping import StopRequest, graceful
from h3pipe.forecast.costs import peak_rss_mb, settle_workers, step_pixels
from h3pipe.forecast.outlook import outlook
from h3pipe.lineage import Lineage, LineageSettings
from h3pipe.planning.batching import Batcher
from h3pipe.planning.coverage import Coverage
from h3pipe.planning.prepare import RunOptions, RunPlan, as_recorded, prepare
from h3pipe.planning.pyramid import label
from h3pipe.planning.scope import Scope, ScopeRef
from h3pipe.spec import DEFAULT_GRACE_SECONDS, StepSpec
from h3pipe.storage import retry
from h3pipe.storage.base import Store
from h3pipe.storage.catalog import now
from h3pipe.storage.records import RunRecord
from h3pipe.storage.runlog import RunLog


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
    # What its rasters cover of the scope; ``coverage.check()`` raises for a strict run
    # with too many null cells. None for a run recorded before coverage was.
    coverage: Coverage | None = None
    # A run of several resolutions: all of them, coarsest first (``resolution`` is the
    # finest; ``cells`` and ``rows`` count every resolution's). Empty for one resolution.
    resolutions: tuple[int, ...] = ()


def run_pipeline(project: ProjectConfig, pipeline_id: str, scope: Scope,
                 options: RunOptions | None = None, reporter: Reporter | None = None
                 ) -> RunResult:
    """Run a pipeline over a scope. The same inputs give the same run id: a completed run
    is reported, not recomputed (unless ``force``); a failed or interrupted one resumes,
    keeping its completed tasks (from ``from_step`` on, everything is recomputed).

    On SIGINT/SIGTERM (or a cancel request) the run takes no new task, gives the running
    ones ``grace_seconds`` to finish, and ends as 'interrupted'."""
    options = options or RunOptions()
    options.check()
    reporter = reporter or Reporter()
    # Asked for a pool (--workers N): start it now, so it warms up (imports, the compiled
    # kernel) while the project is validated and the run prepared.
    asked = options.workers or 1
    early = make_executor(asked) if asked > 1 else None
    with early or contextlib.nullcontext():
        plan = settle_workers(prepare(project, pipeline_id, scope, options))
        lineage = Lineage.of(project.settings, project.root, reporter.message)
        if early is not None and early.workers == plan.workers:
            return execute(plan, project.root, early, reporter, lineage)
    return run_prepared(project, plan, reporter, lineage)


def run_prepared(project: ProjectConfig, plan: RunPlan, reporter: Reporter | None = None,
                 lineage: Lineage | None = None) -> RunResult:
    """Execute a plan made by :func:`prepare` (and :func:`settle_workers`) elsewhere: the
    server decides a run's id in its own process and runs the plan on a warm worker."""
    reporter = reporter or Reporter()
    lineage = lineage or Lineage.of(project.settings, project.root, reporter.message)
    used = {s.operation for s in plan.pipeline.steps}
    return execute(plan, project.root, lambda: make_executor(plan.workers, warm=used), reporter,
                   lineage)


def resume_run(project: ProjectConfig, run_id: str, *, from_step: str | None = None,
               workers: int | None = None, reporter: Reporter | None = None,
               grace_seconds: float = DEFAULT_GRACE_SECONDS) -> RunResult:
    """Run again what ``run_id`` was run with (pipeline, scope, resolution); its completed
    tasks are kept when its inputs are unchanged."""
    pipeline_id, scope, resolution, levels = recorded_run(project, run_id)
    return run_pipeline(project, pipeline_id, scope,
                        RunOptions(resolution=resolution, resolutions=levels, workers=workers,
                                   from_step=from_step, grace_seconds=grace_seconds), reporter)


def recorded_run(project: ProjectConfig, run_id: str) -> tuple[str, Scope, int, tuple[int, ...]]:
    """The pipeline, scope (resolved again from how it was given) and resolution of a
    recorded run, and all its resolutions when it computed several (else empty)."""
    with project.open_store() as store:
        run = RunLog(store.catalog).run(run_id)
    if run is None:
        raise ConfigError(f"no run '{run_id}'", hint="list runs with 'h3pipe runs list'")
    scope = ScopeRef.recorded(run.params.raw, run_id).resolve()
    levels = tuple(run.params.resolutions)
    return run["pipeline_id"], scope, run["resolution"], levels


def execute(plan: RunPlan, root: Path, executor: Executor | Callable[[], Executor],
            reporter: Reporter, lineage: Lineage | None = None) -> RunResult:
    """Claim the plan's run in its store, run it and publish; or report it done.
    ``executor`` may be a function that makes one (and this closes it): it is called only
    once the run is claimed, so a run reported done, or held elsewhere, starts no worker.
    ``lineage`` hears of the claimed run's start and end (without it, the end's run-results
    file alone)."""
    with storage.open_store(plan.store_location, root) as store:
        log = RunLog(store.catalog)
        row = wait_or_refuse(log, plan.run_id, wait=plan.options.wait, on_wait=reporter.message)
        if plan.options.reports_done(row):
            assert row is not None  # reported done: there is a row
            return _result(plan, store, row["cells"] or 0, 0.0, "already",
                           recorded_coverage(plan, row))
        plan = as_recorded(plan, store, row)  # the batches it started with
        claim_run(log, plan, row, store)
        watch = lineage or Lineage(LineageSettings(), root, reporter.message)
        with (watch.watching(plan, store),
              executor() if callable(executor) else contextlib.nullcontext(executor) as ex):
            return _Run(plan, store, log, ex, reporter, root).go(row)


def claim_run(log: RunLog, plan: RunPlan, row: dict[str, Any] | None, store: Store
              ) -> None:
    """Become the run's holder, forget what is to be recomputed, and record what the run
    is made of before anything is written."""
    p = plan.pipeline
    claim(log, plan.run_id, row, {
        "run_id": plan.run_id, "pipeline_id": p.id, "pipeline_version": p.version,
        "pipeline_hash": p.content_hash, "dataset": p.dataset, "scope_key": plan.scope.key,
        "scope_label": plan.scope.label, "resolution": plan.resolution,
        "params": json.dumps(plan.params()), "cells": plan.cell_count, "created_at": now()})
    if row is not None:
        log.forget(plan.run_id, everything=plan.options.force, steps=plan.redo_steps())
    log.record_setup(
        plan.run_id,
        steps=[{"step_id": sid, "stage": n, "operation": p.step(sid).operation,
                "status": "pending"} for n, stage in enumerate(plan.stages, 1) for sid in stage],
        items=[{"source_id": i.source_id, "item_id": i.item_id, "href": i.href}
               for i in plan.items],
        pipeline={"id": p.id, "hash": p.content_hash, "version": p.version, "file": p.file,
                  "document": json.dumps(p.document, default=str)},
        intermediates=[{"step_id": s.id, "location": store.intermediate_location(
            plan.run_id, s.id, s.storage), "policy": s.cleanup["policy"],
            "ttl_hours": s.cleanup.get("ttl_hours"), "created_at": now()} for s in p.steps])


def _result(plan: RunPlan, store: Store, rows: int, seconds: float, state: str,
            coverage: Coverage | None) -> RunResult:
    return RunResult(plan.run_id, plan.pipeline.id, plan.pipeline.dataset, plan.scope.label,
                     plan.resolution, plan.cell_count, rows, seconds, store.location, state,
                     coverage, tuple(plan.levels) if plan.coarser else ())


def recorded_coverage(plan: RunPlan, row: RunRecord) -> Coverage | None:
    """What the run recorded in ``row`` found, judged by this plan's threshold (a run
    reported done is held to the options given now)."""
    found = Coverage.recorded(row.params.raw)
    return found.judged_by(plan.max_null_share, plan.options.strict) if found else None


class _Run:
    """One claimed run: its stages, its publication and how it ended."""

    def __init__(self, plan: RunPlan, store: Store, log: RunLog, executor: Executor,
                 reporter: Reporter, root: Path) -> None:
        self.plan, self.store, self.log = plan, store, log
        self.executor, self.reporter = executor, reporter
        self.planner = Batcher.of(plan, store, root)

    def go(self, row: dict[str, Any] | None) -> RunResult:
        """Run the claimed plan; ``row`` is the run's row as it was before the claim."""
        plan, log = self.plan, self.log
        state = "resumed" if row is not None and not plan.options.force else "completed"
        started = time.perf_counter()
        log.event(plan.run_id, "run", plan.run_id, "running" if state == "completed"
                  else "resumed", f"{plan.scope.label}, resolution "
                  f"{label(plan.levels)}, {plan.cell_count} cells")
        self.reporter.run_started(plan, outlook(plan, self.planner, self.store, row))
        beat = Heartbeat(log, plan.run_id).start()
        stop = StopRequest(plan.options.grace_seconds)
        try:
            with graceful(stop):
                rows = self._stages_and_publish(stop)
        except BaseException as exc:
            beat.stop()
            if isinstance(exc, StoreUnavailable):
                raise self._lost_store(exc) from exc
            if isinstance(exc, StoreFull):
                raise self._out_of_space(exc) from exc
            self._record_end(exc)
            release(self.store, plan.run_id, succeeded=False)
            if isinstance(exc, H3PipeError) and not isinstance(exc, RunFailed):
                raise RunFailed(f"run {plan.run_id} failed: {exc}", run_id=plan.run_id,
                                hint=f"see 'h3pipe runs show {plan.run_id}'") from exc
            raise
        beat.stop()
        seconds = time.perf_counter() - started
        coverage = complete_run(plan, self.store, log, rows, seconds)
        return _result(plan, self.store, rows, seconds, state, coverage)

    def _stages_and_publish(self, stop: StopRequest) -> int:
        plan, outputs = self.plan, self.planner.outputs
        for n, stage in enumerate(plan.stages, 1):
            stop.check()
            steps = [plan.pipeline.step(sid) for sid in stage]
            batches = [b for s in steps for b in self.planner.batches(s)]
            StageRun(plan.run_id, n, steps, self.store, self.log, self.reporter, outputs,
                     self.planner.sizes).run(self.executor, batches,
                                             {s.id: plan.retry(s) for s in steps}, stop)
        stop.check()
        check_and_record_balance(plan, self.store, self.log, outputs)
        stop.check()
        return publish_outputs(plan, self.store, outputs, self.reporter.message)

    def _lost_store(self, exc: StoreUnavailable) -> StoreUnavailable:
        """The store stayed out of reach past the retry bound: the run is recorded failed
        if the store is back (one try), and the error says how to resume it."""
        run_id = self.plan.run_id
        try:
            with retry.once():
                self._record_end(exc)
        except StoreError:
            pass  # still down: the row says running, with a pid every command finds gone
        return StoreUnavailable(f"run {run_id} stopped: {exc.message}", where=exc.where,
                                hint=f"once the database is up, 'h3pipe resume {run_id}' "
                                "continues it (its completed tasks are kept)")

    def _out_of_space(self, exc: StoreFull) -> StoreFull:
        """The run's end recorded if there is room for that (a full disk may leave none:
        then it stays 'running' with its pid gone, which the next run, 'resume' or 'clean'
        settles), and the error naming the run, keeping StoreFull's exit code."""
        run_id = self.plan.run_id
        with contextlib.suppress(StoreFull):
            self._record_end(exc)
        return StoreFull(f"run {run_id} stopped: {exc.message}",
                         hint=f"free some space there, then 'h3pipe resume {run_id}'; "
                         "'runs', 'export' and 'map' work meanwhile")

    def _record_end(self, exc: BaseException) -> None:
        """Record how a run that did not complete ended: 'interrupted' when it was stopped
        (its running steps too), 'failed' otherwise."""
        run_id = self.plan.run_id
        reason = next((text for kind, text in _STOPPED.items() if isinstance(exc, kind)), None)
        status = "interrupted" if reason else "failed"
        reason = reason or str(exc)
        left = self.log.tasks_left(run_id)
        self.log.steps_interrupted(run_id)
        if status == "interrupted" and left:
            reason += f"; {left} task(s) left for the resume"
        self.log.finish(run_id, status, reason)
        self.log.event(run_id, "run", run_id, status, reason)


def check_and_record_balance(plan: RunPlan, store: Store, log: RunLog,
                             outputs: dict[str, dict[int, str]]) -> None:
    """Check that extensive sums add up (see :mod:`h3pipe.execution.balance`) and record the
    figures on the run; raises before anything is published when they do not."""
    if not checked_steps(plan):
        return
    log.event(plan.run_id, "run", plan.run_id, "note", "checking conservation")
    log.add_params(plan.run_id, conservation=check_balance(plan, store, outputs))


def publish_outputs(plan: RunPlan, store: Store, outputs: dict[str, dict[int, str]],
                    say: Callable[[str], None]) -> int:
    """Every published step's columns, joined on h3_index into the scope's one result;
    ``outputs``: step id -> task number -> output reference. Returns the cells published."""
    published = [s for s in plan.pipeline.steps if s.output == "h3_stats"]
    for step in published:
        if not outputs.get(step.id):
            say(f"step '{step.id}' has no rows in {plan.scope.label}; its dataset is empty "
                "there")
            outputs[step.id] = {1: store.write_task_output(
                plan.run_id, step.id, 1, _no_rows(plan, step), step.storage)}
    refs = {s.id: [outputs[s.id][k] for k in sorted(outputs[s.id])] for s in published}
    split = split_levels(plan, store, published, refs) if plan.coarser \
        else {plan.resolution: refs}
    return sum(store.publish(
        run_id=plan.run_id, dataset=plan.pipeline.dataset, theme=plan.pipeline.theme,
        resolution=res, scope_key=plan.scope.key, scope_label=plan.scope.label,
        step_outputs=[(split[res][s.id], plan.output_columns(s)) for s in published],
        layout=plan.layout(published[0]), keep=list(plan.sweep.carried) if plan.sweep else [])
        for res in plan.levels)


# Rows of one resolution gathered from several tasks before they are written as one part:
# a part per task and resolution would cost a file (or a COPY) each.
_SPLIT_ROWS = 250_000
# Split parts are numbered past any task's number, per resolution, in the step's own
# intermediate (dropped with it).
_SPLIT_BASE = 10_000_000
# Task outputs read at a time while splitting.
_SPLIT_READ = 64


def split_levels(plan: RunPlan, store: Store, steps: list[StepSpec],
                 refs: dict[str, list[str]]) -> dict[int, dict[str, list[str]]]:
    """A run of several resolutions: each published step's task outputs (rows of every
    resolution) written again as parts of one resolution each, in task order; resolution
    -> step id -> references. Rows are told apart by their H3 index's resolution (its
    second hexadecimal digit)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[int, dict[str, list[str]]] = {r: {s.id: [] for s in steps} for r in plan.levels}
    for step in steps:
        held: dict[int, list[pa.Table]] = {r: [] for r in plan.levels}

        def flush(res: int, step: StepSpec = step, held: dict[int, list[pa.Table]] = held
                  ) -> None:
            parts = out[res][step.id]
            number = _SPLIT_BASE * (res + 1) + len(parts) + 1
            rows = pa.concat_tables(held[res]) if held[res] else _no_rows(plan, step)
            parts.append(store.write_task_output(plan.run_id, step.id, number, rows,
                                                 step.storage))
            held[res] = []

        every = refs[step.id]
        for at in range(0, len(every), _SPLIT_READ):  # a few task outputs a read
            table = store.read_outputs(every[at:at + _SPLIT_READ])
            if not table.num_rows:
                continue
            digit = pc.utf8_slice_codeunits(table["h3_index"], 1, 2)
            for res in plan.levels:
                rows = table.filter(pc.equal(digit, f"{res:x}"))
                if rows.num_rows:
                    held[res].append(rows)
                if sum(t.num_rows for t in held[res]) >= _SPLIT_ROWS:
                    flush(res)
        for res in plan.levels:
            if held[res] or not out[res][step.id]:
                flush(res)
    return out


def complete_run(plan: RunPlan, store: Store, log: RunLog, rows: int, seconds: float
                 ) -> Coverage:
    """Record a published run as completed, with what it measured and what its rasters
    covered (its tasks' null rows summed), and let go of what its steps' cleanup policies
    allow. Returns the coverage recorded."""
    faults.point("published")
    coverage = Coverage.of_plan(plan).counted(log.null_rows(plan.run_id))
    log.add_params(plan.run_id, measured=measured(plan, seconds), coverage=coverage.to_json())
    for line in coverage.warnings():
        log.event(plan.run_id, "run", plan.run_id, "warning", line)
    log.finish(plan.run_id, "completed")
    log.event(plan.run_id, "run", plan.run_id, "completed", f"{rows} rows published")
    release(store, plan.run_id, succeeded=True)
    return coverage


_STOPPED = {KeyboardInterrupt: "interrupted (SIGINT)", Terminated: "interrupted (SIGTERM)",
            Cancelled: "interrupted (cancelled)"}


def measured(plan: RunPlan, seconds: float) -> dict[str, Any]:
    """What a completed run measured, for the estimates of later plans: wall seconds,
    peak memory of its processes, and the pixels each raster step covered."""
    return {"wall_s": round(seconds, 3), "peak_rss_mb": peak_rss_mb(),
            "pixels": step_pixels(plan)}


def _no_rows(plan: RunPlan, step: StepSpec) -> Any:
    """An empty output of a published step (its input had no rows in the scope)."""
    import pyarrow as pa

    keys = plan.sweep.keys if plan.sweep else ()
    return pa.table({"h3_index": pa.array([], pa.string()),
                     **{c: pa.array([], pa.string() if c in keys else pa.float64())
                        for c in plan.output_columns(step)}})


__all__ = ["RunResult", "check_and_record_balance", "claim_run",
           "complete_run", "execute",
           "publish_outputs",
           "recorded_coverage", "recorded_run", "resume_run", "run_pipeline"]
