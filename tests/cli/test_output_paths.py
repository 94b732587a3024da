"""Where ``export -o`` and ``map -o`` may write: devices, FIFOs and folders are refused,
symlinks are written through, ``-`` is standard output for formats that stream, unknown
extensions are refused, and what a killed export leaves is removed by the next write and by
``h3pipe clean``."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"
TMP_MARK = ".h3pipe-tmp-"


def _project(tmp_path: Path, cli, resolution: int = 7, bbox: str = BBOX) -> Path:
    data = np.random.default_rng(7).normal(30, 3, (400, 400)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=28.95, north=-1.9, res=0.001)
    project = write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                            pipelines={"p": zonal_pipeline("p", "s", ["mean"],
                                                           resolution=resolution,
                                                           batch_size=20_000)})
    r = cli("--project", project, "run", "p", "--bbox", bbox, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    return project


@pytest.fixture
def project(tmp_path, cli):
    return _project(tmp_path, cli)


def _rows(project: Path) -> int:
    """The dataset's row count, read from its result file, not through export."""
    files = list((project / ".h3pipe" / "results").rglob("*.parquet"))
    return sum(pq.read_metadata(f).num_rows for f in files)


def _h3pipe(project: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "h3pipe", "--project", str(project), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_a_fifo_target_is_refused_and_left_alone(project, cli, tmp_path):
    fifo = tmp_path / "out.parquet"
    os.mkfifo(fifo)
    for command in (["export", "ds", "-o", fifo], ["map", "ds", "--run", "latest", "-o",
                                                   tmp_path / "pic.png"]):
        if command[0] == "map":
            os.mkfifo(tmp_path / "pic.png")
        r = cli("--project", project, *command)
        assert r.exit_code == 2, r.stderr
        assert "FIFO" in r.stderr and "not a file" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert fifo.is_fifo() and (tmp_path / "pic.png").is_fifo()
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_a_folder_target_is_refused(project, cli, tmp_path):
    (tmp_path / "d.csv").mkdir()
    r = cli("--project", project, "export", "ds", "-o", tmp_path / "d.csv")
    assert r.exit_code == 2 and "is a folder, not a file" in r.stderr
    assert list((tmp_path / "d.csv").iterdir()) == []


def test_an_empty_output_is_a_usage_error(project, cli):
    r = cli("--project", project, "export", "ds", "-o", "")
    assert r.exit_code == 2 and "-o/--output is empty" in r.stderr


def test_an_unknown_extension_is_refused_unless_a_format_is_given(project, cli, tmp_path):
    r = cli("--project", project, "export", "ds", "-o", tmp_path / "x.txt")
    assert r.exit_code == 2
    assert "cannot tell the format of 'x.txt'" in r.stderr and ".gpkg" in r.stderr
    assert not (tmp_path / "x.txt").exists()
    r = cli("--project", project, "export", "ds", "-o", tmp_path / "x.txt", "--format", "csv")
    assert r.exit_code == 0, r.stderr
    assert pcsv.read_csv(tmp_path / "x.txt").num_rows == _rows(project)


def test_a_symlink_is_written_through_and_kept(project, cli, tmp_path):
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "data.parquet"
    real.write_bytes(b"old")
    link = tmp_path / "link.parquet"
    link.symlink_to(real)
    r = cli("--project", project, "export", "ds", "-o", link)
    assert r.exit_code == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert pq.read_table(real).num_rows == _rows(project)
    assert f"through the symlink, to {real}" in r.stdout


def test_a_symlink_to_a_fifo_is_refused(project, cli, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link.csv").symlink_to(tmp_path / "fifo")
    r = cli("--project", project, "export", "ds", "-o", tmp_path / "link.csv")
    assert r.exit_code == 2 and "FIFO" in r.stderr
    assert (tmp_path / "fifo").is_fifo()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "geojson"])
def test_dash_writes_to_standard_output(project, fmt):
    args = ["export", "ds", "-o", "-"] + ([] if fmt == "csv" else ["--format", fmt])
    proc = _h3pipe(project, *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"to standard output" in err
    assert not (project / "-").exists() and not Path("-").exists()
    if fmt == "csv":
        rows = pcsv.read_csv(io.BytesIO(out)).num_rows
    elif fmt == "parquet":
        rows = pq.read_table(io.BytesIO(out)).num_rows
    else:
        import json

        rows = len(json.loads(out)["features"])
    assert rows == _rows(project)


@pytest.mark.parametrize("fmt", ["gpkg", "fgb"])
def test_dash_is_refused_for_formats_that_seek(project, cli, fmt):
    r = cli("--project", project, "export", "ds", "-o", "-", "--format", fmt)
    assert r.exit_code == 2
    assert f"{fmt} cannot be written to standard output" in r.stderr


def test_map_refuses_dash(project, cli):
    r = cli("--project", project, "map", "ds", "--run", "latest", "-o", "-")
    assert r.exit_code == 2 and "not to standard output" in r.stderr


def _wait_for(folder: Path, prefix: str, proc: subprocess.Popen, deadline_s: float) -> Path:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = [p for p in folder.iterdir() if p.name.startswith(prefix)]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1].decode()
        time.sleep(0.005)
    raise AssertionError(f"no {prefix}* appeared in {deadline_s} s")


def test_a_killed_export_leaves_a_temp_file_the_next_write_removes(tmp_path, cli):
    project = _project(tmp_path, cli, resolution=10, bbox="29.0,-2.3,29.35,-1.95")
    out = tmp_path / "out"
    out.mkdir()
    proc = _h3pipe(project, "export", "ds", "-o", str(out / "big.gpkg"))
    tmp = _wait_for(out, f".big.gpkg{TMP_MARK}{proc.pid}-", proc, 120)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert tmp.exists() and not (out / "big.gpkg").exists()
    mine = out / f".mine.csv{TMP_MARK}{os.getpid()}-0123abcd"  # a live writer's: kept
    mine.write_text("in progress")
    r = cli("--project", project, "export", "ds", "-o", out / "small.csv")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [mine.name, "small.csv"]


def test_clean_removes_stale_temp_files_of_outputs_folders(project, cli, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    elsewhere = tmp_path / "exports"
    elsewhere.mkdir()
    stale = [elsewhere / f".a.gpkg{TMP_MARK}{pid}-0badf00d.gpkg",
             project / "maps" / f".m.png{TMP_MARK}{pid}-0badf00d"]
    stale[1].parent.mkdir()
    for path in stale:
        path.write_bytes(b"x" * 1000)
    kept = elsewhere / f".b.csv{TMP_MARK}{os.getpid()}-0badf00d"
    kept.write_text("a live export")
    r = cli("--project", project, "clean", "--outputs", elsewhere, "--dry-run")
    assert r.exit_code == 0 and all(f"would remove {p}" in r.stdout for p in stale)
    assert all(p.exists() for p in stale)
    r = cli("--project", project, "clean", "--outputs", elsewhere)
    assert r.exit_code == 0, r.stderr
    assert all(f"removed {p}" in r.stdout for p in stale)
    assert not any(p.exists() for p in stale) and kept.exists()
