"""``h3pipe clean``: remove intermediates their policies allow, and mark dead runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from h3pipe.cli.app import app, project_of


@app.command("clean")
def clean(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
    run_id: Annotated[str | None, typer.Option("--run", help="Everything of this run, "
                                               "whatever its policies.")] = None,
    older_than: Annotated[float, typer.Option(
        help="Hours after which a failed run's on_success outputs may go (0: at once; "
        "never negative).")] = 24.0,
    outputs: Annotated[list[Path] | None, typer.Option(
        "--outputs", help="Also remove what interrupted exports and maps left in this "
        "folder (besides the project folder's); repeat for several.")] = None,
) -> int:
    """Apply the cleanup policies of every run's intermediates. Runs recorded as running
    whose process is gone (on this host) are marked failed first. Temporary files that a
    killed export, map or report left (.NAME.h3pipe-tmp-PID-...) in the project folder, its
    sub-folders and each --outputs folder are removed too.

    Example:

        h3pipe clean --dry-run

        h3pipe clean --outputs /data/exports
    """
    dead, removals, leftovers = project_of(ctx).clean(
        dry_run=dry_run, run_id=run_id, older_than_hours=older_than, outputs=outputs or [])
    verb = "would remove" if dry_run else "removed"
    for rid in dead:
        typer.echo(f"run {rid}: its process is gone; " + ("would mark" if dry_run else
                                                          "marked") + " it failed")
    for r in removals:
        typer.echo(f"{verb} {r.location} (run {r.run_id}, step {r.step_id}): {r.reason}")
    for path in leftovers:
        typer.echo(f"{verb} {path}: left by an interrupted export or map")
    if not removals and not leftovers:
        typer.echo("nothing to remove")
    return 0
