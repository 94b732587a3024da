"""What a command loads: a run over a few cells, as ``h3pipe`` runs it from a shell,
loads neither pandas (which pyarrow would import on its first conversion) nor numba (the
kernel is for work bigger than exactextract's budget, ``windows.kernel_for``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

# The command as the console script runs it: main() reading the process's command line.
_COMMAND = """
import json, sys
from h3pipe.cli import main
sys.argv = ["h3pipe", *sys.argv[1:]]
code = main()
print(json.dumps({"code": code, "loaded": sorted(m for m in ("pandas", "numba", "pyarrow")
                                                  if m in sys.modules)}))
"""


def test_a_small_run_loads_neither_pandas_nor_numba(tmp_path):
    pytest.importorskip("pandas")  # installed here, so not loading it is the point
    data = np.random.default_rng(5).uniform(0, 100, (250, 250)).astype("float32")
    write_raster(tmp_path / "data" / "r.tif", data, west=29.0, north=-1.95, res=0.001)
    project = write_project(
        tmp_path / "proj",
        sources={"r": raster_source("r", str(tmp_path / "data" / "r.tif"))},
        pipelines={"p": zonal_pipeline("p", "r", ["mean", "count", "stdev"])})
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _COMMAND, "--project", str(project), "-q",
                           "run", "p", "--bbox", "29.02,-2.18,29.18,-2.02"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found == {"code": 0, "loaded": ["pyarrow"]}


def test_in_process_main_leaves_imports_alone(cli):
    # Tests and notebooks call main(argv) in a process that is not the command's.
    cli("--version")
    assert not any(type(f).__name__ == "_NoPandas" for f in sys.meta_path)
