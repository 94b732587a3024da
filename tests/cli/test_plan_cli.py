"""``h3pipe plan``: what a run would do, computed without running it; every number checked
against h3, the files themselves or the catalog the real run leaves behind."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sqlite3
import subprocess
import sys

import h3
import numpy as np
import pytest
import shapely

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

# Two 0.2-degree tiles side by side at 0.001 degrees; the scope lies in the western one.
BBOX = (29.02, -2.18, 29.16, -2.04)
BBOX_ARG = ",".join(map(str, BBOX))


def _project(tmp_path, *, resolution=9, batch_size=40):
    rng = np.random.default_rng(3)
    for name, west in (("w", 29.0), ("e", 29.2)):
        write_raster(tmp_path / "tiles" / f"{name}.tif",
                     rng.normal(500, 50, (200, 200)).astype("float32"), west=west, north=-2.0,
                     res=0.001)
    return write_project(
        tmp_path / "p", sources={"s": raster_source("s", str(tmp_path / "tiles" / "*.tif"))},
        pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=resolution,
                                       batch_size=batch_size)})


def _plan(cli, proj, *args):
    r = cli("--project", proj, "plan", "p", "--bbox", BBOX_ARG, "--workers", "2",
            "--format", "json", *args)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_plan_of_a_new_run_counts_cells_tasks_tiles_bytes_and_pixels(tmp_path, cli):
    proj = _project(tmp_path)
    plan = _plan(cli, proj)
    cells = h3.geo_to_cells(shapely.box(*BBOX), 9)
    assert plan["status"] == "new" and plan["cells"] == len(cells)
    # Batches of at most 40 cells, finer so that each of 2 workers gets 4 or more.
    size = min(40, math.ceil(len(cells) / 8))
    assert plan["batch_size"] == size
    assert [(s["steps"], s["tasks"], s["rows"], s["estimate"]) for s in plan["stages"]] == [
        (["stats"], math.ceil(len(cells) / size), len(cells), None)]
    [src] = plan["sources"]
    assert src["files"] == 1  # the eastern tile is not touched
    assert src["bytes"] == os.path.getsize(tmp_path / "tiles" / "w.tif")
    # The bbox is aligned to the 0.001-degree grid: 140 x 140 pixels, exactly.
    assert src["pixels"] == 140 * 140
    assert src["pixels_per_cell"] == pytest.approx(140 * 140 / len(cells))
    assert plan["estimate"]["basis"].startswith("no history yet")
    # Nothing written, nothing started.
    assert not (proj / ".h3pipe").exists()
    assert not multiprocessing.active_children()


def test_plan_run_id_and_status_follow_the_real_run(tmp_path, cli):
    proj = _project(tmp_path)
    before = _plan(cli, proj)
    r = cli("--project", proj, "run", "p", "--bbox", BBOX_ARG, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split()[1] == before["run_id"]
    # run printed the same heading before it started.
    text = cli("--project", proj, "plan", "p", "--bbox", BBOX_ARG, "--workers", "2")
    assert f"run {before['run_id']}: completed before" in text.stdout.splitlines()[0]
    assert f"run {before['run_id']}: new run" in r.stderr
    assert any(line.endswith(text.stdout.splitlines()[3].strip()) for line in
               r.stderr.splitlines() if "stage 1 [stats]" in line)
    after = _plan(cli, proj)
    assert after["status"] == "done" and after["run_id"] == before["run_id"]
    assert after["estimate"]["basis"] == "from 1 earlier run(s) in this store"
    assert _plan(cli, proj, "--force")["status"] == "forced"


def test_plan_of_a_failed_run_counts_the_tasks_a_resume_keeps(tmp_path, cli):
    proj = _project(tmp_path)
    failed = subprocess.run(
        [sys.executable, "-m", "h3pipe", "--project", str(proj), "run", "p", "--bbox",
         BBOX_ARG, "--workers", "1"], capture_output=True, text=True,
        env={**os.environ, "H3PIPE_FAULTS": "batch:fail@4"})
    assert failed.returncode == 1
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    done = db.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()[0]
    assert done == 3
    plan = _plan(cli, proj, "--workers", "1")
    assert plan["status"] == "resumable" and plan["kept_tasks"] == done
    assert _plan(cli, proj, "--workers", "1", "--from-step", "stats")["kept_tasks"] == 0


def test_plan_warns_when_cells_are_smaller_than_a_pixel(tmp_path, cli):
    write_raster(tmp_path / "coarse.tif", np.ones((20, 20), dtype="float32"), west=29.0,
                 north=-2.0, res=0.01)
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", str(
        tmp_path / "coarse.tif"))}, pipelines={"p": zonal_pipeline("p", "s", ["mean"],
                                                                   resolution=10)})
    r = cli("--project", proj, "plan", "p", "--bbox", "29.05,-2.1,29.06,-2.09")
    assert r.exit_code == 0, r.stderr
    # A 0.01-degree pixel near 2 degrees south, by hand: 1113 m x 1106 m.
    pixel_m2 = (0.01 * 111_320 * math.cos(math.radians(2.095))) * (0.01 * 110_574)
    match = max(res for res in range(16) if h3.average_hexagon_area(res, "m^2") >= pixel_m2)
    warning = next(line for line in r.stdout.splitlines() if "warning:" in line)
    assert "smaller than a pixel" in warning and f"resolution {match} matches" in warning


def test_plan_warns_when_cells_hold_very_many_pixels(tmp_path, cli):
    write_raster(tmp_path / "fine.tif", np.ones((1000, 1000), dtype="uint8"), west=29.0,
                 north=-1.0, res=0.001)
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", str(
        tmp_path / "fine.tif"))}, pipelines={"p": zonal_pipeline("p", "s", ["mean"],
                                                                 resolution=4)})
    r = cli("--project", proj, "plan", "p", "--bbox", "29.0,-2.0,30.0,-1.0", "--format",
            "json")
    assert r.exit_code == 0, r.stderr
    [src] = json.loads(r.stdout)["sources"]
    assert src["pixels"] == 1000 * 1000
    assert any("pixels each" in w for w in src["warnings"])


@pytest.mark.parametrize("args, message", [
    (["nope", "--bbox", BBOX_ARG], "unknown pipeline 'nope'"),
    (["p", "--bbox", BBOX_ARG, "--format", "yaml"], "--format 'yaml'"),
    (["p", "--bbox", BBOX_ARG, "-r", "16"], "resolution 16 is outside 0..15"),
    (["p", "--bbox", BBOX_ARG, "--from-step", "stat"], "not a step of pipeline 'p'"),
    (["p"], "give exactly one of --iso3, --bbox or --aoi"),
])
def test_plan_refuses_bad_input_with_exit_2(tmp_path, cli, args, message):
    r = cli("--project", _project(tmp_path), "plan", *args)
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_plan_counts_features_and_estimates_the_rows_of_later_stages(tmp_path, cli):
    import textwrap

    write_raster(tmp_path / "depth.tif", np.ones((200, 200), dtype="float32"), west=29.0,
                 north=-2.0, res=0.001)
    rng = np.random.default_rng(5)
    # 300 points inside the scope, 50 outside it (east of the box).
    xs = np.concatenate([rng.uniform(29.03, 29.15, 300), rng.uniform(29.17, 29.19, 50)])
    ys = rng.uniform(-2.17, -2.05, 350)
    features = [{"type": "Feature", "properties": {"bid": i},
                 "geometry": {"type": "Point", "coordinates": [x, y]}}
                for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    (tmp_path / "pts.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                      "features": features}))
    proj = write_project(tmp_path / "p", sources={
        "depth": raster_source("depth", str(tmp_path / "depth.tif")),
        "pts": f"id: pts\nkind: vector\npath: '{tmp_path / 'pts.geojson'}'\nid_field: bid\n"
               "theme: infrastructure\n"},
        pipelines={"p": textwrap.dedent("""\
            id: p
            output: {dataset: ds, theme: infrastructure}
            defaults: {resolution: 8, batch_size: 1000}
            steps:
              - {id: depth, operation: sample, input: pts, source: depth,
                 output: intermediate, params: {name: d}}
              - id: agg
                operation: h3_weighted_aggregate
                input: $depth
                params: {aggregations: [{name: n, function: count}]}
            """)})
    plan = _plan(cli, proj, "--workers", "1")
    run_cells = set(h3.geo_to_cells(shapely.box(*BBOX), 8))
    inside = sum(h3.latlng_to_cell(y, x, 8) in run_cells for x, y in zip(xs, ys, strict=True))
    assert 290 <= inside <= 300  # the box's edge cells may leave out a few
    first, second = plan["stages"]
    assert (first["rows"], first["unit"], first["estimate"]) == (inside, "rows", None)
    assert second["rows"] == inside
    assert second["estimate"] == "step 'depth' gives one row per input row"
    [vector] = [s for s in plan["sources"] if s["kind"] == "vector"]
    assert vector["features"] == inside
    assert vector["bytes"] == os.path.getsize(tmp_path / "pts.geojson")


def test_plan_writes_nothing_to_an_existing_store(tmp_path, cli):
    proj = _project(tmp_path)
    assert cli("--project", proj, "run", "p", "--bbox", BBOX_ARG, "--workers", "1"
               ).exit_code == 0

    def snapshot():
        db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE "
                                           "type = 'table' ORDER BY name")]
        state = {t: db.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
        db.close()
        files = sorted(str(p.relative_to(proj)) for p in (proj / ".h3pipe").rglob("*")
                       if p.is_file() and not p.name.startswith("catalog.sqlite"))
        return state, files

    before = snapshot()
    for extra in ([], ["--force"], ["--from-step", "stats"], ["-r", "8"]):
        assert cli("--project", proj, "plan", "p", "--bbox", BBOX_ARG, *extra).exit_code == 0
    assert snapshot() == before
