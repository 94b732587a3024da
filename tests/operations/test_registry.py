"""A new operation or configuration key cannot ship undocumented."""

from __future__ import annotations

import re
from pathlib import Path

from h3pipe.config import schemas
from h3pipe.operations import get_operation, operation_names

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_operation_is_documented_with_its_example_and_params():
    text = (DOCS / "operations.md").read_text()
    for name in operation_names():
        op = get_operation(name)
        section = text.split(f"## `{name}`", 1)
        assert len(section) == 2, f"docs/operations.md has no section for {name}"
        body = section[1].split("\n## ", 1)[0]
        assert op.example.strip() in body, f"the example of {name} is not in its section"
        for param in op.params_schema.get("properties", {}):
            assert f"`{param}`" in body, f"param {param} of {name} is undocumented"


def test_every_schema_key_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for kind in schemas.KINDS:
        for key in schemas.schema(kind)["properties"]:
            assert re.search(rf"`{key}`", text), f"{kind} key '{key}' is not in configuration.md"


def test_examples_in_docs_validate(tmp_path):
    from h3pipe.operations.zonal_stats import NAMED_STATS

    text = (DOCS / "operations.md").read_text()
    for stat in NAMED_STATS:
        assert f"`{stat}`" in text, f"statistic {stat} is undocumented"


# A fresh interpreter, as a worker is: what warm_up() loads, then the kernels compiled by
# zonal_stats batches over rasters of several types (means, a median, a histogram).
_WORKER = """
import json, sys
from pathlib import Path
import h3, numpy as np, shapely
from h3pipe.operations import get_operation, warm_up
from h3pipe.operations.base import Batch
from h3pipe.sources.raster import describe_raster
from tests.conftest import write_raster

def kernels():
    coverage = sys.modules.get("h3pipe.operations.coverage")
    return {k: sorted(map(str, getattr(coverage, k).signatures)) if coverage else None
            for k in ("polygon_moments", "polygon_bins")}

root = Path(sys.argv[1])
warm_up()
warm = kernels()
loaded = all(m in sys.modules for m in ("rasterio", "exactextract"))
numba = "numba" in sys.modules
cells = tuple(sorted(h3.geo_to_cells(shapely.box(29.05, -2.05, 29.15, -1.95), 7)))
rows = {}
for dtype in ("float32", "float64", "int16"):
    data = np.random.default_rng(1).uniform(0, 10, (200, 200)).astype(dtype)
    tif = write_raster(root / f"{dtype}.tif", data, west=29.0, north=-1.9, res=0.001)
    batch = Batch("r", "s", 1, "zonal_stats", {"stats": ["mean", "median", "histogram"],
                  "bins": [0, 5, 10]}, cells=cells, resolution=7, source_id="s",
                  raster=describe_raster("s", str(tif), root))
    rows[dtype] = get_operation("zonal_stats").run_batch(batch).num_rows
print(json.dumps({"warm": warm, "loaded": loaded, "numba": numba, "cells": len(cells),
                  "rows": rows, "batches": kernels()}))
"""


def test_warm_up_runs_cleanly(tmp_path):
    # Workers call it first thing so that no batch waits for a library; the compiled
    # kernel (numba: 0.3 s) is not among them: it loads with the first window of a run
    # that is not small (windows.small_work), so small work never loads it. So: in a fresh
    # process it says nothing, loads the libraries and no kernel, and batches over float,
    # double and integer rasters compute; their histogram is the kernel's, their moments
    # (beside a median) exactextract's.
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _WORKER, str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # cleanly: not a warning
    found = json.loads(done.stdout)
    assert found["warm"] == {"polygon_moments": None, "polygon_bins": None}
    assert found["loaded"] and not found["numba"]
    assert found["rows"] == dict.fromkeys(("float32", "float64", "int16"), found["cells"])
    assert found["cells"] > 10
    assert found["batches"]["polygon_moments"] == []
    assert len(found["batches"]["polygon_bins"]) == 1  # one bin index type for every raster
