"""Who may call: bearer tokens (``Authorization: Bearer TOKEN``, never in a URL) with a
``read`` or a ``run`` scope (run includes read). Without configured tokens every request
may read and run. :func:`reader` and :func:`runner` are the routes' dependencies."""

from __future__ import annotations

from fastapi import HTTPException, Request

from h3pipe.server.settings import ServerSettings


def _scope(request: Request) -> str:
    settings: ServerSettings = request.app.state.settings
    if settings.open:
        return "run"
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "this server needs a bearer token: send "
                            "'Authorization: Bearer TOKEN'",
                            headers={"WWW-Authenticate": 'Bearer realm="h3pipe"'})
    scope = settings.scope_of(token.strip())
    if scope is None:
        raise HTTPException(401, "the bearer token is not one of this server's",
                            headers={"WWW-Authenticate":
                                     'Bearer realm="h3pipe", error="invalid_token"'})
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
                                     'Bearer realm="h3pipe", error="insufficient_scope"'})
    return scope
