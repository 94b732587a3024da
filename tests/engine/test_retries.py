"""Transient read errors (HTTP 503 from blob storage) are retried with backoff and each
attempt is recorded; permanent ones fail at once."""

from __future__ import annotations

import functools
import http.server
import os
import sqlite3
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"


class _Flaky(http.server.SimpleHTTPRequestHandler):
    """Range-serving; the first `failures` reads past the header answer 503."""

    failures = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        data = open(path, "rb").read() if os.path.isfile(path) else None
        rng = self.headers.get("Range")
        if data is None or not rng:
            return super().do_GET()
        start, _, end = rng.removeprefix("bytes=").partition("-")
        start, end = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
        with _Flaky.lock:
            fail = start >= 16384 and _Flaky.failures > 0
            if fail:
                _Flaky.failures -= 1
        if fail:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start:end + 1])


@pytest.fixture
def flaky(tmp_path):
    data = np.random.default_rng(3).normal(200, 20, (300, 300)).astype("float32")
    write_raster(tmp_path / "srv" / "r.tif", data, west=29.0, north=-1.95, res=0.001)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Flaky, directory=str(tmp_path / "srv")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/r.tif", tmp_path / "srv" / "r.tif"
    server.shutdown()


def _pipeline(retries):
    return zonal_pipeline("p", "s", ["mean", "count"], resolution=7).replace(
        "defaults: {", f"defaults: {{retries: {retries}, retry_backoff: 0.05, ")


def test_transient_errors_are_retried_and_recorded(tmp_path, cli, flaky):
    url, local = flaky
    workers = "1"  # one reader, so the server's failures meet one read in a row
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", url)},
                         pipelines={"p": _pipeline(3)})
    # GDAL tries a failed HTTP read three times itself; three 503s in a row get through to
    # h3pipe, whose retry then succeeds.
    _Flaky.failures = 3
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", workers)
    assert r.exit_code == 0, r.stderr
    assert _Flaky.failures == 0  # the server did fail three times
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    retried = db.execute("SELECT count(*) FROM events WHERE status = 'retrying'").fetchone()[0]
    assert retried >= 1
    assert db.execute("SELECT max(attempts) FROM tasks").fetchone()[0] >= 2
    _assert_same_as_local(cli, tmp_path, proj, local)


def _assert_same_as_local(cli, tmp_path, proj, local):
    """The numbers are those of the same raster read locally."""
    ref = write_project(tmp_path / "ref", sources={"s": raster_source("s", str(local))},
                        pipelines={"p": _pipeline(0)})
    assert cli("--project", ref, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 0
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    cli("--project", proj, "export", "ds", "-o", a)
    cli("--project", ref, "export", "ds", "-o", b)
    assert pq.read_table(a).to_pylist() == pq.read_table(b).to_pylist()


def test_retries_run_out_and_permanent_errors_are_not_retried(tmp_path, cli, flaky):
    url, local = flaky
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", url)},
                         pipelines={"p": _pipeline(1)})
    _Flaky.failures = 10_000
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    _Flaky.failures = 0
    assert r.exit_code == 1 and "cannot read" in r.stderr.strip().splitlines()[-1]
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    assert db.execute("SELECT max(attempts) FROM tasks").fetchone()[0] == 2
    # A truncated local file is not worth a retry.
    local.write_bytes(local.read_bytes()[:20000])
    proj2 = write_project(tmp_path / "p2", sources={"s": raster_source("s", str(local))},
                          pipelines={"p": _pipeline(3)})
    r = cli("--project", proj2, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code in (1, 2)
    db2 = proj2 / ".h3pipe" / "catalog.sqlite"
    if db2.exists():
        con = sqlite3.connect(db2)
        assert con.execute("SELECT count(*) FROM events WHERE status = 'retrying'"
                           ).fetchone()[0] == 0


def test_transient_errors_are_retried_on_parallel_workers(tmp_path, cli, flaky):
    """The retry path of the worker pool: a failed batch is scheduled again after its
    backoff while the other worker goes on, and the run completes with the right numbers."""
    url, local = flaky
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", url)},
                         pipelines={"p": _pipeline(3)})
    # Every read fails until the server has failed eight times. GDAL retries a read three
    # times itself, so at least one batch fails (one of the two workers meets four or more
    # of the eight) and none fails more than three times in a row.
    _Flaky.failures = 8
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    assert _Flaky.failures == 0
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    assert db.execute("SELECT count(*) FROM events WHERE status = 'retrying'").fetchone()[0] >= 1
    assert db.execute("SELECT max(attempts) FROM tasks").fetchone()[0] >= 2
    assert db.execute("SELECT count(*) FROM tasks WHERE status != 'completed'").fetchone()[0] == 0
    _assert_same_as_local(cli, tmp_path, proj, local)
