"""Reading what runs left behind: run listings (:func:`list_runs`, :func:`show_run`), whether
a run recorded as running still is (:func:`why_dead`), :func:`cancellable`, the store's
:func:`migrations` and dataset exports (:func:`export_dataset`; :mod:`h3pipe.results.formats`
writes the files).

The SQL lives in :mod:`h3pipe.storage.history`; this module opens the store, judges and
shapes what it read, and turns a miss into an error that says what to do.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from h3pipe.config.project import ProjectConfig, suggest
from h3pipe.errors import ConfigError, NotFound, NotRunning, UsageError
from h3pipe.planning.scope import ScopeRef
from h3pipe.results import formats, layouts
from h3pipe.storage import Store, history, open_catalog
from h3pipe.storage.holders import holder_alive, why_dead

if TYPE_CHECKING:
    import pyarrow as pa

    from h3pipe.storage.catalog import Catalog

from h3pipe.storage.records import Row, RunRecord


def migrations(project: ProjectConfig, *, upgrade: bool) -> tuple[str, list[str], list[str]]:
    """(store shown safely, migrations applied, pending); with ``upgrade``, apply them first
    and report what was applied now."""
    project.read_settings()
    catalog, where = open_catalog(project.store_location(), project.root)
    with contextlib.closing(catalog):
        if upgrade:
            return where, catalog.migrate(), catalog.pending()
        return where, catalog.applied(), catalog.pending()


# -- runs -------------------------------------------------------------------------------------

def _judged(run: RunRecord) -> RunRecord:
    # Shown, not recorded: a reader that wrote 'failed' here could race a run taking the
    # row over (its claim compares the status it saw), and whoever acts on the death
    # records it already: 'h3pipe clean' marks the run failed, 'run' and 'resume' take
    # the row over.
    return RunRecord(run | {"dead": why_dead(run)})


def list_runs(project: ProjectConfig, limit: int = 20, pipeline: str | None = None
              ) -> list[RunRecord]:
    """Run rows, newest first; ``dead`` says why a run recorded as running is not."""
    with project.open_store() as store:
        return [_judged(r) for r in history.recent_runs(store.catalog, limit=limit,
                                                         pipeline=pipeline)]


def find_run(catalog: Catalog, ref: str) -> RunRecord:
    """The run named by its id, a unique prefix of it, or 'latest'."""
    if not ref.strip():  # the prefix of every run, not a choice of one
        raise UsageError("give a run id, a unique prefix of it, or 'latest'",
                         hint="list runs with 'h3pipe runs list'")
    if ref == "latest":
        run = history.latest_run(catalog)
        if run is None:
            raise NotFound("no runs yet", hint="start one with 'h3pipe run'")
        return run
    run = history.find_run(catalog, ref)
    if run is not None:
        return run
    matches = history.runs_with_prefix(catalog, ref)
    if len(matches) != 1:
        # Several runs share the prefix: they are there, the name is what falls short.
        error = ConfigError if matches else NotFound
        raise error(f"no run '{ref}'" + (" (ambiguous prefix)" if matches else ""),
                    hint="list runs with 'h3pipe runs list'")
    return matches[0]


def show_run(project: ProjectConfig, run_id: str) -> Row:
    """One run's row with its steps, tasks, items and timeline (see
    :class:`h3pipe.storage.history.RunHistory`), and ``dead`` as in :func:`list_runs`."""
    with project.open_store() as store:
        return _shown(store, find_run(store.catalog, run_id))


def _shown(store: Store, run: RunRecord) -> Row:
    past = history.run_history(store.catalog, run["run_id"])
    return _judged(run) | {
        "steps": past.steps, "failed_tasks": past.failed_tasks,
        "slowest_tasks": past.slowest_tasks, "slowest_tiles": _slowest_tiles(past.tile_seconds),
        "items": past.items, "events": past.events, "task_events": past.task_events,
        "params": run.params.raw,
    }


def run_report(project: ProjectConfig, run_id: str) -> Row:
    """Everything a run's report shows: :func:`show_run`'s row, every task's worker and
    times (``spans``), the pipeline document it ran (``pipeline_document``) and the results
    it still holds (``published``)."""
    with project.open_store() as store:
        run = find_run(store.catalog, run_id)
        return _shown(store, run) | {
            "spans": history.task_spans(store.catalog, run["run_id"]),
            "pipeline_document": history.pipeline_document(store.catalog, run["pipeline_id"],
                                                           run["pipeline_hash"]),
            "published": [e for e in store.result_entries(run["dataset"], run["resolution"],
                                                          run["scope_key"])
                          if e["run_id"] == run["run_id"]]}


def run_params(project: ProjectConfig, run_id: str) -> Row:
    """What the run recorded of itself: its settings, scope, inputs and checks."""
    with project.open_store() as store:
        return find_run(store.catalog, run_id).params.raw


def _slowest_tiles(tile_seconds: list[str], limit: int = 5) -> list[Row]:
    """Tiles by the seconds tasks spent opening, reading and decoding them, slowest first."""
    seconds: dict[str, float] = {}
    tasks: dict[str, int] = {}
    for text in tile_seconds:
        for tile, s in json.loads(text).items():
            seconds[tile] = seconds.get(tile, 0.0) + s
            tasks[tile] = tasks.get(tile, 0) + 1
    ranked = sorted(seconds, key=lambda t: -seconds[t])[:limit]
    return [{"tile": t, "seconds": seconds[t], "tasks": tasks[t]} for t in ranked]


def cancellable(store: Store, run_id: str) -> Row:
    """The run ``run_id`` ('latest' or a prefix) asked to stop, as it was seen running; a
    run that is not running is refused with what to do instead."""
    run = find_run(store.catalog, run_id)
    if not holder_alive(run):
        dead = why_dead(run)
        raise NotRunning(f"run '{run['run_id']}' is not running "
                         + (f"({dead})" if dead else f"(status {run['status']})"),
                         hint=f"resume it with 'h3pipe resume {run['run_id']}'" if dead
                         else None)
    history.request_cancel(store.catalog, run["run_id"])
    return run


# -- exports ----------------------------------------------------------------------------------

def export_dataset(project: ProjectConfig, dataset: str, out: Path | str, fmt: str, *,
                   scope: ScopeRef | None = None, run_id: str | None = None,
                   resolution: int | None = None, where: list[str] | None = None,
                   layout: str = "wide",
                   geometry: str | None = None, h3: str = "text",
                   partition_resolution: int | None = None) -> int:
    """Write one row per cell (and scenario, for a sweep) of ``dataset`` to ``out`` (``-``:
    standard output); return the number of rows. The rows are :func:`read_dataset`'s;
    ``fmt``, ``geometry``, ``h3`` and ``partition_resolution``: see
    :class:`h3pipe.results.formats.ExportSpec`."""
    spec = formats.ExportSpec.parse(fmt, geometry=geometry, h3=h3, layer=dataset,
                                    partition_resolution=partition_resolution)
    table, _ = read_dataset(project, dataset, scope=scope, run_id=run_id,
                            resolution=resolution, where=where, layout=layout)
    formats.write(table, out, spec)
    return int(table.num_rows)


def read_dataset(project: ProjectConfig, dataset: str, *, scope: ScopeRef | None = None,
                 run_id: str | None = None, resolution: int | None = None,
                 where: list[str] | None = None, layout: str = "wide"
                 ) -> tuple[pa.Table, list[Row]]:
    """The rows of ``dataset`` and the result entries they come from. At most one of
    ``scope`` (as given to 'h3pipe run') and ``run_id`` (the result that run published)
    narrows it; without one, every scope is read. ``where`` and ``layout``: see
    :mod:`h3pipe.results.layouts`."""
    wanted = layouts.parse_where(where or [])
    if scope is not None and run_id is not None:
        raise UsageError("give at most one of --iso3, --bbox, --aoi or --run "
                         f"(got --{scope.kind}, --run)")
    scope_key = scope.key if scope is not None else None
    with project.open_store() as store:
        if run_id is not None:
            entries = _published_by(store, dataset, run_id, resolution)
        else:
            entries = store.result_entries(dataset, resolution, scope_key)
        if not entries:
            no_results(store, dataset)
        table = layouts.shape(store.read_results(entries), layouts.merged(entries), wanted,
                              layout)
    return table, entries


def _published_by(store: Store, dataset: str, run_ref: str,
                  resolution: int | None) -> list[Row]:
    """The result ``run_ref`` published, while it is still the current one for its scope."""
    run = find_run(store.catalog, run_ref)
    rid = run["run_id"]
    if run["dataset"] != dataset:
        raise ConfigError(f"run {rid} computed dataset '{run['dataset']}', not '{dataset}'")
    levels = run.params.resolutions or [run.resolution]  # a run of several: each one's
    if resolution is not None and resolution not in levels:
        raise ConfigError(f"run {rid} computed resolution "
                          f"{', '.join(str(r) for r in levels)}, not {resolution}",
                          hint="drop --resolution" if len(levels) == 1
                          else "give --resolution one of those")
    current = [e for r in ([resolution] if resolution is not None else levels)
               for e in store.result_entries(dataset, r, run["scope_key"])]
    mine = [e for e in current if e["run_id"] == rid]
    if mine:
        return mine
    where = f"{run['scope_label']} at resolution {run['resolution']}"
    other = current[0]["run_id"] if current else None
    if run["status"] == "completed" and other:
        raise ConfigError(f"run {rid} no longer holds the result of {where}: run {other} "
                          "replaced it", hint=f"export it with --run {other}")
    raise ConfigError(f"run {rid} published nothing (status {run['status']}, {where})",
                      hint=f"the scope's result is run {other}'s: export it with --run {other}"
                      if other else f"see 'h3pipe runs show {rid}'")


def no_results(store: Store, dataset: str) -> NoReturn:
    """Raise :class:`NotFound`: nothing matched; say which datasets, or which of its
    scopes, there are (exports, and the server's maps)."""
    known = sorted({e["dataset"] for e in store.result_entries()})
    if dataset not in known:
        raise NotFound(f"no results for dataset '{dataset}'" + suggest(dataset, known)
                       + f" (datasets with results: {', '.join(known) or 'none'})")
    options = ", ".join(f"{e['scope_label']} at resolution {e['resolution']} "
                        f"(run {e['run_id']})" for e in store.result_entries(dataset))
    raise NotFound(f"no results for dataset '{dataset}' with the filters given "
                   f"(it has: {options})")
