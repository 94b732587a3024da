"""``h3pipe validate``: check sources, pipelines and settings; list every problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from h3pipe.cli.app import app, project_of
from h3pipe.errors import UsageError
from h3pipe.masking import scrub


@app.command("validate")
def validate(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Files or folders to check (default: the whole project).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> int:
    """Check YAML files against the schemas and each other; exit 1 if any is invalid.

    A source with dimensions has its path template filled for every scenario: each one
    whose files are missing is a problem (unless none is there at all: then a note).

    Example:

        h3pipe validate

        h3pipe validate pipelines/elevation_terrain.yaml --format json
    """
    if fmt not in ("text", "json"):
        raise typer.BadParameter(f"'{fmt}' is not one of text, json", param_hint="--format")
    project = project_of(ctx)
    resolved = [project.resolve_path(path) for path in paths or []]
    for given, path in zip(paths or [], resolved, strict=True):
        if not path.exists():
            raise UsageError(f"no such file or folder: {given}")
    report = project.check(resolved or None, data=True)
    if fmt == "json":
        shown: dict[str, object] = {"valid": report.ok, "files": report.files}
        if report.notes:  # what was left unchecked (a sweep's data not on this machine)
            shown["notes"] = report.notes
        shown["problems"] = [{"file": p.file, "line": p.line, "path": p.path,
                              "message": p.message, "kind": p.kind} for p in report.problems]
        typer.echo(scrub(json.dumps(shown, indent=2)))
    else:
        # A problem quotes what was written, a password in a URL among it: masked.
        for problem in report.problems:
            typer.echo(scrub(problem.format()))
        for note in report.notes:
            typer.echo(scrub(f"note: {note}"), err=True)
        n = len(report.files)
        if report.ok:
            typer.echo(f"{n} file(s) valid", err=True)
        else:
            typer.echo(f"{len(report.problems)} problem(s) in {n} file(s) checked", err=True)
    return 0 if report.ok else 1
