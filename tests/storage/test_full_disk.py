"""An embedded store on a full disk: read commands work (runs, export, map, plan, validate,
db status), a run says "no space left on the store's disk (...)" and exits 74 leaving no
temporary file and a sound catalog, and once space is freed the run completes.

The disk is a real one: an 8 MB tmpfs mounted for the test (root only; skipped elsewhere)
and filled with a file written until ENOSPC.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import h3
import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BOX = (29.0, -2.3, 29.35, -1.95)  # minx, miny, maxx, maxy
BBOX = ",".join(str(v) for v in BOX)
SMALL = "29.02,-2.18,29.18,-2.02"


@pytest.fixture
def disk(tmp_path):
    """An 8 MB file system of its own, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def _fill(disk: Path, headroom: int = 0) -> Path:
    """Write a file on ``disk`` until ENOSPC, then give ``headroom`` bytes back."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    if headroom:
        os.truncate(filler, filler.stat().st_size - headroom)
    return filler


def _box_cells(res: int, box: tuple[float, ...]) -> set[str]:
    minx, miny, maxx, maxy = box
    ring = [(miny, minx), (miny, maxx), (maxy, maxx), (maxy, minx)]  # (lat, lng)
    return set(h3.polygon_to_cells(h3.LatLngPoly(ring), res))


@pytest.fixture
def project(tmp_path, disk):
    data = np.random.default_rng(7).normal(30, 3, (400, 400)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=28.95, north=-1.9, res=0.001)
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=7)},
                         settings=f"store: {disk / 'store'}\n")
    r = h3pipe_(proj, "run", "p", "--bbox", SMALL, "--workers", "1")
    assert r.returncode == 0, r.stderr
    return proj


def _sound(catalog: Path) -> list[tuple[str, str]]:
    """The catalog's integrity check and its runs, read without writing a byte."""
    wal = catalog.with_name(catalog.name + "-wal")
    try:  # needs its shared-memory file to exist already, at its size
        db = sqlite3.connect(catalog.as_uri() + "?mode=ro", uri=True)
        db.execute("SELECT 1 FROM runs LIMIT 1")
    except sqlite3.OperationalError:
        assert not wal.exists() or wal.stat().st_size == 0  # the file alone is all
        db = sqlite3.connect(catalog.as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return db.execute("SELECT run_id, status FROM runs ORDER BY started_at").fetchall()
    finally:
        db.close()


def h3pipe_(project: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """A command in a process of its own, as from a shell: nothing of an earlier command's
    (an open catalog connection) is left to lean on."""
    return subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(project),
                           *map(str, args)], capture_output=True, text=True, timeout=300)


def _run(project: Path) -> subprocess.CompletedProcess[str]:
    return h3pipe_(project, "run", "p", "--bbox", BBOX, "-r", "9", "--workers", "1")


def _dotfiles(store: Path) -> list[Path]:
    return list(store.rglob(".*"))


def test_read_commands_work_on_a_full_disk(project, disk, tmp_path):
    store = disk / "store"
    [result] = list((store / "results").rglob("*.parquet"))
    expected = pq.read_table(result).sort_by("h3_index")
    _fill(disk)  # before anything opens the catalog: no connection leaves its files sized
    run_id = _sound(store / "catalog.sqlite")[0][0]
    for args in (["runs", "list"], ["runs", "show", run_id], ["db", "status"],
                 ["plan", "p", "--bbox", BBOX], ["validate"], ["sources", "list"]):
        r = h3pipe_(project, *args)
        assert r.returncode == 0, (args, r.stderr)
    assert run_id in h3pipe_(project, "runs", "list").stdout
    out = tmp_path / "out.parquet"  # another file system
    r = h3pipe_(project, "export", "ds", "-o", out)
    assert r.returncode == 0, r.stderr
    got = pq.read_table(out).sort_by("h3_index")
    assert got.column("h3_index").equals(expected.column("h3_index"))
    assert got.column("mean").equals(expected.column("mean"))
    r = h3pipe_(project, "map", "ds", "--run", run_id, "-o", tmp_path / "m.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert _dotfiles(store) == []


@pytest.mark.parametrize("headroom", [0, 300_000], ids=["full", "fills-mid-run"])
def test_a_run_on_a_full_disk_says_so_and_completes_once_space_is_freed(
        project, disk, headroom):
    store = disk / "store"
    filler = _fill(disk, headroom)
    before = _sound(store / "catalog.sqlite")
    r = _run(project)
    assert r.returncode == 74, r.stderr
    [line] = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert f"no space left on the store's disk ({store})" in line
    assert "Traceback" not in r.stderr
    assert _dotfiles(store) == []  # no temporary file left behind
    runs = _sound(store / "catalog.sqlite")
    assert runs[:len(before)] == before  # the earlier run is as it was
    assert len(list((store / "results").rglob("*.parquet"))) == 1
    filler.unlink()
    r = _run(project)  # a run the full disk cut short is resumed
    assert r.returncode == 0, r.stderr
    r = h3pipe_(project, "export", "ds", "-r", "9", "-o", disk.parent / "nine.csv")
    assert r.returncode == 0, r.stderr
    cells = pcsv.read_csv(disk.parent / "nine.csv").column("h3_index").to_pylist()
    assert sorted(cells) == sorted(_box_cells(9, BOX))


@pytest.mark.parametrize("name", ["x.parquet", "x.gpkg", "x.csv"])
def test_an_export_to_a_full_disk_says_so_and_leaves_nothing(project, disk, name):
    # The resolution-9 rows: an export of some hundred kB, more than a page of any format.
    r = _run(project)
    assert r.returncode == 0, r.stderr
    _fill(disk)
    r = h3pipe_(project, "export", "ds", "-r", "9", "-o", disk / name)
    assert r.returncode == 2, r.stderr
    assert f"cannot write {disk / name}: no space left on its disk" in r.stderr
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "store"]
