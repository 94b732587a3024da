"""Remote reads that outlast a flaky server: GDAL's HTTP settings, :func:`retrying`, and
:func:`diagnose`, which asks the server itself what went wrong.

A failed HTTP read reaches us from GDAL as "not recognized as being in a supported file
format" or "Read failed", whatever the server said. So when an open or read of an
``http(s)`` file fails, two small requests of our own (its first and last byte) tell a
server in trouble (429, 5xx, refused, reset, timed out: wait and try again) from a file
that is not there (404, 403: fail now) from a file the server serves but GDAL cannot read
(corrupt, not a raster: fail now, saying so). Each request is already retried by GDAL
(``GDAL_HTTP_MAX_RETRY``), so our attempts come on top of those, and a task's retries
(the pipeline's ``retries:``) on top of ours.
"""

from __future__ import annotations

import ctypes
import glob
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TypeVar
from urllib.parse import urlsplit

from h3pipe.errors import RemoteReadError, SourceError

T = TypeVar("T")

# Request-level retries by GDAL on 429/500/502/503/504, resets and timeouts, with its own
# backoff (the delay roughly doubles: 0.5, 1, 2, 4, 8 s). The timeouts make a server that
# stops answering an error that is retried, not a hang.
GDAL_HTTP_SETTINGS = {
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
    "GDAL_HTTP_TIMEOUT": "120",
}
for _key, _value in GDAL_HTTP_SETTINGS.items():
    os.environ.setdefault(_key, _value)

# Our attempts at one open or read, after GDAL's own; the wait before the next one starts at
# BACKOFF seconds and doubles. H3PIPE_REMOTE_BACKOFF shortens it (tests).
ATTEMPTS = 3
BACKOFF_S = 1.0
PROBE_TIMEOUT_S = 10.0
# Statuses that say "later", not "never".
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_http(href: str) -> bool:
    bare = href.removeprefix("/vsicurl/")
    return bare.startswith(("http://", "https://"))


def server_of(href: str) -> str:
    return urlsplit(href.removeprefix("/vsicurl/")).netloc or href


@dataclass(frozen=True)
class Diagnosis:
    """What the server said to one request of ours for a file."""

    reason: str  # "HTTP 503 Service Unavailable", "connection refused", ...
    status: int | None = None
    transient: bool = False  # worth another attempt later
    served: bool = False  # the server answered with the file's bytes


def diagnose(url: str) -> Diagnosis:
    """Ask for the first and the last byte of ``url`` (signed, if it needs to be) and say
    what came back: the header and the blocks may fare differently."""
    first = _probe(url, "bytes=0-0")
    return _probe(url, "bytes=-1") if first.served else first


def _probe(url: str, byte_range: str) -> Diagnosis:
    request = urllib.request.Request(url.removeprefix("/vsicurl/"),
                                     headers={"Range": byte_range})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            response.read(1)
            return Diagnosis(f"HTTP {response.status}", response.status, served=True)
    except urllib.error.HTTPError as exc:
        return Diagnosis(f"HTTP {exc.code} {_phrase(exc.code)}".rstrip(), exc.code,
                         transient=exc.code in TRANSIENT_STATUS)
    except urllib.error.URLError as exc:
        return _network(exc.reason)
    except OSError as exc:  # TimeoutError, resets
        return _network(exc)


def explain(exc: BaseException) -> Diagnosis | None:
    """What an HTTP client's exception (requests, urllib, urllib3, pystac-client) says of
    the server, read from the exceptions' types and status codes; None when it is not an
    HTTP failure."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "status_code", None) or (
            seen.code if isinstance(seen, urllib.error.HTTPError) else None)
        if isinstance(code, int):
            return Diagnosis(f"HTTP {code} {_phrase(code)}".rstrip(), code,
                             transient=code in TRANSIENT_STATUS)
        inner = _network_cause(seen)
        if inner is not None:
            return _network(inner)
        seen = seen.__cause__ or seen.__context__
    return None


def _network_cause(exc: BaseException) -> BaseException | None:
    """The OS-level cause inside a client library's connection error, if it is one."""
    try:
        import requests
        import urllib3.exceptions as u3
    except ImportError:  # pragma: no cover - both come with pystac-client
        return None
    if isinstance(exc, (u3.MaxRetryError, requests.exceptions.ConnectionError,
                        requests.exceptions.Timeout, u3.NewConnectionError,
                        u3.TimeoutError, u3.ProtocolError)):
        cause: BaseException = exc
        while True:
            nxt = getattr(cause, "reason", None)
            if not isinstance(nxt, BaseException):
                nxt = (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException)
                       else cause.__cause__ or cause.__context__)
            if nxt is None or nxt is cause:
                return cause
            if isinstance(nxt, (ConnectionRefusedError, ConnectionResetError, TimeoutError,
                                socket.gaierror)):
                return nxt
            cause = nxt
    if isinstance(exc, (ConnectionRefusedError, ConnectionResetError, TimeoutError)):
        return exc
    return None


