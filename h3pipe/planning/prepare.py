"""Everything a run is, decided before anything runs: :class:`RunPlan`, built by
:func:`prepare`.

``run``, ``resume`` and ``plan`` all start here: the options settled against the pipeline's
and the project's defaults, the sources described over the scope (tiles, STAC items,
vector layers), the run's cells, the barrier stages and the run id. Preparing writes
nothing and starts no worker; what the store already holds for the run is the runner's
(and the plan's) business.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from h3pipe import resolutions
from h3pipe.config.dag import StepGraph
from h3pipe.config.project import ProjectConfig, suggest
from h3pipe.errors import NoDataInScope, NotFound, SourceError, UsageError
from h3pipe.masking import shown
from h3pipe.operations import get_operation
from h3pipe.planning.coverage import DEFAULT_MAX_NULL_SHARE, Coverage, footprint_share
from h3pipe.planning.pyramid import label, unshared
from h3pipe.planning.scope import Scope, ScopeCells, scope_cells
from h3pipe.sources.dimensions import Scenario, key_columns
from h3pipe.sources.raster import RasterInfo, describe_raster
from h3pipe.sources.stac import describe_stac
from h3pipe.sources.vector import VectorInfo, vector_info
from h3pipe.spec import DEFAULT_GRACE_SECONDS, PipelineSpec, Retry, SourceSpec, StepSpec
from h3pipe.storage.base import Store
from h3pipe.storage.records import RunRecord

DEFAULT_BATCH_SIZE = 500
# Without a batch size from the command line, the pipeline or the project, batches grow past
# DEFAULT_BATCH_SIZE so that a run has at most about this many tasks: each task costs the
# run a catalog record and an output file, whatever its size.
MAX_TASKS = 2000
# A step over features has at most about this many tasks (unless --batch-size says): each
# reads its source near its partitions (a GeoParquet row group is often 64 k rows), opens
# its raster and writes an output and a record, fixed costs a few thousand features do not
# carry, while a country's tens of millions still make hundreds of batches for the workers.
MAX_ROW_TASKS = 400
# ... but never more than this many features a batch (so a worker's memory does not grow
# with the country): then a step has more tasks. A pipeline whose steps read outlines
# (buffers, coverage: some 8 KB a feature at its peak) keeps to the smaller figure; one
# that places features by their centroid only, to the larger (4 row groups of a file).
MAX_ROW_BATCH = (16_000, 64_000)


@dataclass(frozen=True)
class RunOptions:
    """What the command line asked for; None means 'the pipeline's or project's default'."""

    resolution: int | None = None
    # Several resolutions computed by one run from the same reads (see planning.pyramid):
    # the finest drives the batches; empty or one: ``resolution`` alone.
    resolutions: tuple[int, ...] = ()
    batch_size: int | None = None
    workers: int | None = None
    force: bool = False
    from_step: str | None = None
    wait: bool = False
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    max_null_share: float | None = None  # above it, a published dataset warns
    strict: bool = False  # ... and the run's result is an error (after publishing)

    def reports_done(self, row: dict[str, Any] | None) -> bool:
        """Whether the run recorded as ``row`` is reported as done, not run again."""
        return (row is not None and row["status"] == "completed" and not self.force
                and self.from_step is None)

    def check(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.grace_seconds < 0:
            raise UsageError(f"--grace {self.grace_seconds:g} must be 0 or more seconds")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size} must be at least 1")
        if self.max_null_share is not None and not 0 <= self.max_null_share <= 1:
            raise UsageError(f"--max-null-share {self.max_null_share:g} must be a share "
                             "from 0 to 1")


@dataclass(frozen=True)
class UsedItem:
    """A STAC item a run reads."""

    source_id: str
    item_id: str
    href: str
    size: int | None = None  # bytes, when the item says


@dataclass(frozen=True)
class Sweep:
    """The scenarios a run computes of its dimensioned sources: for each, the scenarios
    with data in the scope (and their grids); ``missing``: those of the matrix that have
    none there (no tile or item), skipped and reported."""

    rasters: Mapping[str, tuple[tuple[Scenario, RasterInfo], ...]]
    missing: Mapping[str, tuple[str, ...]]
    keys: tuple[str, ...]
    # Scenarios whose rows the scope's current result already holds, from the same inputs:
    # kept as they are, not computed again (see as_recorded).
    carried: tuple[str, ...] = ()

    def scenario_ids(self) -> list[str]:
        """The scenarios this run computes."""
        return list(dict.fromkeys(sc.id for found in self.rasters.values() for sc, _ in found
                                  if sc.id not in self.carried))


@dataclass(frozen=True)
class RunPlan:
    """A run, fully decided. ``batch_size`` is the cells per batch (balanced so every
    worker gets several); ``max_batch_size`` bounds the row batches of feature steps."""

    run_id: str
    pipeline: PipelineSpec
    scope: Scope
    resolution: int
    cells: ScopeCells
    stages: tuple[tuple[str, ...], ...]
    batch_size: int
    max_batch_size: int
    workers: int
    # Whether someone chose the workers (--workers, or defaults.workers of the pipeline or
    # the project): then they are kept however small the work (forecast.costs).
    workers_chosen: bool
    sources: Mapping[str, SourceSpec]
    rasters: Mapping[str, RasterInfo]
    vectors: Mapping[str, VectorInfo]
    items: tuple[UsedItem, ...]
    options: RunOptions
    store_location: str
    sweep: Sweep | None = None
    # Each raster source's share of the scope its tiles cover (see planning.coverage).
    footprints: Mapping[str, float] = field(default_factory=dict)
    max_null_share: float = DEFAULT_MAX_NULL_SHARE
    # A run of several resolutions: the cells of each coarser one (``resolution`` is the
    # finest, ``cells`` its cells); empty for a run of one resolution.
    coarser: Mapping[int, ScopeCells] = field(default_factory=dict)

    @property
    def levels(self) -> list[int]:
        """Every resolution the run computes, coarsest first."""
        return [*sorted(self.coarser), self.resolution]

    def cells_at(self, resolution: int) -> ScopeCells:
        """The run's cells at one of its resolutions."""
        return self.cells if resolution == self.resolution else self.coarser[resolution]

    @property
    def cell_count(self) -> int:
        """The run's cells, all resolutions counted."""
        return len(self.cells) + sum(len(c) for c in self.coarser.values())

    def output_columns(self, step: StepSpec) -> list[str]:
        """The columns a published step adds to the dataset: a sweep's keys, then its
        statistics (one per band of a multi-band source)."""
        names = get_operation(step.operation).output_columns(step.params)
        source = self.sources.get(step.source or "")
        if source is not None and source.kind != "vector":
            names = source.columns(names)
        return [*(self.sweep.keys if self.sweep else ()), *names]

    def fingerprints(self) -> dict[str, str]:
        """Each scenario's inputs, as a digest: what its rows depend on (the pipeline but
        its matrix, the scope, the resolution, the sources but the dimensioned one's list
        of scenarios, and the files read). The same digest in a later run means the same
        rows, so a scenario added to a sweep is the only one computed."""
        if self.sweep is None:
            return {}
        document = {k: v for k, v in self.pipeline.document.items() if k != "matrix"}
        docs = {sid: {k: v for k, v in src.document.items()
                      if k not in ("dimensions", "combinations")}
                for sid, src in self.sources.items()}
        shared = {sid: _tiles(info) for sid, info in self.rasters.items()
                  if sid not in self.sweep.rasters} | _vector_data(self.vectors)
        base = {"pipeline": document, "scope": self.scope.key, "resolution": self.resolution,
                "sources": docs, "data": shared}
        out = {}
        for found in self.sweep.rasters.values():
            for sc, info in found:
                out[sc.id] = digest({**base, "scenario": sc.keys(), "tiles": _tiles(info)}, 16)
        return out

    def carrying(self, carried: list[str]) -> RunPlan:
        """This plan computing only the scenarios not in ``carried``."""
        if self.sweep is None or not carried:
            return self
        return replace(self, sweep=replace(self.sweep, carried=tuple(carried)))

    def computed_scenarios(self, source_id: str) -> tuple[tuple[Scenario, RasterInfo], ...]:
        """The scenarios of a dimensioned source this run computes, with their grids."""
        assert self.sweep is not None
        return tuple((sc, info) for sc, info in self.sweep.rasters[source_id]
                     if sc.id not in self.sweep.carried)

    def wide_steps(self) -> dict[str, str]:
        """Steps that keep feature rows for a later step and read a dimensioned source:
        their rows are stored wide over its scenarios (see h3pipe.operations.sweep); step
        id -> source id."""
        if self.sweep is None:
            return {}
        return {s.id: s.source for s in self.pipeline.steps if s.output == "intermediate"
                and s.input != "cells" and s.source is not None
                and s.source in self.sweep.rasters}

    def layout(self, step: StepSpec) -> dict[str, Any]:
        """What a published step's rows are keyed by besides h3_index (a sweep's keys), and
        the bands its columns come per: the multi-band source it or an earlier step read."""
        out: dict[str, Any] = {"keys": list(self.sweep.keys),
                               "scenarios": self.fingerprints()} if self.sweep else {}
        current: StepSpec | None = step
        while current is not None:
            source = self.sources.get(current.source or "")
            if source is not None and source.band_names:
                out["bands"] = {"key": source.band_key, "names": list(source.band_names)}
                break
            up = current.input_step
            current = self.pipeline.step(up) if up else None
        return out

    def params(self) -> dict[str, Any]:
        """What the run records to be resumed with the same batches."""
        out = {"batch_size": self.batch_size, "max_batch_size": self.max_batch_size,
               "workers": self.workers, "scope": self.scope.to_json()}
        if self.coarser:  # the run's resolutions, and each one's cells
            out["resolutions"] = self.levels
            out["cells"] = {str(r): len(self.cells_at(r)) for r in self.levels}
        if self.sweep is not None:  # which scenarios it computed, which had no data
            out["scenarios"] = self.sweep.scenario_ids()
            out["missing_scenarios"] = {k: list(v) for k, v in self.sweep.missing.items() if v}
            out["carried_scenarios"] = list(self.sweep.carried)
        out["inputs"] = self.inputs()
        out["coverage"] = Coverage.of_plan(self).to_json()
        return out

    def _grids(self, source_id: str) -> list[RasterInfo]:
        """A raster source's grid, or each scenario's for a dimensioned source."""
        if self.sweep is not None and source_id in self.sweep.rasters:
            return [info for _, info in self.sweep.rasters[source_id]]
        return [self.rasters[source_id]] if source_id in self.rasters else []

    def inputs(self, most: int = 200) -> list[dict[str, Any]]:
        """What the run reads, as its report shows it: each source with its licence and
        provenance, and its files (at most ``most`` listed; hrefs unsigned, no password)."""
        out = []
        for sid in sorted({s.source for s in self.pipeline.steps if s.source}):
            src = self.sources[sid]
            if sid in self.vectors:
                v = self.vectors[sid]
                files = [shown(v.location)]
            else:
                files = [shown(t.path) for info in self._grids(sid) for t in info.tiles]
            out.append({"source": sid, "kind": src.kind, "title": src.title,
                        "license": src.license, "provenance": src.provenance,
                        "files": files[:most], "file_count": len(files)})
        return out

    def as_started(self, params: dict[str, Any]) -> RunPlan:
        """This plan with the batches of the run it resumes (recorded in ``params``)."""
        return replace(self, batch_size=params.get("batch_size", self.batch_size),
                       max_batch_size=params.get("max_batch_size", self.max_batch_size),
                       workers=params.get("workers", self.workers))

    def resuming(self, row: RunRecord | None) -> RunPlan:
        """This plan as the run recorded in ``row`` started it (its batches), unless there
        is no such run or it is recomputed from scratch (``force``)."""
        if row is None or self.options.force:
            return self
        return self.as_started(row.params.raw)

    def row_batch(self, rows: int) -> int:
        """Rows per batch of a feature step with ``rows`` rows: at most the batch size, but
        grown (unless ``--batch-size`` said) so the step has at most about MAX_ROW_TASKS
        tasks, up to MAX_ROW_BATCH rows."""
        size = self.max_batch_size
        if self.options.batch_size is None:
            most = MAX_ROW_BATCH[0 if self.reads_outlines else 1]
            size = max(size, min(-(-rows // MAX_ROW_TASKS), most))
        return balanced_batch_size(rows, size, self.workers)

    @property
    def reads_outlines(self) -> bool:
        """Whether a step reads its features' outlines (not only their centroids)."""
        return any(get_operation(s.operation).reads_geometry for s in self.pipeline.steps
                   if s.input != "cells")

    def retry(self, step: StepSpec) -> Retry:
        defaults = self.pipeline.defaults
        return Retry(step.retries if step.retries is not None else defaults.get("retries", 2),
                     step.retry_backoff if step.retry_backoff is not None
                     else defaults.get("retry_backoff", 1.0))

    def redo_steps(self) -> list[str]:
        """Steps whose tasks are recomputed however they ended: ``--from-step`` and every
        later stage."""
        start = self.options.from_step
        if start is None:
            return []
        first = next(n for n, stage in enumerate(self.stages) if start in stage)
        return [sid for stage in self.stages[first:] for sid in stage]


def prepare(project: ProjectConfig, pipeline_id: str, scope: Scope,
            options: RunOptions | None = None) -> RunPlan:
    """Load and validate the project, settle the options and describe everything the run
    reads. Raises our errors (exit 2) for anything wrong before a run."""
    options = options or RunOptions()
    options.check()
    sources, pipelines, settings = project.load()
    pipeline = pipeline_named(pipelines, pipeline_id)
    defaults = {**settings.get("defaults", {}), **pipeline.defaults}
    resolution, others = _levels(options, defaults, pipeline, sources)
    workers = options.workers or defaults.get("workers") or os.cpu_count() or 1
    _check_from_step(pipeline, options.from_step)
    used = {sid: sources[sid] for sid in used_sources(pipeline)}
    rasters, vectors, items, sweep = _describe(used, project, scope, pipeline.matrix)
    cells = scope_cells(scope, resolution)
    coarser = {r: scope_cells(scope, r) for r in others}
    size = options.batch_size or defaults.get("batch_size") or default_batch_size(len(cells))
    nulls = options.max_null_share if options.max_null_share is not None else \
        defaults.get("max_null_share", DEFAULT_MAX_NULL_SHARE)
    return RunPlan(
        run_id=run_identity(pipeline, scope, resolution, used, rasters, vectors, sweep,
                            coarser=others),
        pipeline=pipeline, scope=scope, resolution=resolution, cells=cells,
        stages=tuple(tuple(s) for s in StepGraph(pipeline.steps).stages()),
        batch_size=balanced_batch_size(len(cells), size, workers), max_batch_size=size,
        workers=workers, workers_chosen=bool(options.workers or defaults.get("workers")),
        sources=used, rasters=rasters, vectors=vectors, items=items,
        options=options, store_location=project.store_location(), sweep=sweep,
        footprints=_footprints(rasters, sweep, scope), max_null_share=float(nulls),
        coarser=coarser)


def pipeline_named(pipelines: dict[str, PipelineSpec], pipeline_id: str) -> PipelineSpec:
    """The pipeline ``pipeline_id`` of a loaded project; :class:`NotFound` names the others."""
    if pipeline_id not in pipelines:
        known = sorted(pipelines)
        raise NotFound(f"unknown pipeline '{pipeline_id}'" + suggest(pipeline_id, known)
                       + f" (pipelines: {', '.join(known) or 'none in pipelines/'})")
    return pipelines[pipeline_id]


def _resolution(options: RunOptions, defaults: dict[str, Any], pipeline_id: str) -> int:
    res = options.resolution if options.resolution is not None else defaults.get("resolution")
    if res is None:
        raise UsageError(f"pipeline '{pipeline_id}' sets no default resolution; pass --resolution")
    return resolutions.check(int(res))


def _levels(options: RunOptions, defaults: dict[str, Any], pipeline: PipelineSpec,
            sources: Mapping[str, SourceSpec]) -> tuple[int, list[int]]:
    """The run's finest resolution and its coarser ones (none for one resolution)."""
    asked = sorted({resolutions.check(int(r)) for r in options.resolutions})
    if len(asked) < 2:
        if asked:
            options = replace(options, resolution=asked[0])
        return _resolution(options, defaults, pipeline.id), []
    why = unshared(pipeline, dict(sources))
    if why is not None:
        raise UsageError(f"pipeline '{pipeline.id}' cannot compute resolutions "
                         f"{label(asked)} in one run: {why}",
                         hint="run each resolution on its own (the CLI does that for -r)")
    return asked[-1], asked[:-1]


def _check_from_step(pipeline: PipelineSpec, from_step: str | None) -> None:
    ids = [s.id for s in pipeline.steps]
    if from_step is not None and from_step not in ids:
        raise UsageError(f"--from-step '{from_step}' is not a step of pipeline "
                         f"'{pipeline.id}'" + suggest(from_step, ids))


def default_batch_size(cells: int) -> int:
    """Cells per batch when nothing says: DEFAULT_BATCH_SIZE, or more for a scope that
    would otherwise make more than MAX_TASKS tasks."""
    return max(DEFAULT_BATCH_SIZE, -(-cells // MAX_TASKS))


def balanced_batch_size(cells: int, size: int, workers: int) -> int:
    """``size`` is a maximum: with few cells, split finer so every worker gets several batches."""
    if workers <= 1:
        return size
    return max(1, min(size, -(-cells // (workers * 4))))


def used_sources(pipeline: PipelineSpec) -> list[str]:
    """Every source a pipeline reads: its steps' sources and vector inputs."""
    named = [s.source for s in pipeline.steps if s.source]
    named += [s.input for s in pipeline.steps if s.input != "cells" and not s.input_step]
    return list(dict.fromkeys(named))


def run_identity(pipeline: PipelineSpec, scope: Scope, resolution: int,
                 sources: Mapping[str, SourceSpec], rasters: Mapping[str, RasterInfo],
                 vectors: Mapping[str, VectorInfo] | None = None,
                 sweep: Sweep | None = None, coarser: list[int] | None = None) -> str:
    """The run id: what the results depend on (the pipeline's content and version, the
    scope, the resolution, the sources as expanded, and the data files themselves: a tile
    rewritten in place makes a new run), never when or how fast it ran. A run of several
    resolutions (``coarser`` and ``resolution``, the finest) is named by them all."""
    vectors = vectors or {}
    used = sorted(used_sources(pipeline))
    data: dict[str, Any] = {sid: _tiles(rasters[sid]) for sid in used if sid in rasters}
    data |= _vector_data({sid: v for sid, v in vectors.items() if sid in used})
    if sweep is not None:  # every scenario computed, and the files each one read
        data |= {sid: {sc.id: _tiles(info) for sc, info in found}
                 for sid, found in sweep.rasters.items()}
    inputs = {"pipeline": pipeline.id, "version": pipeline.version,
              "content": pipeline.content_hash, "scope": scope.key, "resolution": resolution,
              "sources": {sid: sources[sid].document for sid in used}, "data": data}
    if not coarser:
        return f"{pipeline.id}-r{resolution}-{digest(inputs, 12)}"
    levels = [*sorted(coarser), resolution]
    inputs["resolutions"] = levels
    return f"{pipeline.id}-r{label(levels).replace(',', '.')}-{digest(inputs, 12)}"


def digest(inputs: Any, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``inputs`` as canonical JSON: the
    one way a run id and a scenario's fingerprint are made from what they depend on."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _tiles(info: RasterInfo) -> list[list[Any]]:
    return [_fingerprint(t.path) for t in info.tiles]


def _vector_data(vectors: Mapping[str, VectorInfo]) -> dict[str, list[Any]]:
    """A vector source by its file's fingerprint, or a PostGIS table by its name."""
    return {sid: [_fingerprint(v.location) if not v.is_postgis else [v.table]]
            for sid, v in vectors.items()}


def _fingerprint(path: str) -> list[Any]:
    """A tile as the run saw it: a local file by size and modification time, a URL by
    itself (its content is the server's business)."""
    try:
        st = os.stat(path)
    except OSError:
        return [path]
    return [path, st.st_size, st.st_mtime_ns]


# -- sources ------------------------------------------------------------------------------

def _describe(used: Mapping[str, SourceSpec], project: ProjectConfig, scope: Scope,
              matrix: Mapping[str, tuple[str, ...]]
              ) -> tuple[dict[str, RasterInfo], dict[str, VectorInfo], tuple[UsedItem, ...],
                         Sweep | None]:
    rasters: dict[str, RasterInfo] = {}
    vectors: dict[str, VectorInfo] = {}
    items: list[UsedItem] = []
    swept: dict[str, tuple[tuple[Scenario, RasterInfo], ...]] = {}
    missing: dict[str, tuple[str, ...]] = {}
    keys: tuple[str, ...] = ()
    for source_id, source in used.items():
        if source.kind == "vector":
            vectors[source_id] = _vector(source, project)
            continue
        if source.dimensions is not None:
            swept[source_id], missing[source_id], found = _sweep(source, project, scope, matrix)
            rasters[source_id] = swept[source_id][0][1]
            keys = tuple(key_columns(source.dimensions))
        else:
            rasters[source_id], found = _raster(source, project, scope)
        items += [UsedItem(source_id, i.id, i.href, i.size) for i in found]
    sweep = Sweep(swept, missing, keys) if swept else None
    return rasters, vectors, tuple(items), sweep


def _sweep(source: SourceSpec, project: ProjectConfig, scope: Scope,
           matrix: Mapping[str, tuple[str, ...]]
           ) -> tuple[tuple[tuple[Scenario, RasterInfo], ...], tuple[str, ...], list[Any]]:
    """Each scenario of the matrix with data in the scope, and its grid; the ids of those
    without (skipped); the STAC items read. A scenario whose files do not exist at all is
    an error: ``h3pipe validate`` names them all."""
    assert source.dimensions is not None
    chosen = source.dimensions.select(matrix)
    found: list[tuple[Scenario, RasterInfo]] = []
    missing: list[str] = []
    items: list[Any] = []
    for sc in chosen:
        try:
            info, its = _raster(scenario_source(source, sc), project, scope)
        except NoDataInScope:
            missing.append(sc.id)
            continue
        found.append((sc, info))
        items += its
    if not found:
        raise NoDataInScope(f"source '{source.id}' has none of its {len(chosen)} scenario(s) "
                            f"in scope {scope.label} (defined in {source.file})",
                            hint="choose a scope the data covers, or check the path template")
    return tuple(found), tuple(missing), items


def scenario_source(source: SourceSpec, scenario: Scenario) -> SourceSpec:
    """The plain source that one scenario of a dimensioned source is: its templates filled."""
    stac = source.stac
    if stac is not None:
        stac = replace(stac, collection=scenario.fill(stac.collection),
                       datetime=scenario.fill(stac.datetime) if stac.datetime else None,
                       query=scenario.fill_all(stac.query))
    return replace(source, location=scenario.fill(source.location), stac=stac, dimensions=None)


def _raster(source: SourceSpec, project: ProjectConfig, scope: Scope
            ) -> tuple[RasterInfo, list[Any]]:
    """The source's grid over the scope, and the STAC items it came from (if any)."""
    items: list[Any] = []
    with _named_by(source):
        if source.stac is not None:
            info, items = describe_stac(source.id, source.stac, scope.boxes,
                                        project.root, band=source.band, nodata=source.nodata,
                                        nodata_override=source.nodata_override)
            info = replace(info, bands=source.bands, band_names=source.band_names)
        else:
            info = describe_raster(source.id, source.location, project.root,
                                   band=source.band, nodata=source.nodata,
                                   nodata_override=source.nodata_override,
                                   bands=source.bands, band_names=source.band_names)
    minx, miny, maxx, maxy = bounds_wgs84(info)
    sminx, sminy, smaxx, smaxy = scope.geometry.bounds
    if not any(minx < e and maxx > w and miny < n and maxy > s
               for w, s, e, n in scope.boxes):
        raise NoDataInScope(
            f"source '{source.id}' (bounds {minx:.4f},{miny:.4f},{maxx:.4f},{maxy:.4f}) does not "
            f"overlap scope {scope.label} ({sminx:.4f},{sminy:.4f},{smaxx:.4f},{smaxy:.4f})",
            hint="choose a scope inside the raster, or check the source's path",
        )
    return info, items


def _footprints(rasters: Mapping[str, RasterInfo], sweep: Sweep | None, scope: Scope
                ) -> dict[str, float]:
    """Each raster source's share of the scope (a sweep's: all its scenarios' tiles)."""
    swept = sweep.rasters if sweep else {}
    return {sid: footprint_share([i for _, i in swept[sid]] if sid in swept else [info],
                                 scope.geometry) for sid, info in rasters.items()}


def bounds_wgs84(info: RasterInfo) -> tuple[float, float, float, float]:
    if info.crs_is_wgs84:
        return info.bounds
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_wkt(info.crs_wkt), CRS.from_epsg(4326), always_xy=True)
    x0, y0, x1, y1 = tr.transform_bounds(*info.bounds, densify_pts=21)
    return (x0, y0, x1, y1)


def _vector(source: SourceSpec, project: ProjectConfig) -> VectorInfo:
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
        # The same class: a remote read that failed for now (exit 1) stays one.
        raise type(exc)(f"{exc.message} (defined in {source.file})", hint=exc.hint) from exc


__all__ = ["RunOptions", "RunPlan", "Sweep", "UsedItem", "balanced_batch_size",
           "pipeline_named", "prepare", "run_identity", "used_sources"]


def as_recorded(plan: RunPlan, store: Store, row: RunRecord | None) -> RunPlan:
    """The plan as the store settles it, the one sequence that run, the queue's submit and
    plan share: a run that resumes keeps the batches it started with; a sweep computes
    only the scenarios the scope's current result does not hold from the same inputs."""
    return _carry_over(plan.resuming(row), store, row)


def _carry_over(plan: RunPlan, store: Store, row: RunRecord | None) -> RunPlan:
    """A sweep computing only the scenarios that the scope's current result does not
    already hold from the same inputs (a value added to a dimension: only its scenarios).
    A resumed run keeps what it started with; ``--force`` recomputes every scenario. Used
    by local and queue runs alike."""
    if plan.sweep is None or plan.options.force:
        return plan
    if row is not None:
        return plan.carrying(row.params.carried_scenarios)
    entries = store.result_entries(plan.pipeline.dataset, plan.resolution, plan.scope.key)
    if not entries:
        return plan
    held = json.loads(entries[0].get("layout") or "{}").get("scenarios", {})
    mine = plan.fingerprints()
    same = [sid for sid, digest in mine.items() if held.get(sid) == digest]
    # Every one the same (values taken out of the matrix): computed again, so a run always
    # computes something.
    return plan.carrying(same) if len(same) < len(mine) else plan
