"""Options several commands share, defined once: the same flag means the same thing, with
the same help, in ``run``, ``plan`` and ``resume``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Pipeline = Annotated[str, typer.Argument(help="Pipeline id (its 'id:' in pipelines/).")]
Iso3 = Annotated[str | None, typer.Option(help="Country by ISO 3166-1 alpha-3 code; for run, "
                                                "several (RWA,BDI) or a group of h3pipe.yaml "
                                                "(@eac).")]
Bbox = Annotated[str | None, typer.Option(help="west,south,east,north in lon/lat (west > east "
                                            "crosses the antimeridian), or 'world'.")]
Aoi = Annotated[Path | None, typer.Option(help="GeoJSON or GeoPackage with the area.",
                                          dir_okay=False)]
Resolution = Annotated[int | None, typer.Option("--resolution", "-r",
                                                help="H3 resolution 0..15.")]
Resolutions = Annotated[str | None, typer.Option(
    "--resolution", "-r", help="H3 resolution 0..15; several as a range (4-9) or a list "
    "(4,6,8), each its own exact run (default: the pipeline's defaults.resolutions, else "
    "defaults.resolution).")]
BatchSize = Annotated[int | None, typer.Option(help="Cells per task (default 500, more when "
                                                    "a run would make over 2,000 tasks).")]
Workers = Annotated[int | None, typer.Option(help="Worker processes; 1 computes in this "
                                              "process (default: CPUs, or this process "
                                              "when the work is too small to pay for them).")]
Force = Annotated[bool, typer.Option("--force", help="Recompute even if this exact run "
                                     "already completed.")]
FromStep = Annotated[str | None, typer.Option(
    help="Recompute this step and every later one; keep earlier results.")]
Grace = Annotated[float, typer.Option(
    help="On SIGINT/SIGTERM, seconds running tasks get to finish before the run stops "
    "(a second signal stops it at once).")]
Queue = Annotated[str | None, typer.Option(
    "--queue", help="Broker of the queue backend, amqp://USER:PASSWORD@HOST:5672// (default: "
    "$H3PIPE_QUEUE, or 'queue:' in h3pipe.yaml).")]

# A published result's scope, as 'export' and 'map' pick it (at most one of the four).
ResultIso3 = Annotated[str | None, typer.Option("--iso3",
                                                help="The run scope of this country.")]
ResultBbox = Annotated[str | None, typer.Option(
    "--bbox", help="The run scope of this box, as given to 'h3pipe run'.")]
ResultAoi = Annotated[Path | None, typer.Option(
    "--aoi", help="The run scope of this area file, as given to 'h3pipe run'.",
    dir_okay=False)]
ResultRun = Annotated[str | None, typer.Option(
    "--run", help="The result this run published (id, unique prefix or 'latest').")]
