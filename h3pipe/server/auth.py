"""Who may call: bearer tokens (``Authorization: Bearer TOKEN``, never in a URL) with a
``read`` or a ``run`` scope (run includes read). Without configured tokens every request
may read and run. :func:`reader` and :func:`runner` are the routes' dependencies;
:class:`RefuseUrlTokens` turns away, before any route, a request that carries a token in
its query string."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from h3pipe.server import problems
from h3pipe.server.settings import URL_TOKENS, ServerSettings

REALM = 'Bearer realm="h3pipe"'


def _scope(request: Request) -> str:
    _refuse_url_token(request.url.query)
    settings: ServerSettings = request.app.state.settings
    if settings.open:
        return "run"
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        # (no colon after 'token': masking would take the next word for a password)
        raise HTTPException(401, "this server needs a bearer token; send "
                            "'Authorization: Bearer TOKEN'",
                            headers={"WWW-Authenticate": REALM})
    scope = settings.scope_of(token.strip())
    if scope is None:
        raise HTTPException(401, "the bearer token is not one of this server's",
                            headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
    return scope


def reader(request: Request) -> str:
    """Any known token (or none needed)."""
    return _scope(request)


def runner(request: Request) -> str:
    """A token with the ``run`` scope: to run, cancel, register or deactivate."""
    scope = _scope(request)
    if scope != "run":
        raise HTTPException(403, "this token may only read; running, cancelling and "
                            "registering need a token with the 'run' scope",
                            headers={"WWW-Authenticate":
                                     f'{REALM}, error="insufficient_scope", scope="run"'})
    return scope


def url_token(query: str) -> str | None:
    """The name of a query parameter that carries a token (``token``, ``access_token``,
    in any case), None when there is none."""
    names = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
    return next((name for name in URL_TOKENS if name in names), None)


def _refuse_url_token(query: str) -> None:
    name = url_token(query)
    if name is not None:
        raise HTTPException(400, _URL_TOKEN.format(name=name))


# The token is neither read nor repeated: a URL ends up in proxies' and browsers' logs
# and histories, so one sent there must be replaced, and the answer says so.
_URL_TOKEN = ("a token is never accepted in a URL (query parameter '{name}'): URLs are "
              "written to logs and browser histories. Send 'Authorization: Bearer TOKEN' "
              "instead, and replace this token (treat it as leaked)")


class RefuseUrlTokens:
    """400 for any request with a token in its query string, before a route (or a page
    without a token of its own) sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        name = url_token(scope.get("query_string", b"").decode("latin-1"))
        if name is None:
            return await self.app(scope, receive, send)
        body = problems.problem(400, _URL_TOKEN.format(name=name), scope.get("path", ""))
        answer = JSONResponse(body, status_code=400, media_type=problems.PROBLEM)
        await answer(scope, receive, send)
