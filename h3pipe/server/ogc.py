"""OGC API – Processes – Part 1: Core (1.0) over a project: :data:`router`. Each pipeline is
a process; executing one submits a run (asynchronously: 201 and the job's location), and
the job id is the run id, so the same request twice is the same job. A job's status is
:func:`~h3pipe.server.status.job_status` of its run; its results are the run's published
dataset, as links to downloads (GeoParquet, GeoPackage, CSV) and GeoJSON inline while the
run is small. Errors are problem details with OGC's exception types
(:class:`OgcProblem`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from h3pipe.api import Project, ScopeRef
from h3pipe.errors import H3PipeError, NotFound, UsageError
from h3pipe.server import auth, problems
from h3pipe.server.jobs import Jobs
from h3pipe.server.settings import ServerSettings
from h3pipe.server.status import ENDED, job_status
from h3pipe.spec import PipelineSpec

router = APIRouter(tags=["OGC API - Processes"])

CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
CONFORMANCE = [CONF + c for c in ("core", "json", "oas30", "job-list", "dismiss",
                                  "ogc-process-description")]
EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
REL = "http://www.opengis.net/def/rel/ogc/1.0/"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
JSON = "application/json"
SCOPES = ("iso3", "bbox", "aoi")
INPUTS = (*SCOPES, "resolution")
# The downloads of a job's results: format -> (media type, file extension, title).
DOWNLOADS = {
    "geoparquet": ("application/vnd.apache.parquet", "parquet",
                   "GeoParquet 1.1: one row per cell, its outline as geometry"),
    "gpkg": ("application/geopackage+sqlite3", "gpkg", "GeoPackage: one row per cell"),
    "csv": ("text/csv", "csv", "CSV: one row per cell, no geometry"),
    "geojson": ("application/geo+json", "geojson",
                "GeoJSON FeatureCollection: one feature per cell"),
}


class OgcProblem(Exception):
    """An h3pipe error answered with OGC's exception ``kind`` (no-such-process,
    no-such-job, result-not-ready) as its problem ``type``."""

    def __init__(self, kind: str, error: H3PipeError) -> None:
        super().__init__(str(error))
        self.kind, self.error = kind, error

    def response(self, instance: str) -> JSONResponse:
        status, body = problems.of_error(self.error, instance)
        body["type"] = EXCEPTIONS + self.kind
        return JSONResponse(body, status_code=status, media_type=problems.PROBLEM)


async def answer(request: Request, exc: Exception) -> JSONResponse:
    """The app's handler of :class:`OgcProblem`: the h3pipe error's problem document,
    typed as OGC's exception."""
    assert isinstance(exc, OgcProblem)
    return exc.response(request.url.path)


# -- the service ----------------------------------------------------------------------------

@router.get("/", summary="Landing page")
def landing(request: Request, _: str = Depends(auth.reader)) -> dict[str, Any]:
    base = _base(request)
    return {"title": "h3pipe", "description": "OGC API - Processes over the pipelines of "
            f"the h3pipe project {request.app.state.project.root.name}",
            "links": [_link(base + "/", "self", "this document"),
                      _link(base + "/openapi.json", "service-desc", "the API definition",
                            "application/vnd.oai.openapi+json;version=3.0"),
                      _link(base + "/conformance", REL + "conformance",
                            "OGC API - Processes conformance classes implemented here"),
                      _link(base + "/processes", REL + "processes", "the pipelines"),
                      _link(base + "/jobs", REL + "job-list", "the runs"),
                      _link(base + "/sources", "data", "the source catalog"),
                      _link(base + "/pipelines", "related", "the pipelines (catalog)"),
                      _link(base + "/runs", "related", "the runs (catalog)"),
                      _link(base + "/dashboard", "related", "the live dashboard",
                            "text/html")]}


@router.get("/conformance", summary="Conformance classes")
def conformance(_: str = Depends(auth.reader)) -> dict[str, Any]:
    return {"conformsTo": CONFORMANCE}


