"""A prepared run for the forecasts to estimate: one raster, one zonal pipeline, a box of
res 8 cells, two workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from h3pipe.config.project import ProjectConfig
from h3pipe.planning.prepare import RunOptions, prepare
from h3pipe.planning.scope import resolve_scope
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline


@pytest.fixture
def plan(tmp_path: Path):
    write_raster(tmp_path / "r.tif", np.ones((100, 100), dtype="float32"), west=29.0,
                 north=-2.0, res=0.001)
    root = write_project(tmp_path / "p", sources={"s": raster_source("s", str(tmp_path / "r.tif"))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=8)})
    return prepare(ProjectConfig(root), "p", resolve_scope(bbox="29.0,-2.1,29.1,-2.0"),
                   RunOptions(workers=2))
