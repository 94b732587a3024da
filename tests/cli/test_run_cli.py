"""``h3pipe run``, ``runs`` and ``export`` as a user runs them, in-process."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import h3
import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"


@pytest.fixture
def project(tmp_path):
    # A 0.25 x 0.25 degree raster whose value is its column index: easy to reason about.
    data = np.tile(np.arange(250, dtype="float32"), (250, 1))
    write_raster(tmp_path / "data" / "grad.tif", data, west=29.0, north=-1.95, res=0.001)
    return write_project(
        tmp_path / "proj",
        sources={"grad": raster_source("grad", str(tmp_path / "data" / "grad.tif"))},
        pipelines={"p": zonal_pipeline("p", "grad", ["mean", "count"], dataset="grad_stats")},
    )


def test_run_then_export_every_format(project, cli, tmp_path):
    r = cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert "completed" in r.stdout and "grad_stats" in r.stdout

    expected_cells = set(h3.geo_to_cells(__import__("shapely").box(29.02, -2.18, 29.18, -2.02), 7))
    out = tmp_path / "o.parquet"
    r = cli("--project", project, "export", "grad_stats", "-o", out)
    assert r.exit_code == 0, r.stderr
    t = pq.read_table(out)
    assert t.column_names == ["h3_index", "resolution", "mean", "count"]
    assert set(t.column("h3_index").to_pylist()) == expected_cells
    assert set(t.column("resolution").to_pylist()) == {7}

    csv = tmp_path / "o.csv"
    assert cli("--project", project, "export", "grad_stats", "-o", csv).exit_code == 0
    assert pcsv.read_csv(csv).num_rows == len(expected_cells)

    gj = tmp_path / "o.geojson"
    assert cli("--project", project, "export", "grad_stats", "-o", gj).exit_code == 0
    features = json.loads(gj.read_text())["features"]
    assert len(features) == len(expected_cells)
    f = features[0]
    ring = f["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 7
    lat, lng = h3.cell_to_latlng(f["properties"]["h3_index"])
    assert 29.0 < ring[0][0] < 29.3 and abs(lng - ring[0][0]) < 0.1


def test_same_run_is_reported_not_recomputed_and_force_replaces(project, cli, tmp_path):
    args = ("--project", project, "run", "p", "--bbox", BBOX, "--workers", "2",
            "--batch-size", "7")
    first = cli(*args)
    assert first.exit_code == 0 and " completed: " in first.stdout
    again = cli(*args)
    assert again.exit_code == 0 and "already completed" in again.stdout
    assert "nothing recomputed" in again.stdout
    forced = cli(*args, "--force")
    assert forced.exit_code == 0 and " completed: " in forced.stdout
    # One run id for the same inputs; another resolution is another run.
    assert first.stdout.split()[1] == forced.stdout.split()[1]
    other = cli(*args[:-4], "--resolution", "8", "--workers", "1")
    assert other.exit_code == 0 and other.stdout.split()[1] != first.stdout.split()[1]
    out = tmp_path / "o.parquet"
    assert cli("--project", project, "export", "grad_stats", "-o", out).exit_code == 0
    cells = pq.read_table(out, filters=[("resolution", "=", 7)]).column("h3_index").to_pylist()
    assert len(cells) == len(set(cells)) > 10
    # Only the newest result file of each resolution remains on disk.
    files = list((project / ".h3pipe" / "results").rglob("*.parquet"))
    assert len(files) == 2

    r = cli("--project", project, "runs", "list")
    assert r.exit_code == 0 and r.stdout.count("completed") == 2  # resolution 7 and 8
    run_id = first.stdout.split()[1]
    r = cli("--project", project, "runs", "show", run_id)
    assert r.exit_code == 0
    assert "status:     completed" in r.stdout and "rows out" in r.stdout
    assert cli("--project", project, "runs", "show", "latest").exit_code == 0
    # The timeline: the run, its stage and step, and one event per task.
    import sqlite3

    db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")
    events = db.execute("SELECT kind, subject, status FROM events WHERE run_id = ? "
                        "ORDER BY id", (run_id,)).fetchall()
    tasks = db.execute("SELECT count(*) FROM tasks WHERE run_id = ?", (run_id,)).fetchone()[0]
    assert events[0] == ("run", run_id, "running") and events[-1][:3] == (
        "cleanup", "stats", "dropped")
    assert ("run", run_id, "completed") in events and ("stage", "1", "completed") in events
    # Two attempts (the first and the forced one), one event per task each.
    assert sum(1 for e in events if e[0] == "task" and e[2] == "completed") == 2 * tasks > 2
    assert "timeline" in r.stdout and "run " in r.stdout
    assert "last successful step: stats" in r.stdout


def test_two_scopes_coexist_and_iso3_filter(project, cli, tmp_path):
    assert cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 0
    assert cli("--project", project, "run", "p", "--bbox", "29.05,-2.1,29.1,-2.05",
               "--resolution", "8", "--workers", "1").exit_code == 0
    out = tmp_path / "o.parquet"
    assert cli("--project", project, "export", "grad_stats", "-r", "8", "-o", out).exit_code == 0
    assert set(pq.read_table(out).column("resolution").to_pylist()) == {8}
    r = cli("--project", project, "export", "grad_stats", "--iso3", "RWA", "-o", out)
    assert r.exit_code == 2 and "has:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "nope", "--bbox", BBOX], "unknown pipeline 'nope'"),
    (["run", "p"], "exactly one of --iso3, --bbox or --aoi"),
    (["run", "p", "--iso3", "XYZ"], "unknown ISO3 country code 'XYZ'"),
    (["run", "p", "--bbox", BBOX, "--resolution", "16"], "outside 0..15"),
    (["run", "p", "--bbox", "10,10,11,11"], "does not overlap scope"),
    (["export", "nothing", "-o", "x.parquet"], "no results for dataset 'nothing'"),
    (["runs", "show", "no-such-run"], "no run 'no-such-run'"),
    (["run", "p", "--bbox", BBOX, "--bogus"], "No such option"),
])
def test_bad_input_is_one_line_and_exit_2(project, cli, args, message):
    cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "1")
    r = cli("--project", project, *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ")


def test_invalid_project_blocks_run_with_exit_2(project, cli):
    (project / "pipelines" / "p.yaml").write_text("id: p\nsteps: [\n")
    r = cli("--project", project, "run", "p", "--bbox", BBOX)
    assert r.exit_code == 2 and "pipelines/p.yaml:" in r.stderr and "YAML syntax" in r.stderr


def test_runs_list_without_store(tmp_path, cli):
    write_project(tmp_path)
    r = cli("--project", tmp_path, "runs", "list")
    assert r.exit_code == 2 and "no h3pipe store" in r.stderr


def test_catalog_is_readable_from_another_process_while_a_write_is_open(project, cli):
    assert cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 0
    db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite", isolation_level=None)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE runs SET status = 'running'")
    try:
        # A second terminal: a separate process, while this writer holds its transaction.
        proc = subprocess.run(
            [sys.executable, "-m", "h3pipe", "--project", str(project), "runs", "list"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        db.execute("ROLLBACK")
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stdout


def test_help_of_every_command_has_an_example(cli):
    for args in (["--help"], ["validate", "--help"], ["run", "--help"], ["export", "--help"],
                 ["runs", "list", "--help"], ["runs", "show", "--help"]):
        r = cli(*args)
        assert r.exit_code == 0
        assert "Example" in r.stdout, args


def test_quiet_with_a_log_file_is_silent_on_success_and_loud_on_error(project, cli, tmp_path):
    log = tmp_path / "logs" / "h3pipe.log"
    log.parent.mkdir()  # a missing folder is refused (test_hostile_inputs)
    r = cli("-q", "--log-file", log, "--project", project, "run", "p", "--bbox", BBOX,
            "--workers", "1")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
    text = log.read_text()
    assert "stage 1 [stats]" in text and " completed: " in text
    assert all(line[:4].isdigit() for line in text.splitlines())  # every line timestamped
    r = cli("-q", "--log-file", log, "--project", project, "run", "nope", "--bbox", BBOX)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: unknown pipeline 'nope'")
    assert "unknown pipeline 'nope'" in log.read_text().splitlines()[-1]
    # Without -q the terminal gets the result line as before.
    r = cli("--log-file", log, "--project", project, "run", "p", "--bbox", BBOX)
    assert "already completed" in r.stdout


def test_runs_show_ranks_the_tiles_by_the_time_spent_reading_them(tmp_path, cli):
    # Two tiles side by side; the scope spans both, so some batches read both.
    rng = np.random.default_rng(4)
    for name, west in (("w.tif", 29.0), ("e.tif", 29.1)):
        write_raster(tmp_path / "tiles" / name, rng.normal(5, 1, (100, 100)).astype("float32"),
                     west=west, north=-1.9, res=0.001)
    proj = write_project(tmp_path / "p",
                         sources={"s": raster_source("s", str(tmp_path / "tiles" / "*.tif"))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=8,
                                                        batch_size=10)})
    assert cli("--project", proj, "run", "p", "--bbox", "29.02,-1.98,29.18,-1.92",
               "--workers", "1").exit_code == 0
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    per_task = [json.loads(t) for (t,) in db.execute("SELECT tile_seconds FROM tasks")]
    assert per_task and all(t and all(s > 0 for s in t.values()) for t in per_task)
    assert any(len(t) == 2 for t in per_task)  # a batch on the seam read both tiles
    r = cli("--project", proj, "runs", "show", "latest")
    assert r.exit_code == 0
    lines = r.stdout.split("slowest tiles")[1].strip().splitlines()[1:3]
    shown = {ln.split(": ")[0].strip(): ln for ln in lines}
    assert set(shown) == {str(tmp_path / "tiles" / n) for n in ("w.tif", "e.tif")}
    for tile, line in shown.items():
        touching = sum(1 for t in per_task if tile in t)
        assert line.endswith(f"over {touching} task(s)")
    totals = [float(ln.split(": ")[1].split()[0]) for ln in lines]
    assert totals == sorted(totals, reverse=True)


def test_small_work_runs_in_process_unless_workers_are_asked_for(project, cli, monkeypatch):
    from h3pipe.execution.executors import machine

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    started: list[int] = []
    real = machine.ThreadExecutor

    def threads(workers, warm=None):
        started.append(workers)
        return real(workers, warm)

    # Zonal statistics over cells: workers, when there are any, are threads.
    monkeypatch.setattr(machine, "ThreadExecutor", threads)
    # A few dozen cells of a small raster: not worth starting workers.
    r = cli("--project", project, "run", "p", "--bbox", BBOX)
    assert r.exit_code == 0, r.stderr
    assert "1 worker(s)" in r.stderr and started == []
    assert _workers_recorded(project) == [1]
    # Asked for, workers are what runs, however small the work.
    r = cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "2", "--force")
    assert r.exit_code == 0, r.stderr
    assert "2 worker(s)" in r.stderr and started == [2]
    assert _workers_recorded(project) == [2]  # the same run, forced
    # Work that would pay for workers, but the run is done already: no worker starts.
    monkeypatch.setattr("h3pipe.forecast.costs.THREAD_START_S", -1.0)
    r = cli("--project", project, "run", "p", "--bbox", BBOX)
    assert r.exit_code == 0, r.stderr
    assert "already completed" in r.stdout and started == [2]


def _workers_recorded(project) -> list[int]:
    db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")
    try:
        return [json.loads(p)["workers"] for (p,) in db.execute("SELECT params FROM runs")]
    finally:
        db.close()
