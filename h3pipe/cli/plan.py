"""``h3pipe plan``: what ``run`` would do and cost, without running anything."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from h3pipe.cli import options as opt
from h3pipe.cli import output
from h3pipe.cli.app import app, project_of
from h3pipe.errors import UsageError


@app.command("plan")
def plan(
    ctx: typer.Context,
    pipeline: opt.Pipeline,
    iso3: opt.Iso3 = None,
    bbox: opt.Bbox = None,
    aoi: opt.Aoi = None,
    resolution: opt.Resolutions = None,
    batch_size: opt.BatchSize = None,
    workers: opt.Workers = None,
    force: opt.Force = False,
    from_step: opt.FromStep = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> int:
    """Show what 'h3pipe run' would do, without writing anything or starting a worker:
    the run id and whether it is new, done or resumable; cells; stages with their steps,
    tasks and rows; per source the tiles or items touched, bytes to read, pixels in the
    scope and per cell; and an estimated wall time and peak memory for this machine, from
    what earlier runs in this store measured. Exit codes as 'run' (2 for bad input).
    Several resolutions (-r 4-9, or the pipeline's defaults.resolutions) are one plan when
    'run' computes them in one run (zonal_stats over cells, then row-wise steps), else
    planned one after another, as 'run' runs them; --format json then gives a list of
    plans.

    Example:

        h3pipe plan elevation_terrain --iso3 RWA -r 8

        h3pipe plan flood_risk_weighted --bbox 29.0,-2.5,30.0,-1.5 --format json

        h3pipe plan population --iso3 RWA -r 4-6
    """
    # The API (0.35 s: pyarrow, numpy, shapely, jsonschema) loads when the command runs,
    # not for --help (0.07 s).
    from h3pipe.api import ScopeRef, parse_resolutions

    # It imports the API (0.35 s): loaded when the command runs, not for --help.
    from h3pipe.cli.planview import report
    if fmt not in ("text", "json"):
        raise UsageError(f"--format '{fmt}' is not one of text, json")
    if resolution is not None:
        parse_resolutions(resolution)  # a bad -r is refused before the project is read
    project = project_of(ctx)
    scope = ScopeRef.given(iso3=iso3, bbox=bbox, aoi=aoi)
    reports = project.plans(pipeline, scope, resolution, batch_size=batch_size,
                            workers=workers, force=force, from_step=from_step)
    if fmt == "json":
        shown = [rep.to_json() for rep in reports]
        output.say(json.dumps(shown[0] if len(shown) == 1 else shown, indent=2))
        return 0
    for i, rep in enumerate(reports):
        if i:
            output.say("")
        for line in report(rep):
            output.say(line)
    return 0
