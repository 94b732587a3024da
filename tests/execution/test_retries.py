"""Transient remote errors (a server answering 503, refusing connections) are absorbed where
they happen, at the request and at the read, and a run over a flaky server gives the numbers
of the same run on local disk; when they do not pass, the error names the HTTP status, the
server and the attempts, and exits 1. Permanent ones (404, a file that is not a raster) fail
at once, and exit 2."""

from __future__ import annotations

import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest

from h3pipe.sources import raster, remote
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.tileserver import TileServer

BBOX = "29.02,-2.18,29.18,-2.02"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    # The same attempts as in production, with waits of milliseconds instead of seconds.
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")
    monkeypatch.setenv("H3PIPE_REMOTE_BACKOFF", "0.01")


@pytest.fixture
def served(tmp_path):
    """A 300 x 300 raster of 256-pixel blocks under srv/, and its server."""
    data = np.random.default_rng(3).normal(200, 20, (300, 300)).astype("float32")
    local = tmp_path / "srv" / "r.tif"
    # Small blocks, so that a run makes a few dozen requests the server can fail.
    write_raster(local, data, west=29.0, north=-1.95, res=0.001, block=32)
    with TileServer(tmp_path / "srv") as server:
        yield server, local


def _forget_remote(server):
    """Runs in this process keep tiles open and GDAL keeps their bytes: drop both, so that
    each run reads over HTTP again."""
    raster.close_tiles()
    remote.clear_gdal_cache(f"/vsicurl/{server.url}")


def _pipeline(retries):
    return zonal_pipeline("p", "s", ["mean", "count"], resolution=7).replace(
        "defaults: {", f"defaults: {{retries: {retries}, retry_backoff: 0.01, ")


def _rows(cli, proj, out):
    assert cli("--project", proj, "export", "ds", "-o", out).exit_code == 0
    return pq.read_table(out).sort_by("h3_index").to_pylist()


@pytest.fixture
def local_rows(tmp_path, cli, served):
    _, local = served
    ref = write_project(tmp_path / "ref", sources={"s": raster_source("s", str(local))},
                        pipelines={"p": _pipeline(0)})
    assert cli("--project", ref, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 0
    rows = _rows(cli, ref, tmp_path / "ref.parquet")
    assert len(rows) > 20 and all(r["count"] > 0 for r in rows)
    return rows


@pytest.mark.parametrize("share", [0.10, 0.25])
def test_runs_over_a_server_failing_a_share_of_gets_all_complete(tmp_path, cli, served,
                                                                 local_rows, share):
    """Ten runs or more, a seed each: every one completes, without a task retry, with the numbers of
    the local run. The tile's header is opened over HTTP while the run is prepared, so a 503
    there meets the same retries as a block read in a task."""
    server, _ = served
    server.fail_share = share
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", server.url_of("r.tif"))},
                         pipelines={"p": _pipeline(0)})
    spoiled = 0
    # At least ten runs, and on until the server has failed five requests: a run's blocks
    # come in a few merged range requests, so one run may meet no failure at all.
    for seed in range(100):
        if seed >= 10 and spoiled >= 5:
            break
        _forget_remote(server)
        server.reseed(seed)
        server.reset_stats()
        r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1", "--force")
        assert r.exit_code == 0, f"seed {seed}: {r.stderr}"
        assert _rows(cli, proj, tmp_path / f"{seed}.parquet") == local_rows
        spoiled += server.stats.failures
    assert spoiled >= 5  # the server did fail, and no run noticed


def test_a_server_that_keeps_failing_is_named_with_status_and_attempts(tmp_path, cli, served):
    server, _ = served
    server.fail_share = 1.0
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", server.url_of("r.tif"))},
                         pipelines={"p": _pipeline(1)})
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 1
    line = r.stderr.strip().splitlines()[-1]
    assert "HTTP 503 Service Unavailable" in line and server.url.removeprefix("http://") in line
    assert "after 3 attempts" in line
    assert "supported file format" not in r.stderr and "corrupt" not in r.stderr
    # GDAL itself asked 1 + GDAL_HTTP_MAX_RETRY (5) times per attempt.
    assert server.stats.gets >= 3 * 6


def test_block_reads_that_keep_failing_fail_the_task_after_its_retries(tmp_path, cli, served):
    """The header reads, the blocks do not: the task fails, is retried by the executor (the
    pipeline's retries), and the run fails naming the status, exit 1."""
    server, _ = served
    server.fail_share, server.fail_from = 1.0, 16384
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", server.url_of("r.tif"))},
                         pipelines={"p": _pipeline(1)})
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 1, r.stderr
    assert "HTTP 503 Service Unavailable" in r.stderr and "after 3 attempts" in r.stderr
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    assert db.execute("SELECT max(attempts) FROM tasks").fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM events WHERE status = 'retrying'").fetchone()[0] >= 1


def test_server_down_is_one_clear_line(tmp_path, cli, served):
    server, _ = served
    url = server.url_of("r.tif")
    server.stop()
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", url)},
                         pipelines={"p": _pipeline(2)})
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    host = server.url.removeprefix("http://")
    assert lines[0].startswith(f"error: source 's': cannot open '{url}': connection refused "
                               f"from {host} after 3 attempts"), lines[0]


def test_server_back_up_is_read_again(tmp_path, cli, served, local_rows):
    """GDAL remembers a file it could not reach as missing; a later run in the same process
    (a long-lived worker) must not believe it."""
    server, _ = served
    port, url = server.port, server.url_of("r.tif")
    server.stop()
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", url)},
                         pipelines={"p": _pipeline(0)})
    assert cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 1
    again = TileServer(server.root, port=port).start()
    try:
        r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
        assert r.exit_code == 0, r.stderr
        assert _rows(cli, proj, tmp_path / "p.parquet") == local_rows
    finally:
        again.stop()


def test_permanent_errors_fail_at_once_with_exit_2(tmp_path, cli, served):
    server, local = served
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", server.url_of("no.tif"))},
                         pipelines={"p": _pipeline(3)})
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 2
    assert "HTTP 404 Not Found" in r.stderr and "attempts" not in r.stderr
    # A served file that is not a raster: the server is fine, the file is not.
    (server.root / "bad.tif").write_bytes(b"II*\x00" + b"\x00" * 5000)
    bad = raster_source("s", server.url_of("bad.tif"))
    proj2 = write_project(tmp_path / "p2", sources={"s": bad}, pipelines={"p": _pipeline(3)})
    r = cli("--project", proj2, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 2
    assert "not a readable raster" in r.stderr
    # A truncated local file is not worth a retry either.
    local.write_bytes(local.read_bytes()[:20000])
    proj3 = write_project(tmp_path / "p3", sources={"s": raster_source("s", str(local))},
                          pipelines={"p": _pipeline(3)})
    r = cli("--project", proj3, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code in (1, 2)
    db3 = proj3 / ".h3pipe" / "catalog.sqlite"
    if db3.exists():
        con = sqlite3.connect(db3)
        assert con.execute("SELECT count(*) FROM events WHERE status = 'retrying'"
                           ).fetchone()[0] == 0


def test_parallel_workers_over_a_flaky_server(tmp_path, cli, served, local_rows):
    """Two worker processes (which read the environment's GDAL settings on their own)
    against 25% of GETs failing."""
    server, _ = served
    server.fail_share = 0.25
    server.reseed(1)  # random.Random(0) draws nothing below 0.25 in its first 25 numbers
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", server.url_of("r.tif"))},
                         pipelines={"p": _pipeline(0)})
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    assert server.stats.failures >= 1
    assert _rows(cli, proj, tmp_path / "p.parquet") == local_rows
