"""``h3pipe sources``: the source catalog (register, list, show, deactivate) and inspect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from h3pipe.cli.app import app, print_table, project_of, stamp

sources_app = typer.Typer(
    help="Register, list and inspect data sources.\n\nExample:\n\n"
    "    h3pipe sources register sources/cop-dem-glo-30.yaml",
    no_args_is_help=True)
app.add_typer(sources_app, name="sources")


@sources_app.command("register")
def register(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Source YAML files.")],
) -> int:
    """Validate source files, then add them to the catalog or record a new version.

    Example:

        h3pipe sources register sources/cop-dem-glo-30.yaml
    """
    for r in project_of(ctx).register_sources([f.resolve() for f in files]):
        typer.echo(f"{r['id']}: {r['action']} (version {r['version']})")
    return 0


@sources_app.command("list")
def list_(
    ctx: typer.Context,
    theme: Annotated[str | None, typer.Option(help="Only sources of this theme.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include deactivated sources.")] = False,
) -> int:
    """List registered sources.

    Example:

        h3pipe sources list --theme terrain
    """
    rows = project_of(ctx).sources(theme=theme, include_inactive=all_)
    if not rows:
        typer.echo("no sources registered" + (" for that theme" if theme else "")
                   + "; add one with 'h3pipe sources register FILE'")
        return 0
    print_table(["id", "kind", "theme", "version", "active", "location", "updated"],
                [[r["id"], r["kind"], r["theme"], str(r["version"]),
                  "yes" if r["is_active"] else "no", r["location"], stamp(r["updated_at"])]
                 for r in rows])
    return 0


@sources_app.command("show")
def show(
    ctx: typer.Context,
    source_id: Annotated[str, typer.Argument(help="Source id.")],
) -> int:
    """Show a registered source: its current document and its version history.

    Example:

        h3pipe sources show cop-dem-glo-30
    """
    import yaml

    r = project_of(ctx).source(source_id)
    state = "active" if r["is_active"] else "deactivated"
    typer.echo(f"# {r['id']}: version {r['version']}, {state}, from {r['file']}")
    typer.echo(yaml.safe_dump(r["document"], sort_keys=False, allow_unicode=True).rstrip())
    typer.echo("# history:")
    for v in r["versions"]:
        typer.echo(f"#   v{v['version']} {v['action']:10s} {stamp(v['recorded_at'])} {v['file']}")
    return 0


@sources_app.command("deactivate")
def deactivate(
    ctx: typer.Context,
    source_id: Annotated[str, typer.Argument(help="Source id.")],
) -> int:
    """Deactivate a source (soft delete): pipelines that need it fail validation.

    Example:

        h3pipe sources deactivate worldpop
    """
    version = project_of(ctx).deactivate_source(source_id)
    typer.echo(f"{source_id}: deactivated (version {version}); register it again to restore")
    return 0


@sources_app.command("inspect")
def inspect(
    ctx: typer.Context,
    location: Annotated[str, typer.Argument(
        help="A raster file, glob, VRT or URL, or a STAC collection (collection.json, or "
        "API_URL#collection=ID).")],
    source_id: Annotated[str | None, typer.Option("--id", help="Id for the YAML.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", dir_okay=False,
                                                help="Write the YAML here.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
) -> int:
    """Read a raster or STAC collection and print a ready-to-edit source YAML.

    Example:

        h3pipe sources inspect data/dem.tif --id my-dem -o sources/my-dem.yaml
    """
    import math

    # The API (0.35 s: pyarrow, numpy, shapely, jsonschema) loads when the command runs,
    # not for --help (0.07 s).
    from h3pipe.api import check_source_id, draft_source

    if fmt not in ("yaml", "json"):
        raise typer.BadParameter(f"'{fmt}' is not one of yaml, json", param_hint="--format")
    if source_id is not None:
        check_source_id(source_id)
    project = project_of(ctx)
    found = project.inspect(location)
    if fmt == "json":
        # Strict JSON: a NaN nodata value becomes the string "nan".
        def clean(v: object) -> object:
            if isinstance(v, float) and math.isnan(v):
                return "nan"
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [clean(x) for x in v]
            return v

        typer.echo(json.dumps(clean(found.to_json()), indent=2, default=str, allow_nan=False))
        return 0
    text = draft_source(found, location, source_id)
    if output is None:
        typer.echo(text.rstrip())
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}; check it, then 'h3pipe sources register {output}'")
    return 0