# -- processes ----------------------------------------------------------------------------

@router.get("/processes", summary="The pipelines, as processes")
def processes(request: Request, _: str = Depends(auth.reader)) -> dict[str, Any]:
    base = _base(request)
    return {"processes": [_summary(p, base) for p in _pipelines(request).values()],
            "links": [_link(base + "/processes", "self", "this document")]}


@router.get("/processes/{process_id}", summary="A pipeline's inputs and outputs")
def process(process_id: str, request: Request, _: str = Depends(auth.reader)
            ) -> dict[str, Any]:
    pipeline = _pipeline(request, process_id)
    settings: ServerSettings = request.app.state.settings
    return _summary(pipeline, _base(request)) | {
        "inputs": _inputs(pipeline, settings), "outputs": _outputs()}


@router.post("/processes/{process_id}/execution", status_code=201,
             summary="Run a pipeline (asynchronously): 201 and the job's location")
def execute(process_id: str, request: Request, body: Annotated[dict[str, Any], Body()],
            prefer: Annotated[str | None, Header()] = None,
            _: str = Depends(auth.runner)) -> JSONResponse:
    _pipeline(request, process_id)
    jobs: Jobs = request.app.state.jobs
    scope, resolution = _scope_of(body, request.app.state.settings, jobs.folder)
    job = jobs.submit(process_id, scope, resolution)
    base = _base(request)
    headers = {"Location": f"{base}/jobs/{job.run_id}"}
    if prefer and "respond-async" in prefer:
        headers["Preference-Applied"] = "respond-async"
    info = _status(jobs, job.run_id, base)
    return JSONResponse(problems.safe(info), status_code=201, headers=headers)


# -- jobs ----------------------------------------------------------------------------------

@router.get("/jobs", summary="The runs, newest first")
def job_list(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 20,
             processID: Annotated[list[str] | None, Query()] = None,  # noqa: N803 - OGC's
             status: Annotated[list[str] | None, Query()] = None,
             _: str = Depends(auth.reader)) -> dict[str, Any]:
    jobs: Jobs = request.app.state.jobs
    project: Project = request.app.state.project
    base = _base(request)
    waiting = [jobs.record(r) for r in sorted(jobs.in_flight())]
    stored = [r for r in project.runs(limit=limit)
              if r["run_id"] not in {w["run_id"] for w in waiting}]
    infos = [_with_links(job_status(_detailed(jobs, r)), base) for r in waiting + stored]
    infos = [i for i in infos if (not processID or i.get("processID") in processID)
             and (not status or i["status"] in status)]
    return problems.safe({"jobs": infos[:limit],
                          "links": [_link(f"{base}/jobs", "self", "this document")]})


@router.get("/jobs/{job_id}", summary="A run's status and progress")
def job(job_id: str, request: Request, _: str = Depends(auth.reader)) -> dict[str, Any]:
    return problems.safe(_status(request.app.state.jobs, job_id, _base(request)))


@router.delete("/jobs/{job_id}", summary="Cancel a run (as 'h3pipe runs cancel')")
def dismiss(job_id: str, request: Request, _: str = Depends(auth.runner)
            ) -> dict[str, Any]:
    jobs: Jobs = request.app.state.jobs
    _record(jobs, job_id)
    said = jobs.cancel(job_id)
    info = _status(jobs, job_id, _base(request))
    if info["status"] not in ENDED:
        info["message"] = said  # it stops once its running tasks finish
    return problems.safe(info)


