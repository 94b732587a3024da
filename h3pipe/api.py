"""The documented Python API: :class:`Project`. Every ``h3pipe`` command is a call here;
a notebook or an orchestrator makes the same calls::

    import h3pipe

    project = h3pipe.Project("path/to/project")
    result = project.run("elevation_terrain", "RWA", resolution=6)
    table = project.dataset("elevation_copdem30", scope="RWA", resolution=6)

Scopes are :class:`ScopeRef` values or their text (``"RWA"``, ``"iso3:RWA"``,
``"bbox:28.8,-2.9,30.9,-1.0"``, ``"aoi:area.geojson"``). Errors are
:class:`~h3pipe.errors.H3PipeError` subclasses, each with the exit code the CLI gives it.
The types the calls return are exported here too, so callers need no other module.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from h3pipe import extras
from h3pipe.config import schemas
from h3pipe.config.project import ProjectConfig as _Config
from h3pipe.config.project import Report
from h3pipe.errors import UsageError
from h3pipe.planning import many, pyramid
from h3pipe.planning.many import worst
from h3pipe.planning.scope import ScopeRef
from h3pipe.resolutions import parse as parse_resolutions
from h3pipe.results import runs, sources
from h3pipe.storage.records import Row, RunRecord

# Start-up: a light command (runs list, validate, sources, db status) needs the project and
# the store only; what runs, plans, maps, queues and inspects loads when first called
# (rasterio, exactextract, the kernel, Celery, matplotlib, GDAL's drivers), and the types
# of their results when first asked for (``h3pipe.api.RunResult``).
_LAZY = {
    "Coverage": "h3pipe.planning.coverage", "Forecast": "h3pipe.forecast.plan",
    "Outlook": "h3pipe.forecast.outlook", "Reporter": "h3pipe.execution.reporting",
    "RunOptions": "h3pipe.planning.prepare", "RunPlan": "h3pipe.planning.prepare",
    "RunResult": "h3pipe.execution.runner", "Submitted": "h3pipe.queue.submit",
    "Inspection": "h3pipe.authoring.inspect", "QueueSettings": "h3pipe.queue.settings",
}

if TYPE_CHECKING:
    import pyarrow as pa

    from h3pipe.authoring.inspect import Inspection  # start-up: see _LAZY
    from h3pipe.execution.cleanup import Removal  # start-up: see _LAZY
    from h3pipe.execution.reporting import Reporter  # start-up: see _LAZY
    from h3pipe.execution.runner import RunResult  # start-up: see _LAZY
    from h3pipe.forecast.outlook import Outlook  # start-up: see _LAZY
    from h3pipe.forecast.plan import Forecast  # start-up: see _LAZY
    from h3pipe.planning.coverage import Coverage  # start-up: see _LAZY
    from h3pipe.planning.prepare import RunOptions, RunPlan  # start-up: see _LAZY
    from h3pipe.queue.settings import QueueSettings  # start-up: see _LAZY
    from h3pipe.queue.submit import Submitted  # start-up: see _LAZY


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'h3pipe.api' has no attribute {name!r}")


Scope = ScopeRef | str


def scope_of(scope: Scope) -> ScopeRef:
    """A :class:`ScopeRef` from itself or its text."""
    return scope if isinstance(scope, ScopeRef) else ScopeRef.parse(scope)


def scope_given(*, iso3: str | None = None, bbox: str | None = None,
                aoi: Path | str | None = None, run: str | None = None) -> ScopeRef | None:
    """The scope of the options that read results (``export``, ``map``): at most one of
    them, or of them and ``--run``; None when none is given."""
    given = [n for n, v in (("--iso3", iso3), ("--bbox", bbox), ("--aoi", aoi),
                            ("--run", run)) if v]
    if len(given) > 1:
        raise UsageError(f"give at most one of --iso3, --bbox, --aoi or --run "
                         f"(got {', '.join(given)})")
    return ScopeRef.given(iso3=iso3, bbox=bbox, aoi=aoi) if given and not run else None


class Project(_Config):
    """An h3pipe project (a folder with ``sources/``, ``pipelines/`` and an optional
    ``h3pipe.yaml``) and its store: ``store`` overrides where the store is (a folder or a
    ``postgresql://`` URL; default: $H3PIPE_STORE, ``store:`` of h3pipe.yaml, ``.h3pipe``).
    Without ``path``: $H3PIPE_PROJECT, else the current folder.
    """

    def __init__(self, path: Path | str | None = None, store: str | None = None) -> None:
        found = _Config.locate(path, store)
        super().__init__(found.root, store)

    # -- checking and forecasting ------------------------------------------------------

    def validate(self, paths: list[Path] | None = None) -> Report:
        """Every problem of every file (or of ``paths``) in one report."""
        return self.check(paths)

    def plan(self, pipeline: str, scope: Scope, resolution: int | None = None,
             **options: Any) -> Forecast:
        """What :meth:`run` would do and cost, without writing anything. ``options``:
        those of :class:`RunOptions` (batch_size, workers, force, from_step...)."""
        from h3pipe.forecast.plan import forecast_run  # start-up: see _LAZY
        from h3pipe.planning.prepare import RunOptions  # start-up: see _LAZY

        return forecast_run(self, pipeline, scope_of(scope).resolve(),
                            RunOptions(resolution=resolution, **options))

    def plans(self, pipeline: str, scope: Scope, resolution: str | None = None,
              **options: Any) -> list[Forecast]:
        """:meth:`plan` for ``-r 4-9`` as :meth:`run` would run it: one plan for
        resolutions computed in one run, else one plan per resolution."""
        levels = self.resolutions(pipeline, resolution)
        if len(levels) > 1 and self.why_unshared(pipeline) is None:
            return [self.plan(pipeline, scope, None, resolutions=tuple(
                r for r in levels if r is not None), **options)]
        return [self.plan(pipeline, scope, res, **options) for res in levels]

    def resolutions(self, pipeline: str, given: str | None = None) -> list[int | None]:
        """``4-9``, ``4,6,8`` or one level; without one, the pipeline's defaults."""
        return pyramid.of_pipeline(self, pipeline, given)

    def why_unshared(self, pipeline: str) -> str | None:
        """Why ``pipeline``'s resolutions cannot be one run reading every pixel once
        (``run(..., resolutions=(5, 6, 7))``); None when they can."""
        return pyramid.why_unshared(self, pipeline)

    def countries(self, given: str) -> list[str]:
        """``RWA,BDI`` or ``@group`` (a group of h3pipe.yaml's ``groups:``) as codes."""
        return many.countries(given, self.read_settings())

    # -- running -----------------------------------------------------------------------

    def run(self, pipeline: str, scope: Scope, resolution: int | None = None, *,
            queue: str | None = None, detach: bool = False,
            reporter: Reporter | None = None, **options: Any) -> RunResult | Submitted:
        """Run ``pipeline`` over ``scope`` and publish its dataset; a completed run with the
        same inputs is reported, not recomputed (``force=True`` recomputes). With a
        ``queue`` (or $H3PIPE_QUEUE, or ``queue:`` of h3pipe.yaml) the batches go to
        ``h3pipe worker`` processes; ``detach`` returns once submitted.
        ``resolutions=(5, 6, 7, 8, 9)`` computes several resolutions in one run that reads
        every pixel once, each published as its own (see :meth:`why_unshared`)."""
        from h3pipe.execution.reporting import Reporter  # start-up: see _LAZY
        from h3pipe.execution.runner import run_pipeline  # start-up: see _LAZY
        from h3pipe.planning.prepare import RunOptions  # start-up: see _LAZY
        from h3pipe.queue.submit import run_queued  # start-up: see _LAZY

        opts = RunOptions(resolution=resolution, **options)
        settings = self.queue_settings(queue)
        resolved = scope_of(scope).resolve()
        if settings is None:
            return run_pipeline(self, pipeline, resolved, opts, reporter)
        if len(opts.resolutions) > 1:
            raise UsageError("a queue runs one resolution a run",
                             hint="run each resolution on its own, or without the queue")
        return run_queued(self, pipeline, resolved, opts, settings, reporter or Reporter(),
                          detach=detach)

    def prepare(self, pipeline: str, scope: Scope, resolution: int | None = None,
                **options: Any) -> RunPlan:
        """What :meth:`run` would run, decided without running: its ``run_id`` (the same
        inputs give the same id), scope, resolution, batches and workers. Cheap next to
        the run; :meth:`execute` runs it, in this process or another."""
        from h3pipe.forecast.costs import settle_workers  # start-up: see _LAZY
        from h3pipe.planning.prepare import RunOptions, prepare  # start-up: see _LAZY

        opts = RunOptions(resolution=resolution, **options)
        opts.check()
        return settle_workers(prepare(self, pipeline, scope_of(scope).resolve(), opts))

    def execute(self, plan: RunPlan, reporter: Reporter | None = None) -> RunResult:
        """Run a plan of :meth:`prepare` and publish its dataset, as :meth:`run` does."""
        from h3pipe.execution.runner import run_prepared  # start-up: see _LAZY

        return run_prepared(self, plan, reporter)

    def run_each(self, labels: Sequence[str], one: Callable[[str], str],
                 failed: Callable[[str, Exception], None]) -> list[many.Outcome]:
        """Each of several runs (countries, resolutions) in turn, on past failures."""
        return many.run_each(list(labels), one, failed)

    def resume(self, run_id: str, *, reporter: Reporter | None = None,
               **options: Any) -> RunResult:
        """Run again what ``run_id`` ran (pipeline, scope, resolution), keeping its
        completed tasks when its inputs are unchanged."""
        from h3pipe.execution.runner import resume_run  # start-up: see _LAZY

        return resume_run(self, run_id, reporter=reporter, **options)

    def cancel(self, run_id: str) -> str:
        """Ask a running run to stop taking new tasks (on this host, SIGTERM too); returns
        what was done."""
        with self.open_store() as store:
            run = runs.cancellable(store, run_id)
            run_id = run["run_id"]
            if run.get("queue"):  # only ever on the PostgreSQL store
                from h3pipe.queue.work import settle_cancel  # start-up: see _LAZY

                settle_cancel(store, run_id)  # ends it now if none of its tasks runs
                return (f"asked run {run_id} to stop; its workers take none of its tasks "
                        "any more, and the running ones finish")
        if run["host"] == socket.gethostname():
            os.kill(run["pid"], signal.SIGTERM)
            return f"asked run {run_id} to stop (SIGTERM to pid {run['pid']})"
        return (f"asked run {run_id} to stop; its process on {run['host']} stops before its "
                "next task")

    def wait(self, run_id: str, reporter: Reporter | None = None) -> Row:
        """The row of run ``run_id`` once it has ended; raises as the run would have."""
        from h3pipe.execution.reporting import Reporter  # start-up: see _LAZY
        from h3pipe.queue.submit import follow_run  # start-up: see _LAZY

        return follow_run(self, run_id, reporter or Reporter())

    def queue_settings(self, queue: str | None = None) -> QueueSettings | None:
        """Where the queue is: ``queue``, $H3PIPE_QUEUE or h3pipe.yaml; None for none."""
        from h3pipe.queue.settings import QueueSettings  # start-up: see _LAZY

        return QueueSettings.find(queue, self.read_settings())

    # -- what runs left ----------------------------------------------------------------

    def runs(self, limit: int = 20, pipeline: str | None = None) -> list[RunRecord]:
        """Run rows, newest first; ``dead`` says why one recorded as running is not."""
        return runs.list_runs(self, limit=limit, pipeline=pipeline)

    def run_record(self, run_id: str) -> Row:
        """One run ('latest' or a unique prefix): its row, steps, tasks' workers, times."""
        return runs.show_run(self, run_id)

    def run_results(self, run_id: str) -> Row:
        """A run's run-results document ('latest' or a unique prefix): its steps, rows,
        timings and checks, as the file a run writes at its end (docs/orchestrators.md),
        built from the store's record, so it can be read on any machine."""
        with self.open_store() as store:
            from h3pipe.lineage import runresults  # start-up: see _LAZY

            return runresults.build(store, runs.find_run(store.catalog, run_id).run_id)

    def dataset(self, name: str, scope: Scope | None = None, resolution: int | None = None,
                *, run: str | None = None, where: list[str] | None = None,
                layout: Literal["wide", "long"] = "wide",
                as_: Literal["arrow", "pandas", "geopandas"] = "arrow") -> Any:
        """The published rows of dataset ``name`` (one per cell, and per scenario for a
        sweep): of ``scope`` and ``resolution``, or what ``run`` published, or every
        scope. An Arrow table; ``as_="pandas"`` a DataFrame, ``"geopandas"`` a
        GeoDataFrame of cell outlines."""
        table = self.table(name, scope, resolution, run=run, where=where, layout=layout)
        if as_ == "arrow":
            return table
        extras.require("dataframes", f"dataset(..., as_={as_!r})")
        if as_ == "pandas":
            return table.to_pandas()
        return _geodataframe(table)

    def table(self, name: str, scope: Scope | None = None, resolution: int | None = None,
              *, run: str | None = None, where: list[str] | None = None,
              layout: str = "wide") -> pa.Table:
        ref = scope_of(scope) if scope is not None else None
        table, _ = runs.read_dataset(self, name, scope=ref, run_id=run, resolution=resolution,
                                     where=where, layout=layout)
        return table

    def export(self, name: str, out: Path | str, fmt: str | None = None, *,
               scope: Scope | None = None, resolution: int | None = None,
               run: str | None = None, **options: Any) -> int:
        """Write the rows :meth:`dataset` reads to ``out`` (``-``: standard output) as
        ``fmt`` (default: from the file name); returns the rows written. ``options``:
        where, layout, geometry, h3, partition_resolution (see ``h3pipe export``)."""
        fmt, _, _ = export_target(out, fmt, options.get("partition_resolution"))
        ref = scope_of(scope) if scope is not None else None
        return runs.export_dataset(self, name, out, fmt, scope=ref, run_id=run,
                                   resolution=resolution, **options)

    def migrations(self, *, upgrade: bool = False) -> tuple[str, list[str], list[str]]:
        """(store shown safely, migrations applied, pending); ``upgrade`` applies them."""
        return runs.migrations(self, upgrade=upgrade)

    # -- pictures and reports ----------------------------------------------------------

    def map(self, name: str, column: str | None, out: Path, *,
            scope: Scope | None = None, run: str | None = None,
            resolution: int | None = None, where: list[str] | None = None,
            size: tuple[int, int] = (1200, 900), style: dict[str, Any] | None = None
            ) -> tuple[str, dict[str, Any]]:
        """Draw one column of a dataset (the first statistic without ``column``) over one
        scope or run's result to ``out`` (PNG, SVG or PDF); returns the column drawn and
        what the picture holds."""
        ref = scope_of(scope) if scope is not None else None
        from h3pipe.report.datasets import map_dataset  # start-up: see _LAZY

        return map_dataset(self, name, column, out, size=size, style=style, scope=ref,
                           run_id=run, resolution=resolution, where=where)

    def report(self, run_id: str, out: Path, *, max_maps: int = 12) -> Row:
        """Write the self-contained HTML report of a run to ``out``; returns its row."""
        from h3pipe.report.runs import write_report  # start-up: see _LAZY

        return write_report(self, run_id, out, max_maps=max_maps)

    # -- housekeeping ------------------------------------------------------------------

    def clean(self, *, dry_run: bool = False, run_id: str | None = None,
              older_than_hours: float = 24.0, outputs: Sequence[Path] = ()
              ) -> tuple[list[str], list[Removal], list[Path]]:
        """Apply intermediates' cleanup policies, mark runs whose process is gone failed,
        and sweep what interrupted writes left in the project and ``outputs`` folders:
        (runs found dead, intermediates removed, leftover files removed)."""
        from h3pipe.execution.cleanup import clean as clean_store  # start-up: see _LAZY
        from h3pipe.results.outputs import sweep_tree  # start-up: see _LAZY

        dead, removals = clean_store(self, dry_run=dry_run, run_id=run_id,
                                     older_than_hours=older_than_hours)
        leftovers = [p for root in (self.root, *outputs)
                     for p in sweep_tree(root, dry_run=dry_run)]
        return dead, removals, leftovers

    def worker(self, queue: str | None = None, *, concurrency: int | None = None,
               grace_seconds: float = 30.0) -> int:
        """Be an ``h3pipe worker`` until stopped; returns its exit code."""
        settings = self.queue_settings(queue)
        if settings is None:
            raise UsageError("no queue given", hint="pass --queue amqp://..., set "
                             "H3PIPE_QUEUE, or 'queue:' in h3pipe.yaml")
        from h3pipe.queue.worker import start_worker  # start-up: see _LAZY

        return start_worker(settings, self.store_location(), self.root,
                            concurrency=concurrency or os.cpu_count() or 1,
                            grace_seconds=grace_seconds)

    def inspect(self, location: str) -> Inspection:
        """Read a raster or STAC collection: what a source YAML for it would say."""
        from h3pipe.authoring.inspect import inspect_location  # start-up: see _LAZY

        return inspect_location(location, self.root)

    # -- the source catalog ------------------------------------------------------------

    def register_sources(self, files: list[Path], *, recorded_as: str | None = None
                         ) -> list[Row]:
        """Validate source files and keep each as a new version in the store's catalog;
        ``recorded_as``: what the catalog names as their file (default: its path), for a
        document that came from elsewhere (an HTTP request) through a temporary file."""
        registered = sources.register_sources(self, files, recorded_as=recorded_as)
        self.forget()  # pipelines may now use them
        return registered

    def sources(self, *, theme: str | None = None, include_inactive: bool = False
                ) -> list[Row]:
        """The store's source catalog (latest version of each), optionally by theme."""
        return sources.list_sources(self, theme=theme, include_inactive=include_inactive)

    def source(self, source_id: str) -> Row:
        """One registered source: its versions and document."""
        return sources.show_source(self, source_id)

    def deactivate_source(self, source_id: str) -> int:
        """Deactivate a registered source (soft deletion); returns its version."""
        version = sources.deactivate(self, source_id)
        self.forget()
        return version


def export_target(out: Path | str, fmt: str | None, partition_resolution: int | None
                  ) -> tuple[str, str, bool]:
    """(the format an export to ``out`` is written in, how ``out`` reads in messages,
    whether it is standard output); a file that cannot be written is refused now, before
    anything is read."""
    from h3pipe.results.formats import format_for  # start-up: see _LAZY
    from h3pipe.results.outputs import describe, is_stdout, target  # start-up: see _LAZY

    folder = partition_resolution is not None
    if not is_stdout(out):
        target(out, folder=folder)
    return fmt or format_for(out, folder=folder), describe(out), is_stdout(out)


def draft_source(found: Inspection, location: str, source_id: str | None = None) -> str:
    """A ready-to-edit source YAML for what :meth:`Project.inspect` found."""
    from h3pipe.authoring.drafting import suggest_source_id, to_source_yaml  # see _LAZY

    if source_id is not None:
        check_source_id(source_id)
    return to_source_yaml(found, source_id=source_id or suggest_source_id(found),
                          location=location)


def check_source_id(source_id: str) -> None:
    """Refuse an id a source file could not have."""
    from h3pipe.authoring.drafting import check_source_id as check  # start-up: see _LAZY

    check(source_id)


def conservation_lines(params: dict[str, Any]) -> list[str]:
    """A run's conservation checks (extensive sums against the raster's), one line each."""
    from h3pipe.execution.balance import describe  # start-up: see _LAZY

    return describe(params.get("conservation", {}))


def schema_kinds() -> tuple[str, ...]:
    return schemas.KINDS


def schema_text(kind: str) -> str:
    """The packaged JSON Schema of ``kind`` (source, pipeline, project)."""
    return schemas.text(kind)


def write_schemas(folder: Path, kinds: tuple[str, ...] | None = None) -> list[Path]:
    return schemas.write(folder, kinds or schemas.KINDS)


def _geodataframe(table: pa.Table) -> Any:
    """Cells as polygons (their outlines, cut at ±180) in a GeoDataFrame."""
    import geopandas  # the 'dataframes' extra: checked by the caller
    import numpy as np

    from h3pipe import grid  # start-up: see _LAZY

    ids = [int(c, 16) if isinstance(c, str) else int(c)
           for c in table.column("h3_index").to_pylist()]
    shapes = grid.shapes(np.asarray(ids, dtype=np.uint64), 1.0)
    return geopandas.GeoDataFrame(table.to_pandas(), geometry=list(shapes), crs="EPSG:4326")


__all__ = ["Coverage", "Forecast", "Outlook", "Project", "Reporter", "RunOptions", "RunPlan",
           "RunRecord", "RunResult", "Scope", "ScopeRef", "Submitted", "check_source_id",
           "conservation_lines", "draft_source", "export_target", "parse_resolutions",
           "schema_kinds", "schema_text", "scope_given", "scope_of", "worst", "write_schemas"]
