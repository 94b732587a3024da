"""The typer application and the options every command shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from h3pipe.about import version
from h3pipe.cli import output

if TYPE_CHECKING:
    from h3pipe.api import Project

app = typer.Typer(
    name="h3pipe",
    help="Turn geospatial data into exact statistics on the H3 grid, driven by YAML.\n\n"
    "Example:\n\n    h3pipe validate\n\n    h3pipe run elevation_terrain --iso3 RWA --resolution 6"
    "\n\nFrom cron (errors only on the terminal, everything in the log):\n\n"
    "    h3pipe -q --log-file /var/log/h3pipe.log run elevation_terrain --iso3 RWA",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Globals:
    project: Path | None
    verbose: bool
    store: str | None = None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"h3pipe {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    project: Annotated[Path | None, typer.Option(
        "--project", "-p", help="Project folder (default: $H3PIPE_PROJECT or the current folder).",
        file_okay=False)] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Where runs and results live: a folder, or postgresql://... "
        "(default: $H3PIPE_STORE, 'store:' in h3pipe.yaml, else .h3pipe).")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print errors only (for cron); see --log-file.")] = False,
    log_file: Annotated[Path | None, typer.Option(
        "--log-file", help="Also append every line, timestamped, to this file.",
        dir_okay=False)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    output.configure(quiet=quiet, log_file=log_file)
    ctx.obj = Globals(project, verbose, store)


def project_of(ctx: typer.Context) -> Project:
    """The project of the command, through the documented API every command calls."""
    # The API (0.35 s: pyarrow, numpy, shapely, jsonschema) loads when the command runs,
    # not for --help (0.07 s).
    from h3pipe.api import Project

    return Project(ctx.obj.project if ctx.obj else None, ctx.obj.store if ctx.obj else None)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain, borderless table on stdout; wide, so cron logs are not wrapped."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=None)
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)


def stamp(value: str | None) -> str:
    """An ISO timestamp as people read it: '2026-11-22 01:02:03', or '-'."""
    return value.replace("T", " ")[:19] if value else "-"
