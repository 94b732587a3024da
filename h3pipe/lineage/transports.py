"""Where OpenLineage events go: :class:`FileTransport` (JSON lines, appended),
:class:`HttpTransport` (a POST per event), and :class:`Emitter`, which sends each event to
each and turns a failure into one warning.

Plain ``json`` and ``urllib``, not the ``openlineage-python`` client: an event is one
small JSON document, and the client would bring attrs, requests, a YAML config reader and
its own environment parsing for what is a POST with a timeout. Events are built against
the published spec (:mod:`h3pipe.lineage.events`), so any OpenLineage backend reads them.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from h3pipe import masking
from h3pipe.about import version
from h3pipe.lineage.settings import LineageSettings


class Transport(Protocol):
    shown: str  # where it sends, as it may be printed (no password)

    def send(self, body: bytes) -> None:
        """Deliver one event (a JSON document on one line); raise on failure."""
        ...


class FileTransport:
    """Events appended to a file, one JSON document a line. Each line is written with one
    ``write`` on a descriptor opened with ``O_APPEND``, under an exclusive ``flock``: lines
    of several processes (queue workers on one machine) never interleave, and a reader
    sees whole lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shown = str(path)

    def send(self, body: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(body + b"\n")
            while view:  # one write, unless the disk fills mid-line
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)  # and the lock with it


class HttpTransport:
    """Events POSTed as JSON, as the OpenLineage HTTP API takes them (Marquez:
    ``POST /api/v1/lineage``). Each POST is given ``timeout`` seconds in all, however the
    server dribbles its answer: it runs on a thread this one stops waiting for."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 2.0) -> None:
        self.url = url
        self.shown = masking.shown(url)
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json",
                        "User-Agent": f"h3pipe/{version()}"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def send(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, headers=self.headers,
                                         method="POST")
        outcome: dict[str, BaseException] = {}

        def post() -> None:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    answer.read(65536)
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc

        thread = threading.Thread(target=post, name="h3pipe-lineage", daemon=True)
        thread.start()
        thread.join(self.timeout)
        error = outcome.get("error")
        if thread.is_alive() or isinstance(error, TimeoutError) or (
                isinstance(error, urllib.error.URLError)
                and isinstance(error.reason, TimeoutError)):
            raise TimeoutError(f"no answer within {self.timeout:g} s")
        if error is not None:
            raise error


class Emitter:
    """Sends events to its transports. A transport that fails once (down, refusing,
    slow past its timeout, a full disk) is warned about in one line and skipped for the
    rest of this emitter's life, so lineage costs a run at most one timeout: it never
    fails a run."""

    def __init__(self, transports: list[Transport], warn: Callable[[str], None]) -> None:
        self.transports = transports
        self.warn = warn
        self._down: set[int] = set()

    @classmethod
    def of(cls, settings: LineageSettings, warn: Callable[[str], None]) -> Emitter:
        transports: list[Transport] = []
        if settings.file is not None:
            transports.append(FileTransport(settings.file))
        if settings.url is not None:
            target = settings.url.rstrip("/") + "/" + settings.endpoint.lstrip("/")
            transports.append(HttpTransport(target, api_key=settings.api_key,
                                            timeout=settings.timeout))
        return cls(transports, warn)

    def emit(self, event: Mapping[str, Any]) -> None:
        # The events are built from masked names already; scrubbing the text as well
        # means a secret that reached one by another road is still never sent.
        body = masking.scrub(json.dumps(event, separators=(",", ":"))).encode()
        for n, transport in enumerate(self.transports):
            if n in self._down:
                continue
            try:
                transport.send(body)
            except Exception as exc:
                self._down.add(n)
                self.warn(f"lineage: cannot send events to {transport.shown} ({_why(exc)}); "
                          "this run sends it no more")


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        text = getattr(reason, "strerror", None) or str(reason)
        return masking.scrub(text)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return masking.scrub(str(exc) or type(exc).__name__)


__all__ = ["Emitter", "FileTransport", "HttpTransport", "Transport"]
