"""``h3pipe validate``: check sources, pipelines and settings; list every problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from h3pipe.cli.app import app, project_of


@app.command("validate")
def validate(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Files or folders to check (default: the whole project).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> int:
    """Check YAML files against the schemas and each other; exit 1 if any is invalid.

    Example:

        h3pipe validate

        h3pipe validate pipelines/elevation_terrain.yaml --format json
    """
    if fmt not in ("text", "json"):
        raise typer.BadParameter(f"'{fmt}' is not one of text, json", param_hint="--format")
    from h3pipe.errors import UsageError

    project = project_of(ctx)
    resolved = [project.resolve_path(p) for p in paths or []]
    for given, p in zip(paths or [], resolved, strict=True):
        if not p.exists():
            raise UsageError(f"no such file or folder: {given}")
    report = project.check(resolved or None)
    if fmt == "json":
        typer.echo(json.dumps({
            "valid": report.ok,
            "files": report.files,
            "problems": [
                {"file": p.file, "line": p.line, "path": p.path, "message": p.message,
                 "kind": p.kind} for p in report.problems
            ],
        }, indent=2))
    else:
        for p in report.problems:
            typer.echo(p.format())
        n = len(report.files)
        if report.ok:
            typer.echo(f"{n} file(s) valid", err=True)
        else:
            typer.echo(f"{len(report.problems)} problem(s) in {n} file(s) checked", err=True)
    return 0 if report.ok else 1
