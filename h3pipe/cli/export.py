"""``h3pipe export``: write a dataset's per-cell results to Parquet, GeoParquet, CSV, GeoJSON,
GeoPackage or FlatGeobuf."""

from __future__ import annotations

from typing import Annotated

import typer

from h3pipe.cli import options
from h3pipe.cli.app import app, project_of


@app.command("export")
def export(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset id (the pipeline's output.dataset).")],
    output: Annotated[str, typer.Option(
        "--output", "-o", help="File to write (a folder with --partition-resolution); - for "
        "standard output (csv, the default there, geojson, parquet, geoparquet). A symlink "
        "is written through; a device, FIFO or folder is refused.")],
    iso3: options.ResultIso3 = None,
    bbox: options.ResultBbox = None,
    aoi: options.ResultAoi = None,
    run_id: options.ResultRun = None,
    resolution: Annotated[int | None, typer.Option("--resolution", "-r",
                                                   help="Only this resolution.")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="parquet, geoparquet, csv, geojson, gpkg or fgb (default: from the "
        "file extension; an unknown one is refused).")] = None,
    geometry: Annotated[str | None, typer.Option(
        help="polygon (the cell's outline) or point (its centre) for geoparquet, gpkg, fgb "
        "and geojson (default polygon); none for parquet and csv (the default there).")
    ] = None,
    h3: Annotated[str, typer.Option(
        "--h3", help="h3_index as text (8a2a1072b59ffff) or uint64 (its integer id; int64 in "
        "gpkg and fgb, which have no uint64; not for geojson).")] = "text",
    partition_resolution: Annotated[int | None, typer.Option(
        help="Write a folder OUTPUT/h3_parent=<cell>/part-0.parquet, one file per parent "
        "cell at this coarser resolution (parquet and geoparquet only).")] = None,
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

    GeoParquet (1.1, with a bbox covering column), GeoPackage and FlatGeobuf add the cell's
    geometry in lon/lat (WGS 84) and open in QGIS, geopandas and DuckDB; see docs/exports.md.

    Example:

        h3pipe export elevation_copdem30 --iso3 RWA --resolution 6 -o rwa.parquet

        h3pipe export elevation_copdem30 --bbox 29.0,-2.5,30.0,-1.5 -o box.csv

        h3pipe export elevation_copdem30 --run latest -o latest.parquet

        h3pipe export building_flood_exposure_fathom --where flood_type=pluvial_defended
        --where year=2050 --where return_period=rp100 -o pluvial_2050_rp100.csv

        h3pipe export elevation_copdem30 --iso3 RWA -r 8 -o rwa.geoparquet --h3 uint64

        h3pipe export elevation_copdem30 --iso3 RWA -r 8 -o rwa_centres.gpkg --geometry point

        h3pipe export elevation_copdem30 --iso3 COD -r 9 -o cod9.geoparquet --partition-resolution 4
    """
    # The API (0.35 s: pyarrow, numpy, shapely, jsonschema) loads when the command runs,
    # not for --help (0.07 s).
    from h3pipe.api import export_target, scope_given

    scope = scope_given(iso3=iso3, bbox=bbox, aoi=aoi, run=run_id)
    fmt, shown, to_stdout = export_target(output, fmt, partition_resolution)
    rows = project_of(ctx).export(dataset, output, fmt, scope=scope, run=run_id,
                                  resolution=resolution, where=where, layout=layout,
                                  geometry=geometry, h3=h3,
                                  partition_resolution=partition_resolution)
    typer.echo(f"wrote {rows} rows to {shown} ({fmt})", err=to_stdout)
    return 0
