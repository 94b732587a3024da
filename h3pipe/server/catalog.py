"""The catalog endpoints: sources (list, show, register, update, deactivate), pipelines
(list, show, validate for a scope = ``h3pipe plan``) and runs (list, show with progress,
cancel, results), as JSON. Each is a call of :class:`~h3pipe.api.Project`, so the errors
are the CLI's, answered as problem details (:mod:`.problems`). Reading needs the ``read``
scope, changing anything the ``run`` scope (:mod:`.auth`). ``router`` holds the routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from h3pipe.api import Project, ScopeRef, parse_resolutions
from h3pipe.errors import ConfigError
from h3pipe.planning.prepare import pipeline_named
from h3pipe.server import auth, problems
from h3pipe.server.posted import register_posted
from h3pipe.server.status import job_status

router = APIRouter(tags=["catalog"])
READ = [Depends(auth.reader)]
RUN = [Depends(auth.runner)]

# A run's state as the store records it, or as a job's status (OGC API - Processes).
RUN_STATES = ("pending", "queued", "running", "completed", "failed", "interrupted",
              "cancelled", "accepted", "successful", "dismissed")
MAX_RUNS = 1000


def _project(request: Request) -> Project:
    project: Project = request.app.state.project
    return project


async def _body(request: Request) -> bytes:
    # Read here, in the event loop, so the route itself can be a plain function that
    # FastAPI runs in its threadpool; the body limit (app.BodyLimit) applies while it reads.
    return await request.body()


def answer(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
           ) -> JSONResponse:
    """JSON with every password masked (:func:`problems.safe`)."""
    return JSONResponse(problems.safe(data), status_code=status, headers=headers)


# -- sources ---------------------------------------------------------------------------

@router.get("/sources", dependencies=READ)
def list_sources(request: Request, theme: str | None = None,
                 active: Literal["true", "false", "all"] = "true") -> JSONResponse:
    """The registered sources (latest version of each): active ones, inactive ones or
    all; of one ``theme``."""
    rows = _project(request).sources(theme=theme, include_inactive=active != "true")
    if active == "false":
        rows = [r for r in rows if not r["is_active"]]
    return answer([_source_row(r) for r in rows])


@router.get("/sources/{source_id}", dependencies=READ)
def show_source(request: Request, source_id: str) -> JSONResponse:
    """One registered source: its document and its versions."""
    return answer(_source_row(_project(request).source(source_id)))


@router.post("/sources", dependencies=RUN, status_code=201)
def register_source(request: Request, body: bytes = Depends(_body)) -> JSONResponse:
    """Register a source document (YAML or JSON), or a new version of it, as ``h3pipe
    sources register FILE`` does: 201 when it is new, 200 otherwise."""
    row = register_posted(_project(request), body, request.headers.get("content-type"))[0]
    return _registered(row)


@router.put("/sources/{source_id}", dependencies=RUN)
def update_source(request: Request, source_id: str,
                  body: bytes = Depends(_body)) -> JSONResponse:
    """A new version of a registered source; the body's id must be ``source_id``."""
    project = _project(request)
    project.source(source_id)  # 404 for one never registered: POST registers it
    row = register_posted(project, body, request.headers.get("content-type"),
                          source_id=source_id)[0]
    return _registered(row)


@router.delete("/sources/{source_id}", dependencies=RUN)
@router.post("/sources/{source_id}/deactivate", dependencies=RUN)
def deactivate_source(request: Request, source_id: str) -> JSONResponse:
    """Deactivate (soft-delete) a source: pipelines that need it fail validation."""
    version = _project(request).deactivate_source(source_id)
    return answer({"id": source_id, "version": version, "action": "deactivated"})


def _registered(row: Mapping[str, Any]) -> JSONResponse:
    status = 201 if row["action"] == "added" else 200
    return answer(dict(row), status, {"Location": f"/sources/{row['id']}"})


