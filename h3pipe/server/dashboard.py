"""The live dashboard, served by the same process as the API: pages under ``/dashboard``
(the runs, a run's report, sources, pipelines, the maps and the interactive map of a
dataset), their scripts and styles (package data in ``static/``, the vendored ones in
``static/vendor/``, copied there by ``make assets``), and two endpoints for readers:
``GET /events/runs`` (server-sent events: the runs, each time one changes; :class:`Feed`)
and ``GET /reports/{run_id}`` (a run's HTML report, as ``h3pipe runs report`` writes it).

The pages hold no data and need no token: their scripts ask the API for everything, with
the token a person types once (kept in the tab's ``sessionStorage``), and say so plainly
on 401 and 403. A Content-Security-Policy keeps every page to this server (and the
basemap's host, when one is configured): nothing is loaded from anywhere else.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from html import escape
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse

from h3pipe.api import Project
from h3pipe.errors import ConfigError, H3PipeError, NotFound
from h3pipe.server import auth
from h3pipe.server.settings import ServerSettings
from h3pipe.server.status import ENDED, job_status

router = APIRouter(tags=["dashboard"])
STATIC = Path(__file__).parent / "static"
# Every file a page may ask for, found once: a request names one of these or gets a 404,
# so no path from a request reaches the file system.
FILES = {p.relative_to(STATIC).as_posix(): p for p in sorted(STATIC.rglob("*"))
         if p.is_file() and not p.name.startswith(".")}
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".png": "image/png", ".txt": "text/plain", ".html": "text/html"}
POLL = 0.5  # seconds between two reads of the store, however many pages listen
STREAM = 55.0  # seconds an event stream lasts; the page reconnects (a stopping server ends
# streams sooner: see _stopping)
KEEPALIVE = 15.0  # seconds between comments on a quiet stream, so proxies keep it open
RUNS_SHOWN = 50
REPORTS_KEPT = 16


# -- pages ----------------------------------------------------------------------------------

PAGES = {
    "runs": ("Runs", "Runs of this store, live: status and progress as they change."),
    "run": ("Run", ""),
    "sources": ("Sources", "The registered sources (the latest version of each)."),
    "pipelines": ("Pipelines", "The pipelines of the project."),
    "maps": ("Maps", "Datasets with published results: open one on the interactive map."),
    "map": ("Map", ""),
}
NAV = (("runs", "/dashboard", "Runs"), ("sources", "/dashboard/sources", "Sources"),
       ("pipelines", "/dashboard/pipelines", "Pipelines"), ("maps", "/dashboard/maps", "Maps"))


def page(name: str, settings: ServerSettings) -> HTMLResponse:
    """A page: the navigation, the token box, a place for messages, and its script. Every
    page is the same text whatever the URL holds; its script reads the URL."""
    title, intro = PAGES[name]
    here = {{"map": "maps", "run": "runs"}.get(name, name): ' class="here"'}
    nav = "".join(f'<a href="{href}"{here.get(key, "")}>{text}</a>' for key, href, text in NAV)
    scripts = (["vendor/h3-js.umd.js"] if name == "map" else []) + ["common.js", f"{name}.js"]
    tags = "".join(f'<script src="/dashboard/static/{s}" defer></script>' for s in scripts)
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · h3pipe</title>
<link rel="icon" href="/dashboard/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/dashboard/static/dashboard.css">{tags}
</head><body class="page-{name}">
<header><a class="brand" href="/dashboard">h3pipe</a><nav>{nav}</nav>
<form id="token" autocomplete="off"><span id="token-state"></span>
<input id="token-input" type="password" placeholder="bearer token" aria-label="bearer token">
<button type="submit">Use</button><button type="button" id="token-forget">Forget</button>
</form></header>
<div id="message" role="alert" hidden></div>
<main id="main" data-page="{name}"><h1 id="title">{escape(title)}</h1>
<p class="intro">{escape(intro)}</p></main>
</body></html>
"""
    return HTMLResponse(text, headers={"Content-Security-Policy": _policy(settings),
                                       "Cache-Control": "no-cache"})


def _policy(settings: ServerSettings) -> str:
    """This server only; the basemap's host for images when one is configured. A run's
    report (shown in a frame) brings its own inline styles and data: images."""
    images = "'self' data: blob:"
    if settings.basemap:
        images += f" {basemap_origin(settings.basemap)}"
    return ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src {images}; connect-src 'self'; frame-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'self'")


