"""``h3pipe serve``: the HTTP API and the live dashboard of this project and store."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from h3pipe import extras
from h3pipe.cli import options as opt
from h3pipe.cli import output
from h3pipe.cli.app import app, project_of


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; loopback unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, help="Port to listen on (0: any free one).")] = 8000,
    workers: Annotated[int, typer.Option(
        "--workers", "-w", min=1, max=64, help="Warm worker processes: runs executing at "
        "once (the rest wait their turn).")] = 2,
    queue: opt.Queue = None,
    hash_token: Annotated[bool, typer.Option(
        "--hash-token", help="Read a token on standard input, print the SHA-256 to write "
        "in h3pipe.yaml for it, and exit (the token stays out of shell history).")] = False,
) -> None:
    """Serve OGC API - Processes, the catalog endpoints and a live dashboard with an
    interactive map of every dataset. Runs submitted over HTTP execute on warm local
    workers, or on the queue with --queue. Stops on Ctrl-C or SIGTERM.

    Example:

        h3pipe serve --port 8000    # then open http://127.0.0.1:8000/dashboard
    """
    extras.require("server")
    from h3pipe.server import serving, settings  # start-up: FastAPI and uvicorn, only here

    if hash_token:
        output.say(settings.hash_token(sys.stdin.readline().strip()))
        return
    serving.serve(project_of(ctx), host=host, port=port, workers=workers, queue=queue,
                  say=output.say, warn=output.warn)
