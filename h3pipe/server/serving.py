"""Run the server: :func:`serve` binds, says where it listens, and hands the socket to
uvicorn (one process: the warm workers are its children, so ``--workers`` counts runs, not
HTTP processes)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import uvicorn

from h3pipe.api import Project
from h3pipe.errors import Terminated, UsageError
from h3pipe.server.app import create_app
from h3pipe.server.dashboard import basemap_origin
from h3pipe.server.settings import ServerSettings

GRACEFUL_SECONDS = 5  # for requests in progress at SIGTERM; runs have Jobs.close's own


def serve(project: Project, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 2,
          queue: str | None = None, say: Callable[[str], None] = print,
          warn: Callable[[str], None] = print) -> None:
    """Serve ``project`` on ``host:port`` (port 0: any free one) until SIGINT or SIGTERM."""
    settings = ServerSettings.of(project.read_settings(), project.root,
                                 max_concurrent_runs=workers)
    project.queue_settings(queue)  # a malformed --queue is the CLI's one line, not uvicorn's
    tiles = basemap_origin(settings.basemap) if settings.basemap else None  # and a basemap
    listening = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    say(f"h3pipe serving {project.root} on http://{shown}:{listening.getsockname()[1]}/ "
        f"(dashboard: /dashboard, OpenAPI: /openapi.json)")
    if tiles:  # a request leaving this machine from every page of the map
        say(f"every viewer's browser fetches the map's basemap tiles from {tiles} "
            "(server: basemap in h3pipe.yaml)")
    if settings.open and not loopback(host):
        warn(f"{host} is not a loopback address and no token is configured: "
             "anyone who reaches it may run pipelines (server: tokens in h3pipe.yaml)")
    app = create_app(project, settings, workers=workers, queue=queue)
    # An open event stream (the dashboard's) would hold a graceful stop forever.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_SECONDS)
    try:
        uvicorn.Server(config).run(sockets=[listening])
    except (Terminated, KeyboardInterrupt):
        pass  # uvicorn stopped gracefully, then raised the signal again: a stop asked for
    say("h3pipe serve stopped")


def loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said, not left 0: asyncio sets TCP_NODELAY only on accepted sockets whose
    # proto says TCP, and without it a small answer (headers, then body) waits ~40 ms for
    # the client's delayed ACK: every status poll took 44 ms instead of 2.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="choose another --port or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
