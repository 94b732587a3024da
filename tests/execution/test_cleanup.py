"""Intermediates: each policy, killed runs and their leftovers, and 'h3pipe clean' on both
stores."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import numpy as np
import psycopg
import pytest
import rasterio

from tests.conftest import raster_source, write_project, write_raster
from tests.waiting import wait_until

BBOX = "29.02,-2.18,29.18,-2.02"


def _pipeline(policy="on_success", ttl=None, resolution=7, batch=20):
    cleanup = f"{{policy: {policy}" + (f", ttl_hours: {ttl}" if ttl else "") + "}"
    return (f"id: p\noutput: {{dataset: ds, theme: terrain}}\n"
            f"defaults: {{resolution: {resolution}, batch_size: {batch}}}\n"
            f"steps:\n  - id: stats\n    operation: zonal_stats\n    source: s\n"
            f"    params: {{stats: [mean]}}\n    cleanup: {cleanup}\n")


def _project(tmp_path, **kw):
    data = np.random.default_rng(2).normal(50, 5, (250, 250)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.95, res=0.001)
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": _pipeline(**kw)})
    return proj, tif


def _two_steps(tmp_path, policy):
    """Stage 1 reads a good raster and writes its outputs; stage 2 reads a broken one."""
    proj, tif = _project(tmp_path)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(tif.read_bytes())
    _break(bad)
    (proj / "sources" / "b.yaml").write_text(raster_source("b", str(bad)))
    (proj / "pipelines" / "p.yaml").write_text(
        "id: p\noutput: {dataset: ds, theme: terrain}\ndefaults: {resolution: 7}\nsteps:\n"
        f"  - {{id: good, operation: zonal_stats, source: s, params: {{stats: [mean]}}, "
        f"cleanup: {{policy: {policy}}}}}\n"
        f"  - {{id: bad, operation: zonal_stats, source: b, params: {{stats: [max]}}, "
        f"depends_on: [good], cleanup: {{policy: {policy}}}}}\n")
    return proj


def _break(tif):
    """Keep the header, lose the pixels: the run fails in its first task."""
    with rasterio.open(tif) as src:
        profile = src.profile | {"driver": "COG", "compress": "deflate"}
        data = src.read()
    cog = tif.with_suffix(".cog.tif")
    with rasterio.open(cog, "w", **profile) as dst:
        dst.write(data)
    tif.write_bytes(cog.read_bytes()[: cog.stat().st_size // 3])


def _scratch(proj):
    base = proj / ".h3pipe" / "runs"
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


def test_on_success_drops_after_success_and_keeps_after_failure(tmp_path, cli):
    proj, _ = _project(tmp_path / "ok")
    assert cli("--project", proj, "run", "p", "--bbox", BBOX).exit_code == 0
    assert _scratch(proj) == []
    proj = _two_steps(tmp_path / "ko", "on_success")
    assert cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 1
    [left] = _scratch(proj)  # stage 1's outputs, kept for resuming
    r = cli("--project", proj, "clean", "--dry-run")
    assert r.exit_code == 0 and "nothing to remove" in r.stdout  # younger than 24 h
    r = cli("--project", proj, "clean", "--older-than", "0", "--dry-run")
    assert f"would remove runs/{left}/good" in r.stdout and _scratch(proj) == [left]
    r = cli("--project", proj, "clean", "--older-than", "0")
    assert f"removed runs/{left}/good" in r.stdout and "on_success" in r.stdout
    assert _scratch(proj) == []


def test_on_completion_drops_even_after_failure(tmp_path, cli):
    proj = _two_steps(tmp_path, "on_completion")
    assert cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 1
    assert _scratch(proj) == []


def test_manual_stays_until_asked(tmp_path, cli):
    proj, _ = _project(tmp_path, policy="manual")
    assert cli("--project", proj, "run", "p", "--bbox", BBOX).exit_code == 0
    [left] = _scratch(proj)
    assert "nothing to remove" in cli("--project", proj, "clean", "--older-than", "0").stdout
    r = cli("--project", proj, "clean", "--run", left)
    assert "asked for" in r.stdout and _scratch(proj) == []


def test_ttl_needs_hours(tmp_path, cli):
    proj, _ = _project(tmp_path)
    (proj / "pipelines" / "p.yaml").write_text(_pipeline(policy="ttl"))
    r = cli("--project", proj, "validate")
    assert r.exit_code == 1 and "policy 'ttl' needs 'ttl_hours'" in r.stdout


def _kill_mid_run(proj, extra=()):
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "h3pipe", *extra, "--project", str(proj),
                             "run", "p", "--bbox", BBOX, "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            # On worker processes, which a SIGKILL of the run orphans.
                            env={**os.environ, "H3PIPE_THREADS": "0"})
    try:
        workers = wait_until(lambda: _running(proc) and _workers(proc), 30, "two workers")
        # Some batches written: the kill must not land before the run is even recorded.
        wait_until(lambda: _running(proc) and _completed(proj, extra), 30,
                   "a completed task")
    except BaseException:
        proc.kill()
        proc.wait(timeout=30)
        raise
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    psutil.wait_procs(workers, timeout=10)  # the orphaned workers notice and leave


def _workers(proc):
    """The run's two pool workers (not the resource tracker), once both are there."""
    import psutil

    found = [c for c in psutil.Process(proc.pid).children()
             if "spawn_main" in " ".join(c.cmdline())]
    return found if len(found) == 2 else None


def _running(proc) -> bool:
    assert proc.poll() is None, "the run ended before it could be killed"
    return True


def _completed(proj, extra) -> int:
    """Tasks recorded completed (0 before the catalog is made and migrated)."""
    import sqlite3

    query = "SELECT count(*) FROM {}tasks WHERE status = 'completed'"
    try:
        if extra:
            import psycopg

            with psycopg.connect(extra[1]) as db:
                return int(db.execute(query.format("h3pipe.")).fetchone()[0])
        uri = (proj / ".h3pipe" / "catalog.sqlite").as_uri() + "?mode=rw"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            return int(db.execute(query.format("")).fetchone()[0])
    except Exception:  # not created or migrated yet (sqlite3 or psycopg errors)
        return 0


@pytest.mark.parametrize("store", ["embedded", "postgis"])
def test_a_killed_run_is_found_and_its_leftovers_cleaned(tmp_path, cli, store, request):
    proj, _ = _project(tmp_path, resolution=10, batch=10)
    extra: tuple[str, ...] = ()
    if store == "postgis":
        url = request.getfixturevalue("pg_url")
        extra = ("--store", url)
        assert cli(*extra, "--project", proj, "db", "upgrade").exit_code == 0
    _kill_mid_run(proj, extra)
    runs = cli(*extra, "--project", proj, "runs", "list").stdout
    assert "running" in runs  # nobody could record the kill
    r = cli(*extra, "--project", proj, "clean", "--older-than", "0")
    assert r.exit_code == 0, r.stderr
    assert "process is gone; marked it failed" in r.stdout and "removed" in r.stdout
    assert "failed" in cli(*extra, "--project", proj, "runs", "list").stdout
    if store == "embedded":
        assert _scratch(proj) == []
    else:
        with psycopg.connect(url.replace(":s3cret-pw", "")) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = "
                                "'h3_temp'").fetchone() == (0,)
