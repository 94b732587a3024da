"""A small run through exactextract, the rest through the kernel (:func:`windows.small_work`,
decided once per run and carried by its batches): the two give the same numbers, and a
process that computes a small run's cells never loads numba.

Each path is taken by fixing the choice (``Batch.small``); both run for real on the
same generated raster, and both are also compared with exactextract called directly on
the cells' own polygons (``tests.zonal_reference``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pytest
import rasterio
import shapely
from exactextract import exact_extract

from h3pipe.config.project import ProjectConfig
from h3pipe.operations import windows
from h3pipe.operations.base import Batch
from h3pipe.operations.zonal_stats import ZonalStats
from h3pipe.planning.batching import Batcher
from h3pipe.planning.prepare import RunOptions, prepare
from h3pipe.planning.scope import resolve_scope
from h3pipe.sources.raster import describe_raster
from tests import zonal_reference
from tests.conftest import (
    cell_feature,
    raster_source,
    write_project,
    write_raster,
    zonal_pipeline,
)

MOMENTS = ["count", "sum", "mean", "min", "max", "stdev"]
STATS = [*MOMENTS, "coverage"]
# The kernel mirrors exactextract's float32 coverage fractions, row order and weighted
# variance: the paths agree far closer than the benchmark's 1e-6.
REL = 1e-9
ABS = 1e-9  # a stdev of exactly 0 carries round-off of a few 1e-15 on either side
BOX = (30.02, -1.95, 30.35, -1.62)


def _raster(kind: str, tmp_path: Path) -> Path:
    """A 0.3 x 0.24 degree raster at 30.0E, 1.6S: nodata patches, NaNs, integers."""
    rng = np.random.default_rng(11)
    values = rng.uniform(0, 500, size=(120, 150))
    if kind == "float32_nodata_nan":
        data = values.astype("float32")
        data[40:80, 30:70] = -9999
        data[rng.random(data.shape) < 0.05] = np.nan
        return write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=0.002,
                            nodata=-9999)
    if kind == "float64_non_square":
        data = values + 1000.0
        data[40:80, 30:70] = np.nan
        return write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=0.002,
                            yres=0.001)
    if kind == "int16":
        data = (values * 10 - 2000).astype("int16")
        data[40:80, 30:70] = -32768
        return write_raster(tmp_path / "r.tif", data, west=30.0, north=-1.6, res=0.002,
                            nodata=-32768)
    raise AssertionError(kind)


def _rows(info: Any, cells: list[str], params: dict[str, Any], kernel: bool,
          monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """``zonal_stats`` over ``cells``, its moments from the kernel or from exactextract."""
    batch = Batch(run_id="r", step_id="s", number=1, operation="zonal_stats", params=params,
                  cells=tuple(cells), resolution=h3.get_resolution(cells[0]),
                  source_id=info.source_id, raster=info, small=not kernel)
    return {r["h3_index"]: r for r in ZonalStats().run_batch(batch).to_pylist()}


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


def _direct(path: Path, cells: list[str]) -> dict[str, dict[str, Any]]:
    """exactextract on the file and the cells' h3 polygons, with our empty-cell rule."""
    with rasterio.open(path) as ds:
        found = exact_extract(ds, [cell_feature(c) for c in cells], MOMENTS,
                              include_cols=["cell"])
    out = {}
    for f in found:
        p = f["properties"]
        empty = not p["count"] > 0
        out[p["cell"]] = {s: (p[s] if s == "count" else None if empty else p[s])
                          for s in MOMENTS}
    return out


@pytest.mark.parametrize("kind", ["float32_nodata_nan", "float64_non_square", "int16"])
@pytest.mark.parametrize("res", [6, 8])
@pytest.mark.parametrize("weights", ["fraction", "area"])
def test_small_work_through_exactextract_equals_the_kernel(tmp_path, monkeypatch, kind, res,
                                                            weights):
    path = _raster(kind, tmp_path)
    info = describe_raster("src", str(path), tmp_path)
    # Past the raster's east and south edges: cells wholly, partly and not covered.
    cells = sorted(h3.geo_to_cells(shapely.box(*BOX), res))
    params = {"stats": STATS, "weights": weights, "min_coverage": 0.2}
    kernel = _rows(info, cells, params, True, monkeypatch)
    small = _rows(info, cells, params, False, monkeypatch)
    assert set(kernel) == set(small) == set(cells)
    for c in cells:
        for s in STATS:
            assert _same(small[c][s], kernel[c][s]), (c, s, small[c][s], kernel[c][s])
    # Not vacuous: full, partial, empty and nulled (below min_coverage) cells.
    counts = [kernel[c]["count"] for c in cells]
    assert max(counts) > 0 and min(counts) == 0
    assert any(kernel[c]["mean"] is None and kernel[c]["count"] > 0 for c in cells)
    assert sum(kernel[c]["mean"] is not None for c in cells) >= 3

    if weights == "area":  # never offered exactextract (see windows.KERNEL_LOAD_S)
        assert small == kernel
        return  # the kernel against exactextract's areas: tests/operations/test_zonal_semantics
    # And both are exactextract's own numbers on the file, to the tolerance of every
    # comparison with it (the cells' polygons in degrees there, in the window's pixels
    # here: float32 fractions round apart by a few 1e-9).
    expected = _direct(path, cells)
    for c in cells:
        for s in MOMENTS:
            if kernel[c]["coverage"] < 0.2 and s != "count":
                assert kernel[c][s] is None and small[c][s] is None  # min_coverage
                continue
            e = expected[c][s]
            for got in (small[c][s], kernel[c][s]):
                assert (got is None) == (e is None), (c, s, got, e)
                if e is not None:
                    assert got == pytest.approx(e, rel=zonal_reference.REL,
                                                abs=zonal_reference.ABS), (c, s)


