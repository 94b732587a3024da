"""``h3pipe resume``: run a recorded run again, keeping the tasks it completed."""

from __future__ import annotations

from typing import Annotated

import typer

from h3pipe.cli import options as opt
from h3pipe.cli import output
from h3pipe.cli.app import app, project_of


@app.command("resume")
def resume(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to resume (see 'h3pipe runs list').")],
    from_step: opt.FromStep = None,
    workers: opt.Workers = None,
    grace: opt.Grace = 30.0,
) -> int:
    """Resume a failed or interrupted run: same pipeline, scope and resolution; tasks it
    completed are kept. If its inputs changed since, this is a new run.

    Example:

        h3pipe resume elevation_terrain-r6-1a2b3c4d5e6f --from-step elevation_stats
    """
    # It imports the API (0.35 s): loaded when the command runs, not for --help.
    from h3pipe.cli.progress import make_reporter
    result = project_of(ctx).resume(run_id, from_step=from_step, workers=workers,
                                    reporter=make_reporter(), grace_seconds=grace)
    if result.run_id != run_id:
        typer.echo(f"note: the inputs of {run_id} changed since; this is run {result.run_id}",
                   err=True)
    state = {"already": "already completed, nothing recomputed",
             "resumed": "completed (resumed)", "completed": "completed"}[result.state]
    typer.echo(f"run {result.run_id} {state}: {result.cells} cells of {result.scope_label} "
               f"at resolution {result.resolution} -> dataset {result.dataset}")
    output.coverage(result.coverage)
    return 0
