"""``h3pipe export`` of one scope: by the --bbox or --aoi a run was given, or by --run; the
rows are exactly that scope's cells, computed here straight from h3."""

from __future__ import annotations

import json
import sqlite3

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

RES = 7
BOX = (29.02, -2.18, 29.18, -2.02)  # minx, miny, maxx, maxy
BBOX = ",".join(str(v) for v in BOX)
# A triangle overlapping the box's east side: some cells lie in both scopes.
TRIANGLE = [(29.12, -2.15), (29.26, -2.15), (29.2, -2.0), (29.12, -2.15)]  # (lng, lat)


@pytest.fixture
def project(tmp_path):
    data = np.random.default_rng(7).normal(30, 3, (400, 400)).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=28.95, north=-1.9, res=0.001)
    aoi = tmp_path / "area.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in TRIANGLE]]}}]}))
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=RES)})


def _box_cells():
    minx, miny, maxx, maxy = BOX
    ring = [(miny, minx), (miny, maxx), (maxy, maxx), (maxy, minx)]  # (lat, lng)
    return set(h3.polygon_to_cells(h3.LatLngPoly(ring), RES))


def _triangle_cells():
    return set(h3.polygon_to_cells(h3.LatLngPoly([(lat, lng) for lng, lat in TRIANGLE[:-1]]),
                                   RES))


def _run_both(cli, project):
    aoi = project.parent / "area.geojson"
    for scope in (["--bbox", BBOX], ["--aoi", aoi]):
        r = cli("--project", project, "run", "p", *scope, "--workers", "1")
        assert r.exit_code == 0, r.stderr
    db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")
    ids = dict(db.execute("SELECT substr(scope_key, 1, 3), run_id FROM runs").fetchall())
    db.close()
    return ids["bbo"], ids["aoi"]


def _cells(cli, project, out, *options):
    r = cli("--project", project, "export", "ds", "-o", out, *options)
    assert r.exit_code == 0, r.stderr
    cells = pq.read_table(out).column("h3_index").to_pylist()
    assert len(cells) == len(set(cells))
    return set(cells)


def test_each_scope_exports_on_its_own(project, cli, tmp_path):
    box_run, aoi_run = _run_both(cli, project)
    box, triangle = _box_cells(), _triangle_cells()
    assert box & triangle and box - triangle and triangle - box  # the test means something
    out = tmp_path / "o.parquet"
    assert _cells(cli, project, out, "--bbox", BBOX) == box
    assert _cells(cli, project, out, "--aoi", project.parent / "area.geojson") == triangle
    assert _cells(cli, project, out, "--run", box_run) == box
    assert _cells(cli, project, out, "--run", aoi_run[:-3]) == triangle  # a unique prefix
    assert _cells(cli, project, out, "--run", "latest", "-r", str(RES)) == triangle
    assert _cells(cli, project, out) == box | triangle  # no scope option: all of them


def test_a_scope_or_run_without_results_is_one_line_and_exit_2(project, cli, tmp_path):
    box_run, _ = _run_both(cli, project)
    out = tmp_path / "o.parquet"

    def error(*options):
        r = cli("--project", project, "export", "ds", "-o", out, *options)
        assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r.stderr

    err = error("--bbox", "29.0,-2.2,29.1,-2.1")
    assert "no results for dataset 'ds'" in err
    assert f"bbox {BBOX} at resolution {RES} (run {box_run})" in err
    assert "aoi area.geojson" in err
    assert "at most one of --iso3, --bbox, --aoi or --run (got --bbox, --run)" in error(
        "--bbox", BBOX, "--run", box_run)
    assert "no run 'nope'" in error("--run", "nope")
    assert error("--where", "year=1999") == ("error: --where year: the dataset has no key "
                                            "'year' (it is one row per cell: no scenarios "
                                            "or bands)\n")
    assert f"run {box_run} computed resolution {RES}, not 8" in error("--run", box_run,
                                                                      "-r", "8")

    # A run that failed before publishing (its row planted beside the real one's).
    db = sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")
    columns = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    copied = ", ".join("'failed-run'" if c == "run_id" else "'failed'" if c == "status"
                       else c for c in columns)
    db.execute(f"INSERT INTO runs SELECT {copied} FROM runs WHERE run_id = ?", (box_run,))
    db.commit()
    db.close()
    err = error("--run", "failed-run")
    assert "run failed-run published nothing (status failed" in err
    assert f"the scope's result is run {box_run}'s: export it with --run {box_run}" in err


