"""The pixel budget of one window read: a source declaring more pixels than memory holds
is refused by name, at once, and ``plan`` says so beforehand."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from h3pipe.errors import SourceError
from h3pipe.sources.raster import MosaicReader, describe_raster
from tests.conftest import write_project, write_raster

# 1e8 x 5e7 pixels over the world: a 0.3-degree scope at res 6 needs windows of hundreds of
# millions of pixels (float32: gigabytes).
HUGE_X, HUGE_Y = 100_000_000, 50_000_000
PIPELINE = ("id: p\noutput: {dataset: hugeds, theme: terrain}\ndefaults: {resolution: 6}\n"
            "steps:\n  - {id: s, operation: zonal_stats, source: huge, "
            "params: {stats: [mean]}}\n")
SCOPE = ("--bbox", "29,-2,29.3,-1.7")


def _huge_project(root: Path) -> Path:
    write_raster(root / "small.tif", np.ones((4, 4), "float32"), west=-180, north=90,
                 res=90)
    (root / "huge.vrt").write_text(
        f'<VRTDataset rasterXSize="{HUGE_X}" rasterYSize="{HUGE_Y}"><SRS>EPSG:4326</SRS>'
        f'<GeoTransform>-180,{360 / HUGE_X},0,90,0,{-180 / HUGE_Y}</GeoTransform>'
        '<VRTRasterBand dataType="Float32" band="1"><SimpleSource>'
        '<SourceFilename relativeToVRT="1">small.tif</SourceFilename>'
        '<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="4" ySize="4"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{HUGE_X}" ySize="{HUGE_Y}"/>'
        '</SimpleSource></VRTRasterBand></VRTDataset>')
    return write_project(root, sources={
        "huge": "id: huge\nkind: raster\ntheme: terrain\npath: huge.vrt\n"},
        pipelines={"p": PIPELINE})


def _limit_memory() -> None:
    # Without the budget the run would grow past 5 GB: cap it so a regression fails the
    # test instead of the machine.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_a_run_over_a_huge_source_fails_fast_naming_source_window_and_fix(tmp_path):
    proj = _huge_project(tmp_path / "p")
    env = {k: v for k, v in os.environ.items() if k != "H3PIPE_MAX_WINDOW_PIXELS"}
    done = subprocess.run(
        [sys.executable, "-m", "h3pipe", "--project", str(proj), "run", "p", *SCOPE,
         "--workers", "1"], capture_output=True, text=True, timeout=120, env=env,
        preexec_fn=_limit_memory)
    assert done.returncode == 1, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert "source 'huge': a window of " in error
    assert "is over the budget of 256 M pixels per read" in error
    assert "coarser version of the source" in error and "H3PIPE_MAX_WINDOW_PIXELS" in error


def test_plan_warns_that_a_batch_would_exceed_the_budget(tmp_path, cli):
    proj = _huge_project(tmp_path / "p")
    r = cli("--project", proj, "plan", "p", *SCOPE)
    assert r.exit_code == 0, r.stderr
    assert "over the budget of 256 M per read: the run would stop there" in r.stdout


def test_the_budget_is_set_by_the_environment(tmp_path, monkeypatch):
    # 20 x 20 pixels; a window over all of them is 22 x 22 with its one-pixel pad.
    write_raster(tmp_path / "r.tif", np.ones((20, 20), "float32"), west=0, north=20, res=1)
    info = describe_raster("r", str(tmp_path / "r.tif"), tmp_path)
    monkeypatch.setenv("H3PIPE_MAX_WINDOW_PIXELS", "483")
    with pytest.raises(SourceError, match=r"source 'r': a window of 22 x 22 pixels"):
        MosaicReader(info).read_bands((0, 0, 20, 20))
    monkeypatch.setenv("H3PIPE_MAX_WINDOW_PIXELS", "484")
    values, _ = MosaicReader(info).read_bands((0, 0, 20, 20))
    assert values.shape == (1, 22, 22) and np.nansum(values) == 400
    monkeypatch.setenv("H3PIPE_MAX_WINDOW_PIXELS", "lots")
    with pytest.raises(SourceError, match="H3PIPE_MAX_WINDOW_PIXELS='lots' is not a number"):
        MosaicReader(info).read_bands((0, 0, 20, 20))
