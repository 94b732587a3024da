"""``h3pipe db status`` and ``h3pipe db upgrade``: the store's schema migrations."""

from __future__ import annotations

import typer

from h3pipe.cli.app import app, project_of

db_app = typer.Typer(help="The store's schema.\n\nExample:\n\n"
                     "    h3pipe --store postgresql://localhost/h3 db upgrade",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("status")
def status(ctx: typer.Context) -> int:
    """Show applied and pending migrations; exit 1 when some are pending.

    Example:

        h3pipe --store postgresql://localhost/h3 db status
    """
    where, applied, pending = project_of(ctx).migrations(upgrade=False)
    typer.echo(f"store: {where}")
    typer.echo(f"applied: {', '.join(applied) or 'none'}")
    typer.echo(f"pending: {', '.join(pending) or 'none'}")
    return 1 if pending else 0


@db_app.command("upgrade")
def upgrade(ctx: typer.Context) -> int:
    """Apply pending migrations, each in its own transaction. Safe to re-run.

    Example:

        h3pipe --store postgresql://localhost/h3 db upgrade
    """
    where, applied, _ = project_of(ctx).migrations(upgrade=True)
    typer.echo(f"store: {where}")
    typer.echo(f"applied now: {', '.join(applied) or 'nothing (up to date)'}")
    return 0
