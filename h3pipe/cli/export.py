"""``h3pipe export``: write a dataset's per-cell results to Parquet, CSV or GeoJSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from h3pipe.cli.app import app, project_of


@app.command("export")
def export(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset id (the pipeline's output.dataset).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.", dir_okay=False)],
    iso3: Annotated[str | None, typer.Option(help="Only the run scope of this country.")] = None,
    resolution: Annotated[int | None, typer.Option("--resolution", "-r",
                                                   help="Only this resolution.")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="parquet, csv or geojson (default: from the file extension).")] = None,
) -> int:
    """Export one row per cell: h3_index, resolution, then one column per statistic.

    Example:

        h3pipe export elevation_copdem30 --iso3 RWA --resolution 6 -o rwa.parquet
    """
    from h3pipe.engine.records import FORMATS, export_dataset

    if fmt is None:
        suffix = output.suffix.lower().lstrip(".")
        fmt = {"json": "geojson", "pq": "parquet"}.get(suffix, suffix)
        if fmt not in FORMATS:
            fmt = "parquet"
    rows = export_dataset(project_of(ctx), dataset, output, fmt, iso3=iso3, resolution=resolution)
    typer.echo(f"wrote {rows} rows to {output} ({fmt})")
    return 0
