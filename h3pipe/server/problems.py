"""Errors as RFC 9457 problem details (``application/problem+json``): the CLI's words
(``detail``, ``hint``) and exit code, and an HTTP status chosen by the error's class and
exit code (:func:`status_of`). :func:`safe` makes any answer JSON a client may see: every
password masked, as the CLI masks every line it prints."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from h3pipe.errors import (
    ConfigError,
    H3PipeError,
    Locked,
    MissingExtra,
    NotFound,
    NotRunning,
    RemoteReadError,
    SourceError,
    StoreFull,
    TooManyNulls,
    ValidationFailed,
)
from h3pipe.masking import MASK, scrub

PROBLEM = "application/problem+json"

# The most specific class first (a subclass before its base); then by exit code. The
# table is documented in docs/security.md ("Errors"): change both together.
_BY_CLASS: tuple[tuple[type[H3PipeError], int], ...] = (
    (NotFound, 404),            # no run, source, pipeline or dataset of that name
    (NotRunning, 409),          # cancel of a run that has ended (or whose process is gone)
    (ValidationFailed, 422),    # a document (a posted source, the project) is invalid
    (ConfigError, 400),         # the request's input: a bad scope, option or id
    (RemoteReadError, 502),     # a remote file or STAC API failed: worth a retry
    (SourceError, 422),         # the data cannot serve this request (none in the scope)
    (TooManyNulls, 422),        # the run worked, its data does not cover the scope
    (Locked, 409),              # another process runs it now
    (StoreFull, 507),           # the store's disk is full
    (MissingExtra, 501),        # this install lacks a part
)
# 69 (EX_UNAVAILABLE): the store or the broker is down; the same request works later.
_BY_EXIT = {69: 503, 75: 409, 78: 501}
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
          415: "Unsupported Media Type", 422: "Unprocessable Content",
          500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
          503: "Service Unavailable", 507: "Insufficient Storage"}


def status_of(exc: H3PipeError) -> int:
    for cls, status in _BY_CLASS:
        if isinstance(exc, cls):
            return status
    return _BY_EXIT.get(exc.exit_code, 500)


def of_error(exc: H3PipeError, instance: str) -> tuple[int, dict[str, Any]]:
    """The status and body of an h3pipe error: ``detail`` is the message the CLI prints
    after ``error:`` (its hint included, as there), ``hint`` the hint alone, ``exit_code``
    the CLI's, ``error`` the class; a validation failure lists every ``problems`` entry."""
    status = status_of(exc)
    body = problem(status, str(exc), instance, exit_code=exc.exit_code,
                   error=type(exc).__name__)
    if exc.hint:
        body["hint"] = scrub(exc.hint)
    problems = getattr(exc, "problems", None)
    if problems:
        body["problems"] = safe([{"file": p.file, "line": p.line, "path": p.path,
                                  "message": p.message, "text": p.format()}
                                 for p in problems])
    return status, body


def problem(status: int, detail: str, instance: str, **more: Any) -> dict[str, Any]:
    """A problem document; ``detail`` masked of passwords (a library's error may quote a
    store's or broker's address)."""
    return {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
            "detail": scrub(detail), "instance": instance, **more}


def safe(value: Any) -> Any:
    """``value`` as JSON a client may be shown: strings masked of passwords (and the value
    of any key that names a secret), dates as ISO 8601 text, NaN and infinities as the
    strings ``nan``, ``inf`` and ``-inf`` (JSON has no such numbers)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _safe_item(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [safe(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return scrub(str(value))


def _safe_item(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return safe(value)
    masked = scrub(value)
    # {"password": "x"} says its secret by its key alone: mask it as scrub masks the
    # same pair written 'password=x'.
    if masked == value and value and scrub(f"{key}={value}") != f"{key}={value}":
        return MASK
    return masked
