"""Errors as RFC 9457 problem details (``application/problem+json``): the CLI's words
(``detail``, ``hint``) and exit code, and an HTTP status chosen by the error's class and
exit code (:func:`status_of`)."""

from __future__ import annotations

from typing import Any

from h3pipe.errors import (
    ConfigError,
    H3PipeError,
    Locked,
    MissingExtra,
    NotFound,
    StoreFull,
    TooManyNulls,
    ValidationFailed,
)

PROBLEM = "application/problem+json"

# The most specific class first; then by exit code (69 = a service is down).
_BY_CLASS: tuple[tuple[type[H3PipeError], int], ...] = (
    (NotFound, 404), (ValidationFailed, 422), (TooManyNulls, 422), (Locked, 409),
    (StoreFull, 507), (MissingExtra, 501), (ConfigError, 400),
)
_BY_EXIT = {69: 503, 75: 409, 78: 501}
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
          415: "Unsupported Media Type", 422: "Unprocessable Content",
          500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
          507: "Insufficient Storage"}


def status_of(exc: H3PipeError) -> int:
    for cls, status in _BY_CLASS:
        if isinstance(exc, cls):
            return status
    return _BY_EXIT.get(exc.exit_code, 500)


def of_error(exc: H3PipeError, instance: str) -> tuple[int, dict[str, Any]]:
    """The status and body of an h3pipe error: ``detail`` is the message the CLI prints
    after ``error:``, ``exit_code`` the CLI's."""
    status = status_of(exc)
    body = problem(status, str(exc), instance, exit_code=exc.exit_code)
    problems = getattr(exc, "problems", None)
    if problems:
        body["problems"] = [{"file": p.file, "line": p.line, "path": p.path,
                             "message": p.message} for p in problems]
    return status, body


def problem(status: int, detail: str, instance: str, **more: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
            "detail": detail, "instance": instance, **more}