@router.get("/jobs/{job_id}/results", summary="Where a successful run's dataset is")
def results(job_id: str, request: Request, _: str = Depends(auth.reader)
            ) -> dict[str, Any]:
    jobs: Jobs = request.app.state.jobs
    record = _ready(jobs, job_id)
    base = f"{_base(request)}/jobs/{job_id}/results"
    out: dict[str, Any] = {fmt: _download(base, fmt, record["dataset"])
                           for fmt in DOWNLOADS if fmt != "geojson"}
    settings: ServerSettings = request.app.state.settings
    cells = int(record.get("cells") or 0)
    if cells <= settings.geojson_inline_cells:
        path = _exported(request.app.state.project, jobs, record, "geojson")
        out["geojson"] = {"value": json.loads(path.read_text(encoding="utf-8")),
                          "mediaType": DOWNLOADS["geojson"][0]}
    else:
        out["geojson"] = _download(base, "geojson", record["dataset"]) | {
            "title": f"{cells} cells: more than this server shows inline "
                     f"({settings.geojson_inline_cells}, server: geojson_inline_cells in "
                     "h3pipe.yaml); download it, or take GeoParquet"}
    return problems.safe(out)


@router.get("/jobs/{job_id}/results/{fmt}", summary="Download a successful run's dataset")
def download(job_id: str, fmt: str, request: Request, _: str = Depends(auth.reader)
             ) -> FileResponse:
    if fmt not in DOWNLOADS:
        raise NotFound(f"no results format '{fmt}' (formats: {', '.join(DOWNLOADS)})")
    jobs: Jobs = request.app.state.jobs
    record = _ready(jobs, job_id)
    path = _exported(request.app.state.project, jobs, record, fmt)
    media, ext, _title = DOWNLOADS[fmt]
    return FileResponse(path, media_type=media,
                        filename=f"{record['dataset']}-{record['run_id']}.{ext}")


# -- documents ------------------------------------------------------------------------------

def _summary(pipeline: PipelineSpec, base: str) -> dict[str, Any]:
    href = f"{base}/processes/{pipeline.id}"
    steps = ", ".join(f"{s.id} ({s.operation})" for s in pipeline.steps)
    return {"id": pipeline.id, "title": pipeline.title or pipeline.id,
            "description": f"Computes dataset '{pipeline.dataset}' (theme "
                           f"{pipeline.theme}) per H3 cell of a scope; steps: {steps}.",
            "version": str(pipeline.version), "keywords": [pipeline.theme, pipeline.dataset],
            "jobControlOptions": ["async-execute", "dismiss"],
            "outputTransmission": ["value", "reference"],
            "links": [_link(href, "self", "process description"),
                      _link(href + "/execution", REL + "execute", "execute endpoint")]}


def _inputs(pipeline: PipelineSpec, settings: ServerSettings) -> dict[str, Any]:
    """The inputs of a pipeline's runs, by JSON Schema: exactly one scope (iso3, bbox or
    aoi) and the resolution."""
    one = "Give exactly one of iso3, bbox and aoi."
    four = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
    inputs: dict[str, Any] = {
        "iso3": {"title": "Country", "description": "A country by its ISO 3166-1 alpha-3 "
                 f"code (RWA): the H3 cells whose centres are in it. {one}",
                 "schema": {"type": "string", "pattern": "^[A-Za-z]{3}$"}},
        "bbox": {"title": "Bounding box", "description": "west, south, east, north in "
                 "degrees (CRS84); west > east crosses the antimeridian. " + one,
                 "schema": {"oneOf": [four, {
                     "type": "object", "format": "ogc-bbox", "required": ["bbox"],
                     "properties": {"bbox": four, "crs": {"type": "string",
                                                          "enum": [CRS84]}}}]}},
        "aoi": {"title": "Area of interest", "description": "A GeoJSON Polygon or "
                f"MultiPolygon (lon/lat), at most {settings.max_aoi_vertices} vertices. "
                + one, "schema": {"allOf": [{"format": "geojson-geometry"}, {
                    "type": "object", "required": ["type", "coordinates"],
                    "properties": {"type": {"enum": ["Polygon", "MultiPolygon"]},
                                   "coordinates": {"type": "array"}}}]}},
        "resolution": {"title": "H3 resolution", "description": "The cells' resolution",
                       "schema": {"type": "integer", "minimum": 0, "maximum": 15}},
    }
    default = pipeline.defaults.get("resolution")
    if default is not None:
        inputs["resolution"]["schema"]["default"] = default
    for name, spec in inputs.items():
        spec |= {"minOccurs": 0 if name != "resolution" or default is not None else 1,
                 "maxOccurs": 1}
    return inputs


