"""The ASGI application: :func:`create_app`. One :class:`~h3pipe.api.Project` serves every
request; runs go to :class:`~h3pipe.server.jobs.Jobs` (warm local workers or the queue).
Errors answer as problem details (:mod:`.problems`); bodies are bounded; CORS is closed
unless origins are configured."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from h3pipe.about import version
from h3pipe.api import Project
from h3pipe.errors import H3PipeError
from h3pipe.server import auth, catalog, dashboard, maps, ogc, problems
from h3pipe.server.jobs import Jobs
from h3pipe.server.settings import ServerSettings


def create_app(project: Project, settings: ServerSettings | None = None, *,
               workers: int = 2, queue: str | None = None) -> FastAPI:
    """The server of ``project``: ``workers`` warm local worker processes (at most that
    many runs at once), or the queue at ``queue``."""
    settings = settings or ServerSettings.of(project.read_settings(), project.root)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.jobs = Jobs.start(project, workers=workers, queue=queue)
        try:
            yield
        finally:
            app.state.jobs.close()

    app = FastAPI(title="h3pipe", version=version(), lifespan=lifespan,
                  description="OGC API - Processes and the catalog of an h3pipe project.")
    app.state.project, app.state.settings = project, settings
    for module in (ogc, catalog, maps, dashboard):
        app.include_router(module.router)
    _handle_errors(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(auth.RefuseUrlTokens)  # outermost: before any route or page
    return app


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(H3PipeError)
    async def h3pipe_error(request: Request, exc: H3PipeError) -> JSONResponse:
        status, body = problems.of_error(exc, request.url.path)
        return _problem(status, body)

    app.add_exception_handler(ogc.OgcProblem, ogc.answer)  # OGC's exception types

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        body = problems.problem(exc.status_code, str(exc.detail), request.url.path)
        return _problem(exc.status_code, body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                          for e in exc.errors()[:5])
        return _problem(400, problems.problem(400, f"bad request: {where}", request.url.path))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answer; the client learns only the kind.
        return _problem(500, problems.problem(500, f"internal error: {type(exc).__name__} "
                                              "(a bug: the server's log has the traceback; "
                                              "please report it)", request.url.path))


def _problem(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
             ) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=problems.PROBLEM,
                        headers=headers)


class BodyLimit:
    """413 for a request body over ``limit`` bytes, whether it says its length or not."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge(413, _too_large(self.limit))
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = problems.problem(413, _too_large(self.limit), scope.get("path", ""))
        await _problem(413, body)(scope, receive, send)


def _too_large(limit: int) -> str:
    return (f"the request body is over {limit} bytes, this server's limit (server: "
            "max_body_bytes in h3pipe.yaml)")


class _TooLarge(HTTPException):
    """An HTTPException, so FastAPI passes it on from reading a body (any other error
    there becomes its 400 'There was an error parsing the body') and the app says 413."""