# A host written out: a name or an IPv4 address, or an IPv6 one in brackets; a port.
_HOST = re.compile(r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def basemap_origin(template: str) -> str:
    """Where a basemap's tiles come from (``scheme://host[:port]``): the one origin the
    pages may load images from besides this server, and what ``h3pipe serve`` says at
    start. The schema lets any http(s) URL through; the host goes into every page's
    Content-Security-Policy, so a ``{s}`` in it (which the map does not fill in: its
    tiles would all be refused), a user and password, or a ``;`` (which would add
    directives to the policy) is refused, as is a template without ``{z}``, ``{x}`` and
    ``{y}`` (every tile the same picture)."""
    parts = urlsplit(template)
    host = parts.scheme in ("http", "https") and _HOST.fullmatch(parts.netloc)
    missing = [k for k in ("{z}", "{x}", "{y}") if k not in template]
    if not host or missing:
        why = (f"it lacks {' and '.join(missing)}" if host else "its host must be one name "
               "or address (and a port) with no {s}, user, password or ';'")
        raise ConfigError(f"server: basemap '{template}' is not a tile URL template the "
                          f"map can use: {why}",
                          hint="write it as, e.g., basemap: "
                               "https://tiles.example.org/{z}/{x}/{y}.png in h3pipe.yaml")
    return f"{parts.scheme}://{parts.netloc}"


def _settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


@router.get("/dashboard", include_in_schema=False)
def runs_page(request: Request) -> HTMLResponse:
    return page("runs", _settings(request))


@router.get("/dashboard/runs/{run_id}", include_in_schema=False)
def run_page(request: Request, run_id: str) -> HTMLResponse:
    return page("run", _settings(request))


@router.get("/dashboard/sources", include_in_schema=False)
def sources_page(request: Request) -> HTMLResponse:
    return page("sources", _settings(request))


@router.get("/dashboard/pipelines", include_in_schema=False)
def pipelines_page(request: Request) -> HTMLResponse:
    return page("pipelines", _settings(request))


@router.get("/dashboard/maps", include_in_schema=False)
def maps_page(request: Request) -> HTMLResponse:
    return page("maps", _settings(request))


@router.get("/dashboard/map/{dataset}", include_in_schema=False)
def map_page(request: Request, dataset: str) -> HTMLResponse:
    return page("map", _settings(request))


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> FileResponse:
    """The dashboard's icon, where browsers look for one whatever the page says."""
    return static("favicon.svg")


@router.get("/dashboard/static/{name:path}", include_in_schema=False)
def static(name: str) -> FileResponse:
    """A script, style or licence of the dashboard (package data)."""
    found = FILES.get(name)
    if found is None:
        raise NotFound(f"the dashboard has no file '{name}'")
    return FileResponse(found, media_type=TYPES.get(found.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "no-cache"})


# -- the runs, live -------------------------------------------------------------------------

class Feed:
    """The runs as the dashboard shows them (or one run): read from the store at most
    every :data:`POLL` seconds however many pages listen, with a version that changes
    when they do."""

    def __init__(self, project: Project, run_id: str | None = None) -> None:
        self.project, self.run_id = project, run_id
        self.version = 0
        self.runs: list[dict[str, Any]] = []
        self.error: str | None = None
        self._read_at = -POLL
        self._lock = asyncio.Lock()

    async def current(self) -> tuple[int, list[dict[str, Any]], str | None]:
        async with self._lock:
            if time.monotonic() - self._read_at >= POLL:
                runs, error = await run_in_threadpool(self._read)
                self._read_at = time.monotonic()
                if (runs, error) != (self.runs, self.error):
                    self.runs, self.error, self.version = runs, error, self.version + 1
        return self.version, self.runs, self.error

    def _read(self) -> tuple[list[dict[str, Any]], str | None]:
        try:
            if self.run_id is not None:
                return [shown(self.project.run_record(self.run_id))], None
            rows = self.project.runs(limit=RUNS_SHOWN)
            return [shown(self._detailed(r)) for r in rows], None
        except H3PipeError as exc:  # no such run; or the store is away for a moment
            return [], str(exc)

    def _detailed(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """A listed run; one still going read with its steps, which its progress needs."""
        if row.get("status") not in ("running", "pending") or row.get("dead"):
            return row
        try:
            return self.project.run_record(str(row["run_id"]))
        except NotFound:  # removed since it was listed
            return row


def shown(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run as the dashboard shows it: its record's facts and its job status."""
    job = job_status(record)
    return {"run_id": record["run_id"], "pipeline": record.get("pipeline_id"),
            "dataset": record.get("dataset"), "scope": record.get("scope_label"),
            "resolution": record.get("resolution"), "cells": record.get("cells"),
            "state": record.get("status"), "status": job["status"],
            "progress": job.get("progress"), "message": job.get("message"),
            "created": job.get("created"), "started": job.get("started"),
            "finished": job.get("finished"), "updated": job.get("updated"),
            "ended": job["status"] in ENDED}


_made = threading.Lock()


def kept(request: Request, name: str) -> OrderedDict[Any, Any]:
    """A cache of this server's (on ``app.state``), made when first asked for."""
    state = request.app.state
    with _made:
        found = getattr(state, name, None)
        if found is None:
            found = OrderedDict()
            setattr(state, name, found)
        return found


def feed(request: Request, run_id: str | None) -> Feed:
    """The server's feed of every run (or of one), made when first asked for."""
    feeds = kept(request, "run_feeds")
    with _made:
        if run_id not in feeds:
            if len(feeds) > 256:  # followed runs long gone: start again
                feeds.clear()
            feeds[run_id] = Feed(request.app.state.project, run_id)
        return feeds[run_id]


@router.get("/events/runs", dependencies=[Depends(auth.reader)], tags=["dashboard"])
async def run_events(request: Request, run: Annotated[str | None, Query(
        description="follow this run only (its id, a unique prefix or 'latest')")] = None
                     ) -> StreamingResponse:
    """Server-sent events: ``runs`` with the runs shown (newest first, or the one run
    asked for) at once and again each time one changes (the store is read at most twice
    a second); ``missing`` when they cannot be read (no such run), with the error's
    words. The stream ends after a minute; a page reconnects."""
    source = feed(request, run)
    return StreamingResponse(_events(request, source), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})


async def _events(request: Request, source: Feed) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    seen, quiet, ends = -1, time.monotonic(), time.monotonic() + STREAM
    while time.monotonic() < ends and not _stopping():
        version, runs, error = await source.current()
        if version != seen:
            seen, quiet = version, time.monotonic()
            kind, data = ("missing", {"detail": error}) if error else ("runs", {"runs": runs})
            yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
        elif time.monotonic() - quiet > KEEPALIVE:
            quiet = time.monotonic()
            yield ": still here\n\n"
        await asyncio.sleep(POLL)
        if await request.is_disconnected():
            return


def _stopping() -> bool:
    """Whether the server was asked to stop. uvicorn waits for every open response before
    it stops, and an event stream never ends by itself; uvicorn's handler of SIGTERM and
    SIGINT is a method of its server, which says whether it should exit."""
    handler = signal.getsignal(signal.SIGTERM)
    return bool(getattr(getattr(handler, "__self__", None), "should_exit", False))


# -- a run's report -------------------------------------------------------------------------

@router.get("/reports/{run_id}", dependencies=[Depends(auth.reader)], tags=["dashboard"],
            response_class=HTMLResponse)
def report(request: Request, run_id: str) -> HTMLResponse:
    """The run's HTML report, as ``h3pipe runs report`` writes it (made again when the
    run has moved on): self-contained, no script."""
    project: Project = request.app.state.project
    record = project.run_record(run_id)
    job = job_status(record)
    key = (record["run_id"], job["status"], job.get("progress"), job.get("updated"))
    reports = kept(request, "run_reports")
    with _made:
        text = reports.get(key)
    if text is None:
        with tempfile.TemporaryDirectory(prefix="h3pipe-report-") as folder:
            out = Path(folder) / "report.html"
            project.report(record["run_id"], out)
            text = out.read_text(encoding="utf-8")
        with _made:
            reports[key] = text
            while len(reports) > REPORTS_KEPT:
                reports.popitem(last=False)
    return HTMLResponse(text, headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                   "img-src data:; sandbox",
        "Cache-Control": "no-store"})


__all__ = ["FILES", "Feed", "basemap_origin", "page", "router", "shown"]
