"""Coverage: a raster that covers only part of a scope is named by ``plan``, ``run``,
``runs show`` and the record, with its share of the scope (by area on the ellipsoid) and
the cells with no valid pixel; a published dataset with too many of them warns, and
``--strict`` exits 65 once the data is published. Every expected number is computed here
with h3-py, shapely and pyproj.Geod, never read from h3pipe."""

from __future__ import annotations

import json
import sqlite3

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import Geod, Transformer

from h3pipe.planning.scope import resolve_scope
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

# 1 x 20 degrees at high latitude, where a share of the area is far from a share of the
# degrees: the raster covers the northern half of the latitudes, 42% of the area.
SCOPE = (10.0, 50.0, 11.0, 70.0)
SCOPE_ARG = "10,50,11,70"
LABEL = resolve_scope(bbox=SCOPE_ARG).label  # how h3pipe names the scope: not under test
RASTER = (9.0, 60.0, 12.0, 71.0)  # wide enough that no cell pokes out east, west or north
INSIDE = "10.2,62,10.8,68"  # a scope the raster covers whole
RES = 4


def _geod_area(geometry) -> float:
    """Area on WGS 84 by pyproj.Geod; edges cut short so they follow lon/lat lines."""
    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(shapely.segmentize(geometry, 0.01))
    return abs(area)


def _expected_share() -> float:
    scope = shapely.box(*SCOPE)
    return _geod_area(scope.intersection(shapely.box(*RASTER))) / _geod_area(scope)


def _expected_nulls() -> tuple[int, int]:
    """(cells whose outline misses the raster, cells): h3-py's cells with centres in the
    scope, outlines straight from h3.cell_to_boundary."""
    raster = shapely.box(*RASTER)
    cells = h3.geo_to_cells(shapely.box(*SCOPE), RES)
    outside = [c for c in cells if not shapely.Polygon(
        [(lng, lat) for lat, lng in h3.cell_to_boundary(c)]).intersects(raster)]
    return len(outside), len(cells)


@pytest.fixture
def project(tmp_path):
    west, south, east, north = RASTER
    res = 0.05
    data = np.full((round((north - south) / res), round((east - west) / res)), 100.0,
                   dtype="float32")
    tif = write_raster(tmp_path / "data" / "north.tif", data, west=west, north=north, res=res)
    return write_project(
        tmp_path / "proj", sources={"s": raster_source("s", str(tif))},
        pipelines={"p": zonal_pipeline("p", "s", ["mean", "count"], dataset="north",
                                       resolution=RES)})


def _catalog(project):
    return sqlite3.connect(project / ".h3pipe" / "catalog.sqlite")