def _outputs() -> dict[str, Any]:
    return {fmt: {"title": title, "schema": {"type": "object", "format":
                                             "geojson-feature-collection"}
                  if fmt == "geojson" else {"type": "string", "contentEncoding": "binary",
                                            "contentMediaType": media}}
            for fmt, (media, _ext, title) in DOWNLOADS.items()}


def _status(jobs: Jobs, run_id: str, base: str) -> dict[str, Any]:
    return _with_links(job_status(_detailed(jobs, _record(jobs, run_id))), base)


def _with_links(info: dict[str, Any], base: str) -> dict[str, Any]:
    href = f"{base}/jobs/{info['jobID']}"
    links = [_link(href, "self", "this job's status"),
             _link(f"{base}/jobs", "up", "the job list"),
             _link(f"{base}/runs/{info['jobID']}", "related", "the run's record")]
    if info["status"] == "successful":
        links.append(_link(href + "/results", REL + "results", "the job's results"))
    return info | {"links": links}


def _download(base: str, fmt: str, dataset: str) -> dict[str, Any]:
    media, _ext, title = DOWNLOADS[fmt]
    return {"href": f"{base}/{fmt}", "rel": "enclosure", "type": media,
            "title": f"{dataset}: {title}"}


def _link(href: str, rel: str, title: str, media: str = JSON) -> dict[str, Any]:
    return {"href": href, "rel": rel, "type": media, "title": title}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- reading --------------------------------------------------------------------------------

def _pipelines(request: Request) -> dict[str, PipelineSpec]:
    project: Project = request.app.state.project
    return project.load()[1]


def _pipeline(request: Request, process_id: str) -> PipelineSpec:
    pipelines = _pipelines(request)
    if process_id not in pipelines:
        known = ", ".join(sorted(pipelines)) or "none in pipelines/"
        raise OgcProblem("no-such-process", NotFound(
            f"unknown pipeline '{process_id}' (pipelines: {known})",
            hint="list them with GET /processes"))
    return pipelines[process_id]


def _record(jobs: Jobs, run_id: str) -> dict[str, Any]:
    try:
        return jobs.record(run_id)
    except NotFound as exc:
        raise OgcProblem("no-such-job", exc) from None


def _detailed(jobs: Jobs, record: Mapping[str, Any]) -> dict[str, Any]:
    """A running run's record with its steps (a listing's row has none): its progress."""
    if record.get("status") == "running" and "steps" not in record:
        return jobs.record(str(record["run_id"]))
    return dict(record)


def _ready(jobs: Jobs, run_id: str) -> dict[str, Any]:
    """The record of a successful run; result-not-ready for any other."""
    record = _record(jobs, run_id)
    info = job_status(record)
    if info["status"] != "successful":
        why = f": {info['message']}" if info["status"] in ENDED else ""
        raise OgcProblem("result-not-ready", NotFound(
            f"job {run_id} is {info['status']}{why}; its results are there once it is "
            "successful", hint=f"follow it with GET /jobs/{run_id}"))
    return record


# One export at a time per file: a second request for it waits and then reads the first's.
_EXPORTING: dict[Path, threading.Lock] = {}
_EXPORTING_LOCK = threading.Lock()


