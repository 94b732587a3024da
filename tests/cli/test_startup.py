"""What a command loads: a run over a few cells, as ``h3pipe`` runs it from a shell,
loads neither pandas (which pyarrow would import on its first conversion) nor numba (the
kernel is for runs bigger than exactextract pays for, ``windows.small_work``); and how it
ends (``cli._end``: its code, atexit handlers run, output flushed, no teardown)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

# The command as the console script runs it: main() reading the process's command line.
# It ends the process itself (cli._end), after the atexit handlers: one says what loaded.
_COMMAND = """
import atexit, json, sys
from h3pipe.cli import main
sys.argv = ["h3pipe", *sys.argv[1:]]
atexit.register(lambda: print(json.dumps(sorted(m for m in ("pandas", "numba", "pyarrow")
                                                if m in sys.modules))))
sys.exit(main())
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
    assert json.loads(done.stdout.splitlines()[-1]) == ["pyarrow"]


def test_in_process_main_leaves_imports_alone(cli):
    # Tests and notebooks call main(argv) in a process that is not the command's: it
    # returns (this test goes on), and pandas can still be imported.
    assert cli("--version").exit_code == 0
    assert not any(type(f).__name__ == "_NoPandas" for f in sys.meta_path)


def test_the_command_ends_with_its_code_its_output_and_its_atexit_handlers(tmp_path):
    # A failing command: its code, its error on stderr and a line printed by an atexit
    # handler all reach the caller, though the process skips Python's teardown.
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _COMMAND, "--project", str(tmp_path),
                           "validate"], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "is not an h3pipe project" in done.stderr
    assert isinstance(json.loads(done.stdout.splitlines()[-1]), list)  # the handler's
