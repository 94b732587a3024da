"""A local HTTP file server that behaves like blob storage, :class:`TileServer`, for tests and
benchmarks.

It answers ``Range`` requests (one range with 206, several with ``multipart/byteranges``)
and HEAD, over HTTP/1.1 keep-alive as cloud storage does, and can be made slow or unreliable:

* ``latency``: seconds added to every request (a cloud round trip);
* ``bandwidth``: bytes per second shared by every connection (a capped link);
* ``fail_share`` of GETs (drawn from ``random.Random(seed)``, so a run is repeatable) answered
  with ``fail_status`` (503, 429, 500...) or, with ``fail_status="reset"``, a connection closed
  without an answer;
* ``fail_match``: only GETs of paths matching this pattern are spoiled (``"*.tif"``);
* ``fail_from``: only GETs whose range starts at or past this byte are spoiled (0: all), so a
  file's header reads well and its blocks do not;
* ``stop()``: the server is down and its port refuses connections.

It counts requests, GETs, failures it injected and body bytes sent (:attr:`TileServer.stats`).
It runs in a daemon thread on 127.0.0.1 with a free port, or as a process:
``python tests/tileserver.py DIR [--latency 0.05] [--bandwidth 100e6] [--fail-share 0.1]``,
which prints its base URL on the first line and its counters as JSON on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import fnmatch
import http.server
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType


@dataclass
class Stats:
    """What the server saw since it started (or since :meth:`TileServer.reset_stats`)."""

    requests: int = 0
    gets: int = 0
    heads: int = 0
    ranges: int = 0  # byte ranges asked for (a multi-range GET counts each)
    failures: int = 0  # answers spoiled on purpose
    bytes_sent: int = 0  # body bytes of successful answers
    duplicate_bytes: int = 0  # bytes sent before, of the same file (only with keep_log)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _overlap(seen: list[tuple[int, int]], start: int, end: int) -> int:
    """Bytes of [start, end] already in ``seen`` (inclusive ranges, possibly overlapping)."""
    covered = 0
    for a, b in _union(seen):
        lo, hi = max(a, start), min(b, end)
        if lo <= hi:
            covered += hi - lo + 1
    return covered


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class _Pace:
    """A link of ``rate`` bytes/s shared by every connection: each chunk books its slot."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._free_at = 0.0

    def wait(self, nbytes: int) -> None:
        if not self.rate:
            return
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + nbytes / self.rate
            until = self._free_at
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class TileServer:
    """Serves ``root`` over HTTP on 127.0.0.1; a context manager (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], *, latency: float = 0.0,
                 bandwidth: float | None = None, fail_share: float = 0.0,
                 fail_status: int | str = 503, fail_match: str = "*", fail_from: int = 0,
                 seed: int = 0, port: int = 0, keep_log: bool = False) -> None:
        self.root = Path(root)
        self.latency = latency
        self.fail_share = fail_share
        self.fail_status = fail_status
        self.fail_from = fail_from
        self.fail_match = fail_match
        # (path, start, end) of every range served, when asked: what a reader fetched twice.
        self.log: list[tuple[str, int, int]] | None = [] if keep_log else None
        self.stats = Stats()
        self._pace = _Pace(bandwidth)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._port = port
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life -----------------------------------------------------------------------------

    def start(self) -> TileServer:
        handler = _handler_for(self)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Down: the port stops listening (connections are refused) until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TileServer:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def url_of(self, name: str | os.PathLike[str]) -> str:
        """The URL of a file under ``root`` (a relative name, or a path inside ``root``)."""
        rel = Path(name)
        if rel.is_absolute():
            rel = rel.relative_to(self.root)
        return f"{self.url}/{rel.as_posix()}"

    def reseed(self, seed: int) -> None:
        """Start the sequence of spoiled GETs again, from ``seed``."""
        with self._lock:
            self._rng.seed(seed)

    def reset_stats(self) -> Stats:
        with self._lock:
            old, self.stats = self.stats, Stats()
            if self.log is not None:
                self.log = []
        return old

    def _served(self, name: str, ranges: list[tuple[int, int]]) -> None:
        if self.log is None:
            return
        with self._lock:
            seen = [(a, b) for n, a, b in self.log if n == name]
            self.stats.duplicate_bytes += sum(_overlap(seen, a, b) for a, b in ranges)
            self.log.extend((name, a, b) for a, b in ranges)

    # -- what handlers ask --------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                setattr(self.stats, key, getattr(self.stats, key) + value)

    def _spoil(self, path: str, start: int) -> bool:
        with self._lock:
            return (self.fail_share > 0 and start >= self.fail_from
                    and fnmatch.fnmatch(path, self.fail_match)
                    and self._rng.random() < self.fail_share)


def _handler_for(server: TileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(_Handler):
        owner = server

    return Handler


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: TileServer
    protocol_version = "HTTP/1.1"  # keep-alive, as blob storage; GDAL reuses connections

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _file(self) -> Path | None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (self.owner.root / rel).resolve()
        if self.owner.root.resolve() not in path.parents or not path.is_file():
            return None
        return path

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        owner = self.owner
        owner._count(requests=1, heads=1)
        time.sleep(owner.latency)
        path = self._file()
        if path is None:
            return self._empty(404)
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        owner = self.owner
        owner._count(requests=1, gets=1)
        time.sleep(owner.latency)
        path = self._file()
        size = path.stat().st_size if path is not None else 0
        ranges = _parse_ranges(self.headers.get("Range"), size)
        if owner._spoil(self.path.split("?", 1)[0], ranges[0][0] if ranges else 0):
            owner._count(failures=1)
            if owner.fail_status == "reset":
                # No answer at all: the client sees the connection reset or closed.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            return self._empty(int(owner.fail_status))
        if path is None:
            return self._empty(404)
        if ranges is None:
            ranges, status = [(0, size - 1)], 200
        elif not ranges:
            return self._empty(416, {"Content-Range": f"bytes */{size}"})
        else:
            status = 206
        owner._count(ranges=len(ranges))
        with path.open("rb") as f:
            parts = []
            for start, end in ranges:
                f.seek(start)
                parts.append(f.read(end - start + 1))
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        if len(ranges) == 1:
            body = parts[0]
            if status == 206:
                self.send_header("Content-Range", f"bytes {ranges[0][0]}-{ranges[0][1]}/{size}")
            self.send_header("Content-Type", "application/octet-stream")
        else:
            boundary = "h3pipe-tileserver-boundary"
            chunks = []
            for (start, end), part in zip(ranges, parts, strict=True):
                chunks.append(f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                              f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n".encode())
                chunks.append(part)
            chunks.append(f"\r\n--{boundary}--\r\n".encode())
            body = b"".join(chunks)
            self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step = 1 << 16
        for i in range(0, len(body), step):
            chunk = body[i:i + step]
            owner._pace.wait(len(chunk))
            try:
                self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
        owner._count(bytes_sent=len(body))
        owner._served(path.name, ranges)


def _parse_ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """Inclusive (start, end) pairs; None when there is no usable Range header, [] when
    nothing asked for lies inside the file."""
    if not header or not header.startswith("bytes="):
        return None
    out = []
    for spec in header[len("bytes="):].split(","):
        first, _, last = spec.strip().partition("-")
        if first == "":  # a suffix: the last N bytes
            n = int(last)
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        if start <= end and start < size:
            out.append((start, end))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--bandwidth", type=float, default=None, help="bytes per second")
    parser.add_argument("--fail-share", type=float, default=0.0)
    parser.add_argument("--fail-status", default="503")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    status: int | str = int(args.fail_status) if args.fail_status.isdigit() else args.fail_status
    server = TileServer(args.root, latency=args.latency, bandwidth=args.bandwidth,
                        fail_share=args.fail_share, fail_status=status, seed=args.seed,
                        port=args.port).start()
    print(server.url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()
    print(json.dumps(server.stats.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