def _network(reason: object) -> Diagnosis:
    if isinstance(reason, ConnectionRefusedError):
        return Diagnosis("connection refused", transient=True)
    if isinstance(reason, ConnectionResetError):
        return Diagnosis("connection reset", transient=True)
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return Diagnosis("no answer (timed out)", transient=True)
    if isinstance(reason, socket.gaierror):
        return Diagnosis("unknown host", transient=True)
    text = " ".join(str(reason).split()) or type(reason).__name__
    return Diagnosis(f"network error: {text}", transient=True)


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def retrying(call: Callable[[], T], *, href: str, who: str, action: str,
             errors: tuple[type[BaseException], ...], reason: Callable[[BaseException], str],
             url: Callable[[], str] | None = None, forget: Callable[[], None] | None = None,
             gdal_path: str | None = None) -> T:
    """``call()``, tried again while a remote ``href`` fails for a reason that passes.

    Only ``errors`` count as failures (GDAL's, through rasterio or pyogrio); ``reason(exc)``
    is how they read. ``url()`` gives the address to probe (a signed one), ``forget()``
    drops what the caller keeps open, and GDAL's memory of the file (``gdal_path``) is
    cleared before each new attempt: GDAL remembers a failed file as missing. Local and
    non-HTTP files get one attempt; their errors are the caller's to word.
    """
    if not is_http(href):
        return call()
    shown = href.removeprefix("/vsicurl/")
    delay = float(os.environ.get("H3PIPE_REMOTE_BACKOFF", BACKOFF_S))
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except errors as exc:
            if forget is not None:
                forget()
            clear_gdal_cache(gdal_path or "/vsicurl/" + href.removeprefix("/vsicurl/"))
            found = diagnose(url() if url is not None else href)
            last = attempt == ATTEMPTS
            if found.served:
                if last:  # the server hands out the file, GDAL cannot read it: the file
                    raise SourceError(f"{who}: cannot {action} '{shown}': {reason(exc)}",
                                      hint="the server serves the file but it is not a "
                                      "readable raster (corrupt or truncated?)") from exc
                continue  # it went away (a transient failure inside GDAL's own retries)
            if not found.transient:
                raise SourceError(f"{who}: cannot {action} '{shown}': {found.reason} from "
                                  f"{server_of(href)}",
                                  hint="check the URL and that the file is public or "
                                  "signed") from exc
            if last:
                raise RemoteReadError(
                    f"{who}: cannot {action} '{shown}': {found.reason} from "
                    f"{server_of(href)} after {ATTEMPTS} attempts (each request retried "
                    f"{os.environ.get('GDAL_HTTP_MAX_RETRY', '0')} times)",
                    hint="the server failed or is unreachable, not the data: run again "
                    "later (completed tasks are kept)") from exc
            time.sleep(delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


_GDAL_LIB: ctypes.CDLL | None | bool = None


def clear_gdal_cache(path: str) -> None:
    """Make rasterio's GDAL forget what it learnt of ``path`` (that it is missing, its
    size, cached bytes). rasterio does not expose VSICurlPartialClearCache; its bundled
    libgdal, already loaded, does."""
    global _GDAL_LIB
    if _GDAL_LIB is None:
        _GDAL_LIB = False
        try:
            import rasterio

            libs = os.path.dirname(rasterio.__file__) + ".libs"
            found = sorted(glob.glob(os.path.join(libs, "libgdal*.so*")))
            lib = ctypes.CDLL(found[0] if found else "libgdal.so")
            lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
            lib.VSICurlPartialClearCache.restype = None
            _GDAL_LIB = lib
        except (OSError, AttributeError, IndexError):
            pass
    if _GDAL_LIB:
        _GDAL_LIB.VSICurlPartialClearCache(path.encode())  # type: ignore[union-attr]


__all__ = ["Diagnosis", "clear_gdal_cache", "diagnose", "explain", "is_http", "retrying",
           "server_of"]
