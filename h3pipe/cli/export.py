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
    bbox: Annotated[str | None, typer.Option(
        help="Only the run scope of this box, as given to 'h3pipe run'.")] = None,
    aoi: Annotated[Path | None, typer.Option(
        help="Only the run scope of this area file, as given to 'h3pipe run'.",
        dir_okay=False)] = None,
    run_id: Annotated[str | None, typer.Option(
        "--run", help="Only the result this run published (id, unique prefix or 'latest').")
    ] = None,
    resolution: Annotated[int | None, typer.Option("--resolution", "-r",
                                                   help="Only this resolution.")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="parquet, csv or geojson (default: from the file extension).")] = None,
    where: Annotated[list[str] | None, typer.Option(
        "--where", help="Only rows of this scenario key or band, KEY=VALUE[,VALUE...]; "
        "repeat for several keys (a sweep's dataset).")] = None,
    layout: Annotated[str, typer.Option(
        help="wide: a column per band and statistic (rp100_mean); long: a row per band, "
        "its name in the band key column (a multi-band source's dataset).")] = "wide",
) -> int:
    """Export one row per cell: h3_index, resolution, then one column per statistic.

    A sweep's dataset has a row per cell and scenario, keyed by 'scenario' and one column
    per dimension; --where picks scenarios and bands, --layout long puts bands in rows.

    Without --iso3, --bbox, --aoi or --run (at most one), every scope the dataset has is
    written; a cell in several scopes keeps its newest row.

    Example:

        h3pipe export elevation_copdem30 --iso3 RWA --resolution 6 -o rwa.parquet

        h3pipe export elevation_copdem30 --bbox 29.0,-2.5,30.0,-1.5 -o box.csv

        h3pipe export elevation_copdem30 --run latest -o latest.parquet

        h3pipe export building_flood_exposure_fathom --where flood_type=pluvial_defended
        --where year=2050 --where return_period=rp100 -o pluvial_2050_rp100.csv
    """
    from h3pipe.engine.records import FORMATS, export_dataset

    if fmt is None:
        suffix = output.suffix.lower().lstrip(".")
        fmt = {"json": "geojson", "pq": "parquet"}.get(suffix, suffix)
        if fmt not in FORMATS:
            fmt = "parquet"
    rows = export_dataset(project_of(ctx), dataset, output, fmt, iso3=iso3, bbox=bbox, aoi=aoi,
                          run_id=run_id, resolution=resolution, where=where, layout=layout)
    typer.echo(f"wrote {rows} rows to {output} ({fmt})")
    return 0
