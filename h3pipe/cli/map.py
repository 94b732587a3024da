"""``h3pipe map``: draw one column of a dataset as a choropleth of its cells (PNG, SVG, PDF)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from h3pipe.cli import options
from h3pipe.cli.app import app, project_of


@app.command("map")
def map_(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Dataset id (the pipeline's output.dataset).")],
    column: Annotated[str | None, typer.Argument(
        help="Column to draw (default: the dataset's first statistic).")] = None,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Picture to write: .png, .svg or .pdf.")] = Path("map.png"),
    iso3: options.ResultIso3 = None,
    bbox: options.ResultBbox = None,
    aoi: options.ResultAoi = None,
    run_id: options.ResultRun = None,
    resolution: Annotated[int | None, typer.Option(
        "--resolution", "-r", help="The resolution to draw, when the scope has several.")
    ] = None,
    where: Annotated[list[str] | None, typer.Option(
        "--where", help="One scenario of a sweep's dataset, KEY=VALUE; repeat per key.")
    ] = None,
    diverging: Annotated[bool, typer.Option(
        "--diverging", help="A diverging colour map about --center (changes, anomalies).")
    ] = False,
    center: Annotated[float, typer.Option(help="The middle of a diverging colour map.")] = 0.0,
    vmin: Annotated[float | None, typer.Option(help="Colour scale minimum (default: the "
                                                    "data's).")] = None,
    vmax: Annotated[float | None, typer.Option(help="Colour scale maximum (default: the "
                                                    "data's).")] = None,
    cmap: Annotated[str | None, typer.Option(
        help="A matplotlib colour map name (default viridis, RdBu_r when diverging).")
    ] = None,
    width: Annotated[int, typer.Option(help="Picture width in pixels.", min=400)] = 1200,
    height: Annotated[int, typer.Option(help="Picture height in pixels.", min=300)] = 900,
) -> int:
    """Draw a choropleth of a dataset's cells over one scope: a colour bar in the column's
    units (or a legend of a categorical source's classes), the scope's outline, degree
    ticks and a scale bar; cells without a value and cells whose every pixel was nodata
    get colours of their own, counted in the legend. Cells are rasterised at the picture's
    pixel size, so a million cells draw in about a second. A scope across the antimeridian
    is drawn continuous across 180; one wider than half the world in Equal Earth (on its
    pole for a polar cap).

    Example:

        h3pipe map elevation_copdem30 mean --iso3 RWA -r 6 -o rwa_mean.png

        h3pipe map building_flood_exposure share_flooded --run latest -o flooded.svg

        h3pipe map building_flood_exposure_fathom rp100_flooded_buildings --iso3 RWA
        --where flood_type=fluvial_undefended --where year=2050 --where ssp=ssp245
        --where return_period=rp100 -o fluvial.pdf
    """
    # The API (0.35 s: pyarrow, numpy, shapely, jsonschema) loads when the command runs,
    # not for --help (0.07 s).
    from h3pipe.api import scope_given

    style = {"diverging": diverging, "center": center, "vmin": vmin, "vmax": vmax,
             "cmap": cmap}
    scope = scope_given(iso3=iso3, bbox=bbox, aoi=aoi, run=run_id)
    drawn, _ = project_of(ctx).map(dataset, column, output, scope=scope, run=run_id,
                                   resolution=resolution, where=where, size=(width, height),
                                   style=style)
    typer.echo(f"drew {dataset}.{drawn} to {output}")
    return 0
