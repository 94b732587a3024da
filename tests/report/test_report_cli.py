"""``h3pipe runs report`` opened in headless Chromium, offline: no console error, no request
outside the file, every image decoded, every chart drawn; and the page says what the run
was, from what, how long each worker worked, and what went wrong when it failed."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest
from PIL import Image

from tests.browser import open_page
from tests.conftest import raster_source, write_project, write_raster
from tests.waiting import wait_until

BBOX = "29.005,-2.095,29.195,-1.905"
LICENCE = "CC-BY-4.0 (attribution: test makers)"


def _project(root, tif):
    source = raster_source("s", str(tif), units="m", measure="intensive",
                           license=f"'{LICENCE}'", title="'Test & <elevation>'")
    pipeline = ("id: p\ntitle: Striped test\noutput: {dataset: ds, theme: terrain}\n"
                "defaults: {resolution: 7, batch_size: 40}\n"
                "steps:\n  - id: stats\n    operation: zonal_stats\n    source: s\n"
                "    params: {stats: [mean, count, max]}\n")
    return write_project(root, sources={"s": source}, pipelines={"p": pipeline})


@pytest.fixture
def completed(tmp_path, cli):
    data = np.random.default_rng(3).normal(1500, 200, (200, 200)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.001)
    root = _project(tmp_path / "p", tif)
    r = cli("--project", root, "run", "p", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    return root


def _run_ids(root):
    db = sqlite3.connect(root / ".h3pipe" / "catalog.sqlite")
    try:
        return [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY created_at")]
    finally:
        db.close()


def _workers(root, run_id):
    db = sqlite3.connect(root / ".h3pipe" / "catalog.sqlite")
    try:
        return {r[0] for r in db.execute("SELECT worker FROM tasks WHERE run_id = ?",
                                         (run_id,))}
    finally:
        db.close()


def test_report_of_a_completed_run_renders_offline(completed, cli, chromium, tmp_path):
    out = tmp_path / "report.html"
    r = cli("--project", completed, "runs", "report", "latest", "-o", out)
    assert r.exit_code == 0, r.stderr
    run_id = _run_ids(completed)[-1]
    assert f"run {run_id} (completed)" in r.stdout
    page = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    shown = open_page(chromium, out, tmp_path / "report.png")
    assert shown.problems == []
    assert shown.images == 3  # a map per published column: mean, count, max
    # the step graph, the timeline, and a histogram per column
    assert shown.charts >= 5
    for words in (run_id, "Striped test", "bbox 29.005,-2.095,29.195,-1.905", "exit code",
                  LICENCE, "Test & <elevation>", "mean (m)", "count (pixels)",
                  "Tasks per worker", "Conservation", str(completed.parent / "r.tif")):
        assert words in shown.text, words
    shot = Image.open(tmp_path / "report.png")
    assert shot.size[0] == 1280 and shot.size[1] > 2000  # the whole page, not one screen


def test_timeline_has_a_lane_per_worker_that_ran_tasks(completed, cli, chromium, tmp_path):
    out = tmp_path / "report.html"
    assert cli("--project", completed, "runs", "report", "latest", "-o", out).exit_code == 0
    run_id = _run_ids(completed)[-1]
    workers = _workers(completed, run_id)
    page = out.read_text()
    lanes = set(re.findall(r'class="task"[^>]*data-lane="([^"]+)"', page)) | set(
        re.findall(r'data-lane="([^"]+)"[^>]*class="task"', page))
    assert lanes == workers and len(workers) == 2
    tasks = len(re.findall(r'class="task"', page))
    db = sqlite3.connect(completed / ".h3pipe" / "catalog.sqlite")
    assert tasks == db.execute("SELECT count(*) FROM tasks WHERE run_id = ?",
                               (run_id,)).fetchone()[0]
    db.close()


def test_report_of_a_failed_run_says_what_failed_and_what_a_resume_redoes(
        tmp_path, cli, chromium):
    data = np.random.default_rng(5).normal(1500, 200, (2000, 2000)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.0001)
    root = _project(tmp_path / "p", tif)
    # The header stays readable, so the run starts; the pixels of the later tiles are gone.
    with open(tif, "r+b") as f:
        f.truncate(tif.stat().st_size // 2)
    r = cli("--project", root, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 1, (r.stdout, r.stderr)
    out = tmp_path / "failed.html"
    r = cli("--project", root, "runs", "report", "latest", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "(failed)" in r.stdout
    shown = open_page(chromium, out, tmp_path / "failed.png")
    assert shown.problems == []
    for words in ("What went wrong", "failed", "h3pipe resume", "a resume computes",
                  "holds no published result"):
        assert words in shown.text, words
    assert "r.tif" in shown.text  # the error names the file


def test_report_of_a_partly_covered_run_shows_its_coverage(tmp_path, cli, chromium):
    """The raster covers the western half of the scope: the page names the share (by area,
    from pyproj.Geod), the cells with no valid pixel (from h3-py), and the exit code of
    --strict."""
    import h3
    import shapely
    from pyproj import Geod

    data = np.random.default_rng(6).normal(1500, 200, (200, 100)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.001)
    root = _project(tmp_path / "p", tif)
    r = cli("--project", root, "run", "p", "--bbox", BBOX, "--workers", "1", "--strict",
            "--max-null-share", "0.3")
    assert r.exit_code == 65, r.stderr
    scope = shapely.box(*map(float, BBOX.split(",")))
    raster = shapely.box(29.0, -2.1, 29.1, -1.9)
    geod = Geod(ellps="WGS84")
    share = (abs(geod.geometry_area_perimeter(scope & raster)[0])
             / abs(geod.geometry_area_perimeter(scope)[0]))
    cells = h3.geo_to_cells(scope, 7)
    null = sum(not shapely.Polygon([(x, y) for y, x in h3.cell_to_boundary(c)]
                                   ).intersects(raster) for c in cells)
    out = tmp_path / "partial.html"
    assert cli("--project", root, "runs", "report", "latest", "-o", out).exit_code == 0
    shown = open_page(chromium, out, tmp_path / "partial.png")
    assert shown.problems == []
    assert (f"covers {share:.0%} of bbox" in shown.text
            and f"{null} of {len(cells)} cells have no valid pixel (step stats)" in shown.text)
    assert "Warning: dataset ds (step stats)" in shown.text
    assert re.search(r"<th>exit code</th><td[^>]*>65</td>", out.read_text())


def test_an_unwritable_report_is_one_line(completed, cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = cli("--project", completed, "runs", "report", "latest", "-o", blocker / "r.html")
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot write" in r.stderr


def test_unknown_run_is_one_line_and_writes_nothing(completed, cli, tmp_path):
    out = tmp_path / "none.html"
    r = cli("--project", completed, "runs", "report", "nope-r7", "-o", out)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "no run 'nope-r7'" in r.stderr
    assert not out.exists()


def test_report_on_the_postgresql_store_shows_no_password(tmp_path, cli, chromium, pg_url):
    data = np.random.default_rng(4).normal(1500, 200, (200, 200)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.001)
    root = _project(tmp_path / "p", tif)
    assert cli("--project", root, "--store", pg_url, "db", "upgrade").exit_code == 0
    r = cli("--project", root, "--store", pg_url, "run", "p", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "pg.html"
    r = cli("--project", root, "--store", pg_url, "runs", "report", "latest", "-o", out)
    assert r.exit_code == 0, r.stderr
    page = out.read_text()
    assert "s3cret-pw" not in page
    shown = open_page(chromium, out, tmp_path / "pg.png")
    assert shown.problems == []
    assert shown.images == 3 and "Tasks per worker" in shown.text
    assert set(re.findall(r'data-lane="(w\d)"', page)) == {"w1", "w2"}


def test_report_while_running_then_after_an_interrupt(tmp_path, cli, chromium):
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    data = np.random.default_rng(6).normal(1500, 200, (200, 200)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.001)
    root = _project(tmp_path / "p", tif)
    proc = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "--project", str(root), "run", "p", "--bbox", BBOX,
         "--workers", "1", "--batch-size", "5", "--grace", "0.1"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "H3PIPE_FAULTS": "batch:sleep=0.5"})
    def completed() -> int:
        assert proc.poll() is None, proc.communicate(timeout=30)[1]
        uri = (root / ".h3pipe" / "catalog.sqlite").as_uri() + "?mode=rw"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
                return int(db.execute("SELECT count(*) FROM tasks WHERE status = "
                                      "'completed'").fetchone()[0])
        except sqlite3.OperationalError:  # not made or not migrated yet
            return 0

    try:
        wait_until(completed, 60, "a completed task")
        live = tmp_path / "live.html"
        r = cli("--project", root, "runs", "report", "latest", "-o", live)
        assert r.exit_code == 0, r.stderr
        shown = open_page(chromium, live, tmp_path / "live.png")
        assert shown.problems == []
        assert "Still running" in shown.text and "What went wrong" not in shown.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    out = tmp_path / "interrupted.html"
    assert cli("--project", root, "runs", "report", "latest", "-o", out).exit_code == 0
    shown = open_page(chromium, out, tmp_path / "interrupted.png")
    assert shown.problems == []
    for words in ("What went wrong", "interrupted (SIGINT)", "a resume computes", "130"):
        assert words in shown.text, words


def test_report_of_a_queue_run_has_a_lane_per_worker_process(tmp_path, workers, chromium):
    """Workers on the queue (two prefork processes of one 'h3pipe worker'): the timeline's
    lanes are the host:pid each task was delivered to, as the store recorded them."""
    import subprocess
    import sys

    import psycopg

    from tests.workers import BROKER

    data = np.random.default_rng(8).normal(1500, 200, (200, 200)).astype("float32")
    write_raster(workers.project / "r.tif", data, west=29.0, north=-1.9, res=0.001)
    _project(workers.project, workers.project / "r.tif")

    def h3pipe(*args):
        return subprocess.run([sys.executable, "-m", "h3pipe", "--project",
                               str(workers.project), *args], capture_output=True, text=True,
                              timeout=240, env=workers.env())

    assert h3pipe("db", "upgrade").returncode == 0
    workers.wait_ready(workers.start(concurrency=2))
    r = h3pipe("run", "p", "--bbox", BBOX, "--queue", BROKER, "--batch-size", "5")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "queue.html"
    r = h3pipe("runs", "report", "latest", "-o", str(out))
    assert r.returncode == 0, r.stderr
    with psycopg.connect(workers.store) as db:
        recorded = {w for (w,) in db.execute("SELECT worker FROM h3pipe.tasks")}
    page = out.read_text()
    lanes = set(re.findall(r'class="task"[^>]*data-lane="([^"]+)"', page)) | set(
        re.findall(r'data-lane="([^"]+)"[^>]*class="task"', page))
    assert lanes == recorded and all(":" in lane for lane in lanes)
    shown = open_page(chromium, out, tmp_path / "queue.png")
    assert shown.problems == [] and "amqp://" in shown.text  # the broker, without password
