"""Shared fixtures: small rasters and projects made in code, and an in-process CLI runner."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from h3pipe.cli import main

pytest_plugins = ["tests.stac_server", "tests.pg", "tests.stores", "tests.workers", "tests.browser"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``h3pipe ARGS...`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def write_raster(path: Path, data: np.ndarray, *, west: float, north: float, res: float,
                 crs: str = "EPSG:4326", nodata: float | None = None,
                 yres: float | None = None, block: int = 256) -> Path:
    """A single-band tiled GeoTIFF (``block`` pixels a side) whose top-left pixel corner is
    (west, north)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
        dtype=data.dtype, crs=crs, transform=from_origin(west, north, res, yres or res),
        nodata=nodata, tiled=True, blockxsize=block, blockysize=block,
    ) as ds:
        ds.write(data, 1)
    return path


def write_project(root: Path, *, sources: dict[str, str] | None = None,
                  pipelines: dict[str, str] | None = None, settings: str | None = None) -> Path:
    """A project folder; values are YAML texts (dedented), keys are file stems."""
    (root / "sources").mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    for name, text in (sources or {}).items():
        (root / "sources" / f"{name}.yaml").write_text(textwrap.dedent(text))
    for name, text in (pipelines or {}).items():
        (root / "pipelines" / f"{name}.yaml").write_text(textwrap.dedent(text))
    if settings is not None:
        (root / "h3pipe.yaml").write_text(textwrap.dedent(settings))
    return root


def raster_source(source_id: str, path: str, **extra: Any) -> str:
    lines = [f"id: {source_id}", "kind: raster", f"path: '{path}'", "theme: terrain"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def zonal_pipeline(pipeline_id: str, source_id: str, stats: list[str], *, dataset: str = "ds",
                   resolution: int = 7, batch_size: int = 50) -> str:
    return textwrap.dedent(f"""\
        id: {pipeline_id}
        output: {{dataset: {dataset}, theme: terrain}}
        defaults: {{resolution: {resolution}, batch_size: {batch_size}}}
        steps:
          - id: stats
            operation: zonal_stats
            source: {source_id}
            params: {{stats: [{', '.join(stats)}]}}
        """)


def cell_feature(cell: str) -> dict[str, Any]:
    """GeoJSON polygon of an H3 cell, built straight from h3 (lng, lat order)."""
    import h3

    ring = [[lng, lat] for lat, lng in h3.cell_to_boundary(cell)]
    ring.append(ring[0])
    return {"type": "Feature", "properties": {"cell": cell},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}
