"""``h3pipe plan``: what ``run`` would do and cost, without running anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from h3pipe.cli import output
from h3pipe.cli.app import app, project_of


@app.command("plan")
def plan(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Argument(help="Pipeline id (its 'id:' in pipelines/).")],
    iso3: Annotated[str | None, typer.Option(help="Country by ISO 3166-1 alpha-3 code.")] = None,
    bbox: Annotated[str | None, typer.Option(help="minx,miny,maxx,maxy in lon/lat.")] = None,
    aoi: Annotated[Path | None, typer.Option(help="GeoJSON or GeoPackage with the area.",
                                             dir_okay=False)] = None,
    resolution: Annotated[int | None, typer.Option("--resolution", "-r",
                                                   help="H3 resolution 0..15.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Cells per task.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPUs).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Plan as 'run --force' would.")] = False,
    from_step: Annotated[str | None, typer.Option(
        help="Plan as 'run --from-step' would.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> int:
    """Show what 'h3pipe run' would do, without writing anything or starting a worker:
    the run id and whether it is new, done or resumable; cells; stages with their steps,
    tasks and rows; per source the tiles or items touched, bytes to read, pixels in the
    scope and per cell; and an estimated wall time and peak memory for this machine, from
    what earlier runs in this store measured. Exit codes as 'run' (2 for bad input).

    Example:

        h3pipe plan elevation_terrain --iso3 RWA -r 8

        h3pipe plan flood_risk_weighted --bbox 29.0,-2.5,30.0,-1.5 --format json
    """
    from h3pipe.cli.planview import report
    from h3pipe.engine.plan import plan_run
    from h3pipe.engine.prepare import RunOptions
    from h3pipe.engine.scope import resolve_scope
    from h3pipe.errors import UsageError

    if fmt not in ("text", "json"):
        raise UsageError(f"--format '{fmt}' is not one of text, json")
    scope = resolve_scope(iso3=iso3, bbox=bbox, aoi=aoi)
    rep = plan_run(project_of(ctx), pipeline, scope, RunOptions(
        resolution=resolution, batch_size=batch_size, workers=workers, force=force,
        from_step=from_step))
    if fmt == "json":
        output.say(json.dumps(rep.to_json(), indent=2))
    else:
        for line in report(rep):
            output.say(line)
    return 0