def test_the_choice_is_exactextract_only_below_the_kernels_load():
    # A few dozen res 7 cells of 30 m pixels: 36 zones and 0.7 M pixels, 10 ms and 47 ms.
    assert windows.small_work(36, 700_000)
    # Rwanda at res 5: 156 zones but 47 M pixels, about 3 s through exactextract.
    assert not windows.small_work(156, 47_000_000)
    # Exactly at the load: still exactextract; just above: the kernel.
    zones = int(windows.KERNEL_LOAD_S / windows._ZONE_S)
    assert windows.small_work(zones, 0) and not windows.small_work(zones + 1, 0)


def test_a_runs_batches_all_carry_one_choice(tmp_path):
    """Every batch of a run carries the run's choice, whatever its own size: a cell's
    numbers do not depend on the batch or process that computed it."""
    path = _raster("float32_nodata_nan", tmp_path)
    root = write_project(tmp_path / "p", sources={"s": raster_source("s", str(path))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=9)})
    project = ProjectConfig(root)
    # About 190 cells at res 9 (30 ms through exactextract), then about 4,600 (0.7 s).
    for bbox, small in (("30.01,-1.79,30.05,-1.75", True), ("30.0,-1.8,30.2,-1.6", False)):
        plan = prepare(project, "p", resolve_scope(bbox=bbox), RunOptions(batch_size=40))
        batches = Batcher.of(plan, None).batches(plan.pipeline.steps[0])
        assert len(batches) > 1
        assert {b.small for b in batches} == {small}, bbox


def test_a_small_scope_is_small_however_far_its_coarse_parents_reach(tmp_path):
    """Pixels are counted over the scope, not over the coarse parents that hold its cells
    (a degree across): a few dozen res 7 cells over 1-arcsecond pixels are small."""
    data = np.random.default_rng(5).uniform(0, 9, (720, 720)).astype("float32")
    path = write_raster(tmp_path / "fine.tif", data, west=30.0, north=-1.6, res=1 / 3600)
    root = write_project(tmp_path / "p", sources={"s": raster_source("s", str(path))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=7)})
    plan = prepare(ProjectConfig(root), "p", resolve_scope(bbox="30.02,-1.78,30.15,-1.65"),
                   RunOptions())
    batches = Batcher.of(plan, None).batches(plan.pipeline.steps[0])
    x0, y0, x1, y1 = plan.cells.bounds
    # The parents' box is 30 times the scope's: 6.7 M pixels, 0.45 s of exactextract, where
    # the scope's 0.2 M take 15 ms.
    assert (x1 - x0) * (y1 - y0) > 0.4
    assert batches and all(b.small for b in batches)


# A fresh interpreter, as the run's own process is: a small run's batch loads no numba; a
# batch of a run too big for exactextract loads the kernel.
_PROCESS = """
import json, sys
from pathlib import Path
import h3, numpy as np, shapely
from h3pipe.operations import get_operation, warm_up
from h3pipe.operations.base import Batch
from h3pipe.operations.windows import small_work
from h3pipe.sources.raster import describe_raster
from tests.conftest import write_raster

root = Path(sys.argv[1])
data = np.random.default_rng(1).uniform(0, 10, (3000, 3000)).astype("float32")
tif = write_raster(root / "r.tif", data, west=29.0, north=-1.0, res=1 / 3600)
info = describe_raster("s", str(tif), root)

def batch(box, res):
    cells = tuple(sorted(h3.geo_to_cells(shapely.box(*box), res)))
    pixels = int((box[2] - box[0]) * (box[3] - box[1]) * 3600 ** 2)
    return Batch("r", "s", 1, "zonal_stats", {"stats": ["mean", "count"]}, cells=cells,
                 resolution=res, source_id="s", raster=info,
                 small=small_work(len(cells), pixels))

seen = {}
warm_up(["zonal_stats"])
seen["warm"] = "numba" in sys.modules
small = batch((29.1, -1.4, 29.2, -1.3), 7)
get_operation("zonal_stats").run_batch(small)
seen["small"] = ["numba" in sys.modules, len(small.cells)]
get_operation("zonal_stats").run_batch(batch((29.05, -1.75, 29.75, -1.05), 8))
seen["big"] = "numba" in sys.modules
print(json.dumps(seen))
"""


def test_a_process_computing_few_cells_never_loads_numba(tmp_path):
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _PROCESS, str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["warm"] is False  # warming up zonal_stats loads no kernel
    assert seen["small"][0] is False and seen["small"][1] > 10
    assert seen["big"] is True