def _source_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog row as JSON: ``is_active`` a boolean; the document parsed (show) or left
    out (list)."""
    out = {k: v for k, v in row.items() if k != "document" or not isinstance(v, str)}
    out["is_active"] = bool(row["is_active"])
    return out


# -- pipelines -------------------------------------------------------------------------

@router.get("/pipelines", dependencies=READ)
def list_pipelines(request: Request) -> JSONResponse:
    """Every pipeline of the project: id, version, dataset, steps, default resolution."""
    _, pipelines, _ = _project(request).load()
    return answer([{"id": p.id, "version": p.version, "title": p.title, "dataset": p.dataset,
                    "theme": p.theme, "resolution": p.defaults.get("resolution"),
                    "resolutions": p.defaults.get("resolutions"),
                    "steps": [{"id": s.id, "operation": s.operation, "source": s.source}
                              for s in p.steps]}
                   for p in sorted(pipelines.values(), key=lambda p: p.id)])


@router.get("/pipelines/{pipeline_id}", dependencies=READ)
def show_pipeline(request: Request, pipeline_id: str) -> JSONResponse:
    """The pipeline's document, as validated."""
    _, pipelines, _ = _project(request).load()
    return answer(pipeline_named(pipelines, pipeline_id).document)


@router.get("/pipelines/{pipeline_id}/validate", dependencies=READ)
@router.post("/pipelines/{pipeline_id}/validate", dependencies=READ)
def validate_pipeline(request: Request, pipeline_id: str, iso3: str | None = None,
                      bbox: str | None = None, resolution: str | None = None,
                      batch_size: int | None = Query(None, ge=1),
                      from_step: str | None = None) -> JSONResponse:
    """What running the pipeline over ``iso3`` or ``bbox`` would do and cost, as
    ``h3pipe plan --format json`` prints it (several resolutions: a list of plans)."""
    if "aoi" in request.query_params:
        raise ConfigError("an AOI is not named by a path over HTTP: give iso3 or bbox here, "
                          "or send the AOI as GeoJSON to POST /processes/{id}/execution")
    if resolution is not None:
        parse_resolutions(resolution)  # a bad resolution is refused before the project
    project = _project(request)
    scope = ScopeRef.given(iso3=iso3, bbox=bbox)
    shown = [plan.to_json() for plan in project.plans(pipeline_id, scope, resolution,
                                                      batch_size=batch_size,
                                                      from_step=from_step)]
    return answer(shown[0] if len(shown) == 1 else shown)


# -- runs ------------------------------------------------------------------------------

@router.get("/runs", dependencies=READ)
def list_runs(request: Request, pipeline: str | None = None, state: str | None = None,
              limit: int = Query(20, ge=1, le=MAX_RUNS)) -> JSONResponse:
    """Runs, newest first: of one ``pipeline``, in one ``state`` (the store's word, as
    ``runs list`` shows it, or the job's: accepted, running, successful, failed,
    dismissed)."""
    if state is not None and state not in RUN_STATES:
        raise ConfigError(f"state '{state}' is not one of {', '.join(RUN_STATES)}")
    rows = _project(request).runs(limit=MAX_RUNS if state else limit, pipeline=pipeline)
    shown = [_run_row(r) for r in rows]
    if state is not None:
        shown = [r for r in shown if state in (r["status"], r["job"]["status"])]
    return answer(shown[:limit])


@router.get("/runs/{run_id}", dependencies=READ)
def show_run(request: Request, run_id: str) -> JSONResponse:
    """One run (its id, a unique prefix or ``latest``): its record with steps, tasks and
    timeline, ``progress`` (0-100) and ``job``, its status as a job."""
    return answer(_run_row(_project(request).run_record(run_id)))


@router.post("/runs/{run_id}/cancel", dependencies=RUN, status_code=202)
def cancel_run(request: Request, run_id: str) -> JSONResponse:
    """Ask a run to stop, as ``h3pipe runs cancel``: it takes no new task."""
    message = request.app.state.jobs.cancel(run_id)
    return answer({"run_id": run_id, "message": message}, 202)


@router.get("/runs/{run_id}/results", dependencies=READ)
def run_results(request: Request, run_id: str) -> JSONResponse:
    """The run-results document (``h3pipe runs show --format json``)."""
    return answer(_project(request).run_results(run_id))


def _run_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run record as JSON: ``params`` parsed (a listing's row holds its text), with its
    ``job`` status and ``progress`` when known."""
    job = job_status(record)
    out = {k: v for k, v in record.items() if k != "params" or not isinstance(v, str)}
    return out | {"job": job, "progress": job.get("progress")}


__all__ = ["answer", "router"]
