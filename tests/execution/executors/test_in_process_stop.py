"""A run whose one worker is its own process honours a stop and its grace period even in
the middle of a long C call (a GDAL read), as a run with worker processes does."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.0,-2.0,29.1,-1.9"
BUSY_S = 40  # one batch of 40 s in one C call


@pytest.fixture
def project(tmp_path):
    tif = write_raster(tmp_path / "r.tif", np.ones((200, 200), "float32"), west=28.95,
                       north=-1.85, res=0.001)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=6)})


def _until_busy(proc: subprocess.Popen[str], deadline: float) -> list[str]:
    """stderr up to the line the fault prints as its C call starts."""
    assert proc.stderr is not None
    lines: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("fault: busy"):
                return lines
    proc.kill()
    raise AssertionError("the batch never started:\n" + "".join(lines))


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_mid_batch_in_process_ends_the_run_within_the_grace_period(project, sig, code):
    proc = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "--project", str(project), "run", "p", "--bbox",
         BBOX, "--workers", "1", "--grace", "1"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "H3PIPE_FAULTS": f"batch:busy={BUSY_S}"})
    try:
        _until_busy(proc, time.monotonic() + 60)
        proc.send_signal(sig)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=BUSY_S + 20)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    # The grace period (1 s) and the run's own ending; without the fix, the whole 40 s.
    assert took < 8, f"the stop took {took:.1f} s"

    import sqlite3

    with sqlite3.connect(project / ".h3pipe" / "catalog.sqlite") as db:
        status = db.execute("SELECT status FROM runs").fetchone()[0]
    assert status == "interrupted"
