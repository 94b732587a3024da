"""``h3pipe clean``: remove intermediates their policies allow, and mark dead runs."""

from __future__ import annotations

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
        help="Hours after which a failed run's on_success outputs may go.")] = 24.0,
) -> int:
    """Apply the cleanup policies of every run's intermediates. Runs recorded as running
    whose process is gone (on this host) are marked failed first.

    Example:

        h3pipe clean --dry-run
    """
    from h3pipe.engine.cleanup import clean as clean_store

    dead, removals = clean_store(project_of(ctx), dry_run=dry_run, run_id=run_id,
                                 older_than_hours=older_than)
    verb = "would remove" if dry_run else "removed"
    for rid in dead:
        typer.echo(f"run {rid}: its process is gone; " + ("would mark" if dry_run else
                                                          "marked") + " it failed")
    for r in removals:
        typer.echo(f"{verb} {r.location} (run {r.run_id}, step {r.step_id}): {r.reason}")
    if not removals:
        typer.echo("nothing to remove")
    return 0