def _exported(project: Project, jobs: Jobs, record: Mapping[str, Any], fmt: str) -> Path:
    """The run's dataset as ``fmt`` in the server's cache, exported when first asked for.
    A completed run's result never changes, so a file once written stays right."""
    run_id, dataset = str(record["run_id"]), str(record["dataset"])
    path = jobs.folder / "results" / run_id / f"{dataset}.{DOWNLOADS[fmt][1]}"
    with _EXPORTING_LOCK:
        lock = _EXPORTING.setdefault(path, threading.Lock())
    with lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            project.export(dataset, path, fmt, run=run_id)
    return path


# -- the execute request ---------------------------------------------------------------------

def _scope_of(body: Mapping[str, Any], settings: ServerSettings, folder: Path
              ) -> tuple[ScopeRef, int | None]:
    """The scope and resolution an execute request asks for, checked as the CLI checks
    its options (and in its words); an AOI is written to a file of the server's."""
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        raise UsageError("'inputs' must be an object: {\"inputs\": {\"iso3\": \"RWA\"}}")
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise UsageError(f"unknown input '{unknown[0]}' (inputs: {', '.join(INPUTS)})",
                         hint="see GET /processes/{id} for each input's schema")
    values = {k: _plain(v) for k, v in inputs.items()}
    aoi = values.get("aoi")
    ref = ScopeRef.given(iso3=_iso3(values.get("iso3")), bbox=_bbox(values.get("bbox")),
                         aoi=_aoi_file(aoi, settings, folder) if aoi is not None else None)
    return ref, _resolution(values.get("resolution"))


def _plain(value: Any) -> Any:
    """An input's value: OGC lets a client wrap one as ``{"value": ...}``."""
    if isinstance(value, dict) and "value" in value:
        return value["value"]
    return value


def _iso3(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) != 3 or not value.strip().isalpha():
        raise UsageError(f"--iso3 {value!r}: give one country's ISO 3166-1 alpha-3 code "
                         "(RWA)")
    return value


def _bbox(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("crs", CRS84) != CRS84:
            raise UsageError(f"--bbox: crs {value.get('crs')!r} is not CRS84 ({CRS84})")
        value = value.get("bbox")
    if not (isinstance(value, list) and len(value) == 4
            and all(_number(v) for v in value)):
        raise UsageError("--bbox must be four numbers west,south,east,north (lon/lat, e.g. "
                         "[28.8, -2.9, 30.9, -1.0])")
    return ",".join(repr(float(v)) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _resolution(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"--resolution {value!r} is not an H3 resolution (0..15)")
    return value


def _aoi_file(geometry: Any, settings: ServerSettings, folder: Path) -> Path:
    """The AOI as a GeoJSON file in the server's folder, named by its content: the same
    polygon makes the same file, so the same scope and run. Never a path from the request."""
    if not (isinstance(geometry, dict) and geometry.get("type") in ("Polygon", "MultiPolygon")
            and isinstance(geometry.get("coordinates"), list)):
        raise UsageError("--aoi must be a GeoJSON Polygon or MultiPolygon object "
                         '({"type": "Polygon", "coordinates": [[[lon, lat], ...]]})')
    vertices = _vertices(geometry["coordinates"])
    if vertices > settings.max_aoi_vertices:
        raise HTTPException(413, f"the AOI has {vertices} vertices, more than this server "
                            f"takes ({settings.max_aoi_vertices}, server: max_aoi_vertices "
                            "in h3pipe.yaml); simplify it")
    text = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {
            "type": geometry["type"], "coordinates": geometry["coordinates"]}}]},
        sort_keys=True, separators=(",", ":"))
    path = folder / "aoi" / f"aoi-{hashlib.sha256(text.encode()).hexdigest()[:16]}.geojson"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    return path


def _vertices(coordinates: Any) -> int:
    """Positions in nested GeoJSON coordinates (a position is a list of numbers)."""
    if not isinstance(coordinates, list):
        return 0
    if coordinates and not isinstance(coordinates[0], list):
        return 1
    return sum(_vertices(c) for c in coordinates)