def test_a_partly_covered_scope_says_so_in_run_record_and_runs_show(project, cli):
    null, cells = _expected_nulls()
    share = _expected_share()
    assert 0.40 < share < 0.45 and 0.5 < null / cells < 0.55  # not 50%: areas, not degrees
    r = cli("--project", project, "run", "p", "--bbox", SCOPE_ARG, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    note = (f"coverage: s covers {share:.0%} of {LABEL}; {null} of {cells} cells have no "
            "valid pixel (step stats)")
    assert note in r.stdout
    # the heading, before the run: the footprint alone
    assert f"  coverage: s covers {share:.0%} of {LABEL}\n" in r.stderr
    # one warning line: dataset, step, share, source
    [warning] = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warning == (f"warning: dataset north (step stats): {null / cells:.0%} of its cells "
                       f"have no valid pixel ({null} of {cells}), more than max_null_share "
                       f"0.5; s covers {share:.0%} of {LABEL}")

    run_id = r.stdout.split()[1]
    with _catalog(project) as db:
        params = json.loads(db.execute("SELECT params FROM runs WHERE run_id = ?",
                                       (run_id,)).fetchone()[0])
        by_task = db.execute("SELECT SUM(null_rows), COUNT(*) FROM tasks WHERE run_id = ?",
                             (run_id,)).fetchone()
    recorded = params["coverage"]
    assert recorded["footprints"]["s"] == pytest.approx(share, abs=1e-4)
    assert recorded["steps"] == [{"step": "stats", "source": "s", "published": True,
                                  "null": null, "rows": cells}]
    assert by_task[0] == null and by_task[1] > 1  # counted task by task, summed

    shown = cli("--project", project, "runs", "show", run_id)
    assert shown.exit_code == 0
    assert f"coverage:   {note.removeprefix('coverage: ')}" in shown.stdout
    assert f"warning:    dataset north (step stats): {null / cells:.0%}" in shown.stdout


def test_the_null_cells_are_those_the_data_has(project, cli, tmp_path):
    """The count is the published dataset's own: rows whose count is 0 and mean null."""
    assert cli("--project", project, "run", "p", "--bbox", SCOPE_ARG).exit_code == 0
    out = tmp_path / "north.parquet"
    assert cli("--project", project, "export", "north", "-o", out).exit_code == 0
    t = pq.read_table(out).to_pydict()
    empty = [c for c, n, m in zip(t["h3_index"], t["count"], t["mean"], strict=True)
             if n == 0 and m is None]
    raster = shapely.box(*RASTER)
    assert sorted(empty) == sorted(c for c in t["h3_index"] if not shapely.Polygon(
        [(lng, lat) for lat, lng in h3.cell_to_boundary(c)]).intersects(raster))


def test_plan_shows_the_footprint_share_before_running(project, cli):
    share = _expected_share()
    r = cli("--project", project, "plan", "p", "--bbox", SCOPE_ARG)
    assert r.exit_code == 0, r.stderr
    assert f"  coverage: s covers {share:.0%} of {LABEL}" in r.stdout.splitlines()
    r = cli("--project", project, "plan", "p", "--bbox", SCOPE_ARG, "--format", "json")
    assert json.loads(r.stdout)["footprints"]["s"] == pytest.approx(share, abs=1e-4)
    assert not (project / ".h3pipe").exists()  # nothing written


def test_strict_exits_65_after_publishing_and_a_higher_threshold_passes(project, cli,
                                                                        tmp_path):
    null, cells = _expected_nulls()
    r = cli("--project", project, "run", "p", "--bbox", SCOPE_ARG, "--strict")
    assert r.exit_code == 65, r.stderr
    assert " completed: " in r.stdout  # it ran and published
    assert (f"error: --strict: dataset north has more null cells than max_null_share 0.5 "
            f"allows ({null / cells:.0%} in step stats); the data is published") in r.stderr
    out = tmp_path / "north.parquet"
    assert cli("--project", project, "export", "north", "-o", out).exit_code == 0
    assert pq.read_table(out).num_rows == cells  # the data stays published
    # Asked again, the run is done: judged again, by the threshold given now.
    again = cli("--project", project, "run", "p", "--bbox", SCOPE_ARG, "--strict")
    assert again.exit_code == 65 and "already completed" in again.stdout
    looser = cli("--project", project, "run", "p", "--bbox", SCOPE_ARG, "--strict",
                 "--max-null-share", f"{null / cells + 0.01:.2f}")
    assert looser.exit_code == 0, looser.stderr
    assert "warning:" not in looser.stderr and "coverage: s covers" in looser.stdout
    bad = cli("--project", project, "run", "p", "--bbox", SCOPE_ARG, "--max-null-share", "2")
    assert bad.exit_code == 2


def test_a_pipeline_default_sets_the_threshold(project, cli):
    text = (project / "pipelines" / "p.yaml").read_text()
    (project / "pipelines" / "p.yaml").write_text(
        text.replace("batch_size: 50}", "batch_size: 50, max_null_share: 0.9}"))
    r = cli("--project", project, "run", "p", "--bbox", SCOPE_ARG, "--strict")
    assert r.exit_code == 0, r.stderr
    assert "warning:" not in r.stderr


def test_a_fully_covered_scope_says_nothing_extra(project, cli):
    r = cli("--project", project, "run", "p", "--bbox", INSIDE, "--strict")
    assert r.exit_code == 0, r.stderr
    assert "coverage" not in r.stdout + r.stderr and "warning" not in r.stderr
    shown = cli("--project", project, "runs", "show", "latest")
    assert "coverage" not in shown.stdout and "warning" not in shown.stdout
    plan = cli("--project", project, "plan", "p", "--bbox", INSIDE)
    assert "coverage" not in plan.stdout


def test_coverage_on_the_postgresql_store(project, cli, pg_url):
    null, cells = _expected_nulls()
    assert cli("--project", project, "--store", pg_url, "db", "upgrade").exit_code == 0
    r = cli("--project", project, "--store", pg_url, "run", "p", "--bbox", SCOPE_ARG,
            "--workers", "2")
    assert r.exit_code == 0, r.stderr
    shown = cli("--project", project, "--store", pg_url, "runs", "show", "latest")
    assert f"{null} of {cells} cells have no valid pixel (step stats)" in shown.stdout


def test_the_footprint_of_a_projected_raster_is_taken_on_the_ellipsoid(tmp_path):
    """A UTM raster over part of a lon/lat scope: its outline bends in lon/lat."""
    from h3pipe.planning.coverage import footprint_share
    from h3pipe.sources.raster import describe_raster

    # UTM 32N, 100 km x 200 km, south-west corner at (500 km, 6,600 km): about 9-10.7 E,
    # 59.5-61.3 N
    tif = write_raster(tmp_path / "utm.tif", np.ones((200, 100), "float32"), west=500_000,
                       north=6_800_000, res=1000, crs="EPSG:32632")
    info = describe_raster("u", str(tif), tmp_path)
    scope = shapely.box(9.5, 60.0, 12.0, 62.0)
    to_lonlat = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    outline = shapely.transform(
        shapely.segmentize(shapely.box(500_000, 6_600_000, 600_000, 6_800_000), 500),
        lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    expected = _geod_area(scope.intersection(outline)) / _geod_area(scope)
    assert 0.1 < expected < 0.9
    assert footprint_share([info], scope) == pytest.approx(expected, rel=1e-3)
    assert footprint_share([info], shapely.box(9.8, 60.2, 10.2, 60.6)) == 1.0


def test_the_footprint_across_the_antimeridian(tmp_path, cli):
    """A scope across 180 degrees (west > east) that a raster east of it covers half of:
    each side is 10 degrees wide, so the raster's side is half the area."""
    tif = write_raster(tmp_path / "east.tif", np.ones((200, 100), "float32"), west=170.0,
                       north=10.0, res=0.1)
    project = write_project(tmp_path / "proj", sources={"s": raster_source("s", str(tif))},
                            pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=3)})
    r = cli("--project", project, "plan", "p", "--bbox", "170,-10,-170,10", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["footprints"]["s"] == pytest.approx(0.5, abs=1e-6)
