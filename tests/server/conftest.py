"""A real ``h3pipe serve`` process on a loopback port over a small project made in code:
:func:`start_server` (and the ``served`` fixture) starts one, waits for the line saying
where it listens, and stops it with SIGTERM at the end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import raster_source, write_project, write_raster
from tests.waiting import wait_until

# A 0.2 x 0.2 degree DEM over Kigali with a west-east ramp: value = column index.
WEST, NORTH, RES, SIZE = 30.0, -1.9, 0.001, 200
TERRAIN = textwrap.dedent("""\
    id: terrain
    output: {dataset: dem_stats, theme: terrain}
    defaults: {resolution: 7, batch_size: 50}
    steps:
      - id: stats
        operation: zonal_stats
        source: dem
        params: {stats: [mean, min, max, count]}
    """)
SMALL_BBOX = "30.05,-2.05,30.15,-1.95"


def ramp() -> np.ndarray:
    return np.tile(np.arange(SIZE, dtype="float32"), (SIZE, 1))


def make_project(root: Path, settings: str | None = None) -> Path:
    write_raster(root / "data" / "dem.tif", ramp(), west=WEST, north=NORTH, res=RES,
                 nodata=-9999.0)
    return write_project(root, sources={"dem": raster_source("dem", "data/dem.tif")},
                         pipelines={"terrain": TERRAIN}, settings=settings)


@dataclass
class Served:
    url: str
    root: Path
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(root: Path, *args: str, env: dict[str, str] | None = None,
                 deadline: float = 60) -> Served:
    """``h3pipe -p ROOT serve --port 0 ARGS...`` and the URL it says it listens on."""
    process = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "-p", str(root), "serve", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})})
    served = Served("", root, process)
    found = threading.Event()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            served.lines.append(line.rstrip("\n"))
            match = re.search(r"on (http://\S+?)/? ", line)
            if match and not served.url:
                served.url = match.group(1).rstrip("/")
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(deadline):
        served.stop()
        raise AssertionError("h3pipe serve did not say where it listens:\n"
                             + "\n".join(served.lines))
    wait_until(lambda: _answers(served.url), deadline, "h3pipe serve to answer")
    return served


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server over :func:`make_project` with no token (open), one per test module."""
    root = make_project(tmp_path_factory.mktemp("served"))
    server = start_server(root, "--workers", "2")
    yield server
    server.stop()
