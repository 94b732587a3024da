"""A lineage backend for the tests: an HTTP server on a loopback port that records every
POST it receives (path, headers, JSON body), and can answer with an error or not at all."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """``mode``: 'ok' (201, as Marquez answers), 'error' (500), or 'hang' (never answers
    until the receiver is closed)."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.received.append({"path": self.path, "headers": dict(self.headers),
                                              "body": json.loads(body)})
                    receiver.arrived.notify_all()
                if receiver.mode == "hang":
                    receiver.release.wait(60)
                    return
                self.send_response(201 if receiver.mode == "ok" else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.received]

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The first ``count`` events, once they have arrived (fails past ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} event(s) of {count} arrived "
                                         f"in {timeout} s: {self.events}")
                self.arrived.wait(left)
        return self.events[:count]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
