"""``h3pipe schema``: write the JSON Schemas of h3pipe's YAML files out, for editors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from h3pipe.cli.app import app


@app.command("schema")
def schema(
    kind: Annotated[str | None, typer.Argument(
        help="source, pipeline or project: print that schema (default: all, with --out).")]
    = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the schema files into this folder instead.",
        file_okay=False)] = None,
) -> int:
    """Print or write the JSON Schemas that source, pipeline and h3pipe.yaml files follow.

    Point an editor's YAML language server at the written files to get completion and
    checks as you type (see "Editor support" in the README).

    Example:

        h3pipe schema --out .schemas

        h3pipe schema pipeline > pipeline.schema.json
    """
    # The API (0.35 s: pyarrow, numpy, shapely, jsonschema) loads when the command runs,
    # not for --help (0.07 s).
    from h3pipe.api import schema_kinds, schema_text, write_schemas

    if kind is not None and kind not in schema_kinds():
        raise typer.BadParameter(f"'{kind}' is not one of {', '.join(schema_kinds())}",
                                 param_hint="KIND")
    if out is None and kind is None:
        raise typer.BadParameter("name a KIND to print, or give --out DIR to write them all",
                                 param_hint="KIND")
    if out is None:
        typer.echo(schema_text(kind or ""), nl=False)
        return 0
    for path in write_schemas(out, (kind,) if kind else None):
        typer.echo(f"wrote {path}")
    return 0