def test_a_replaced_result_names_the_run_that_replaced_it(project, cli, tmp_path):
    old_run, _ = _run_both(cli, project)
    # Another statistic makes another pipeline hash, so another run of the same scope.
    (project / "pipelines" / "p.yaml").write_text(
        zonal_pipeline("p", "s", ["mean", "max"], resolution=RES))
    assert cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 0
    r = cli("--project", project, "export", "ds", "-o", tmp_path / "o.parquet", "--run", old_run)
    assert r.exit_code == 2
    assert f"run {old_run} no longer holds the result of bbox" in r.stderr
    assert "replaced it; export it with --run " in r.stderr


def test_a_where_value_the_sweep_lacks_is_one_line_and_exit_2(tmp_path, cli):
    from tests.execution.test_sweep import BBOX as SWEEP_BBOX
    from tests.execution.test_sweep import _project as sweep_project
    from tests.execution.test_sweep import make_scene

    root = sweep_project(make_scene(tmp_path / "scene"), tmp_path / "p")
    assert cli("--project", root, "run", "z", "--bbox", SWEEP_BBOX, "--workers", "1"
               ).exit_code == 0
    every = "a-2020, a-2050-s1, a-2050-s2, b-2020, b-2050-s1, b-2050-s2"
    refused = {
        ("year=1999",): "--where year: no value 1999 (values: 2020, 2050)",
        ("year=2020,1999,2070",): "--where year: no value 1999, 2070 (values: 2020, 2050)",
        ("kind=b", "scenario=b-2020,c-2020"):
            f"--where scenario: no value c-2020 (values: {every})",
        ("return_period=rp5",): "--where return_period: no band rp5 (bands: rp10, rp100, "
                                "rp1000)",
        ("year=2020", "ssp=s1"):
            f"--where year=2020 --where ssp=s1: no scenario has all of these (scenarios: "
            f"{every})",
    }
    for fmt, layout in [("csv", "wide"), ("parquet", "long"), ("geoparquet", "wide"),
                        ("geojson", "long"), ("gpkg", "wide"), ("fgb", "wide")]:
        out = tmp_path / f"x.{fmt}"
        for wheres, message in refused.items():
            r = cli("--project", root, "export", "zds", "-o", out, "--format", fmt,
                    "--layout", layout, *[a for w in wheres for a in ("--where", w)])
            assert (r.exit_code, r.stderr) == (2, f"error: {message}\n"), (fmt, wheres)
            assert not out.exists()

    everything = tmp_path / "all.parquet"
    assert cli("--project", root, "export", "zds", "-o", everything).exit_code == 0
    rows = pq.read_table(everything).to_pylist()
    out = tmp_path / "b2050.parquet"
    r = cli("--project", root, "export", "zds", "-o", out, "--where", "kind=b",
            "--where", "year=2050", "--where", "return_period=rp10")
    assert r.exit_code == 0, r.stderr
    kept = pq.read_table(out).to_pylist()
    expected = [row for row in rows if row["kind"] == "b" and row["year"] == "2050"]
    assert len(kept) == len(expected) > 0
    assert {c for c in kept[0] if c.startswith("rp")} == {"rp10_mean", "rp10_max", "rp10_count"}
    assert {(k["h3_index"], k["scenario"], k["rp10_mean"]) for k in kept} == {
        (e["h3_index"], e["scenario"], e["rp10_mean"]) for e in expected}
