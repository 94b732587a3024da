"""Conservation of extensive sums (h3pipe.execution.balance) and runs at several resolutions
(h3pipe.planning.pyramid), end to end through the CLI.

The expected sums come from exactextract called here on the raster file: over the union
of the run's cells made with shapely from ``h3.cell_to_boundary`` (not H3's outline, which
h3pipe uses), and over the scope box; the cells are listed by ``h3.geo_to_cells``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from exactextract import exact_extract
from shapely.geometry import shape

from tests.conftest import cell_feature, raster_source, write_project, write_raster

BBOX = (30.02, -1.82, 30.26, -1.64)
BOX = ",".join(str(v) for v in BBOX)


def _people(tmp_path: Path, params: str = "") -> Path:
    """People per 0.002-degree pixel with a nodata lake, over 30.0..30.3E, 1.6..1.84S."""
    rng = np.random.default_rng(11)
    data = rng.gamma(0.6, 40.0, size=(120, 150)).astype("float32")
    data[50:70, 60:90] = -1  # a lake: nodata, never people
    write_raster(tmp_path / "pop.tif", data, west=30.0, north=-1.6, res=0.002, nodata=-1)
    return write_project(tmp_path / "p", sources={"pop": raster_source(
        "pop", str(tmp_path / "pop.tif"), measure="extensive")},
        pipelines={"people": f"""\
            id: people
            output: {{dataset: people, theme: demographics}}
            defaults: {{resolution: 7, batch_size: 40}}
            steps:
              - id: stats
                operation: zonal_stats
                source: pop
                params: {{stats: [sum, density, coverage]{params}}}
            """})


def _params(project: Path, run_id: str) -> dict:
    with sqlite3.connect(project / ".h3pipe" / "catalog.sqlite") as db:
        (params,) = db.execute("SELECT params FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return json.loads(params)


def _run_id(out: str) -> str:
    return next(w for w in out.split() if w.startswith("people-r"))


def test_a_run_of_people_records_that_they_add_up(cli, tmp_path):
    project = _people(tmp_path)
    r = cli("--project", project, "run", "people", "--bbox", BOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    cells = sorted(h3.geo_to_cells(shapely.box(*BBOX), 7))
    union = shapely.union_all([shape(cell_feature(c)["geometry"]) for c in cells])
    with rasterio.open(tmp_path / "pop.tif") as ds:
        over_cells = exact_extract(ds, [{"type": "Feature", "properties": {}, "geometry":
                                         shapely.geometry.mapping(union)}], "sum")
        inside = exact_extract(ds, [{"type": "Feature", "properties": {}, "geometry":
                                     shapely.geometry.mapping(shapely.box(*BBOX))}], "sum")
    expected_union = over_cells[0]["properties"]["sum"]
    expected_scope = inside[0]["properties"]["sum"]

    figures = _params(project, _run_id(r.stdout + r.stderr))["conservation"]["stats"]
    (f,) = figures
    assert f["column"] == "sum"
    exported = tmp_path / "people.parquet"
    assert cli("--project", project, "export", "people", "-o", exported).exit_code == 0
    table = pq.read_table(exported)
    assert sorted(table["h3_index"].to_pylist()) == cells
    assert f["cells_sum"] == pytest.approx(sum(v or 0 for v in table["sum"].to_pylist()),
                                           rel=1e-12)
    assert f["union_sum"] == pytest.approx(expected_union, rel=1e-6)
    assert f["scope_sum"] == pytest.approx(expected_scope, rel=1e-6)
    assert f["relative_error"] < 1e-9
    # Cells by centre stick out of the box here and there: not the same total.
    assert f["captured"] == pytest.approx(expected_union / expected_scope, rel=1e-6)
    assert abs(f["captured"] - 1) > 1e-4

    shown = cli("--project", project, "runs", "show", "latest")
    line = next(x for x in shown.stdout.splitlines() if x.startswith("conservation:"))
    assert "stats.sum" in line and "relative error" in line and "capture" in line


def test_sums_that_do_not_add_up_fail_the_run_and_publish_nothing(cli, tmp_path):
    # A tolerance below rounding: the gap of 1e-13 or so between the kernel's sum and
    # exactextract's is then too much, which is how a real gap would be caught.
    project = _people(tmp_path, params=", conservation_tolerance: 1.0e-300")
    r = cli("--project", project, "run", "people", "--bbox", BOX, "--workers", "1")
    assert r.exit_code == 1
    assert "step 'stats': the cells' sum is" in r.stderr
    assert "nothing was published" in r.stderr
    assert "Traceback" not in r.stderr
    e = cli("--project", project, "export", "people", "-o", tmp_path / "x.parquet")
    assert e.exit_code == 2 and "no results for dataset 'people'" in e.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_a_batch_whose_rows_are_lost_fails_the_run_and_publishes_nothing(
        cli, tmp_path, monkeypatch, store_backend):
    """A really dropped batch, on either store: once the stage is done, task 2's rows are
    replaced by none through the store (a lost write, a bug in a step), as the check
    runs. The people of its cells are then missing from the sum, not from the raster."""
    from h3pipe import faults

    project = _people(tmp_path)
    lost = []
    point = faults.point

    def lose_a_batch(name: str) -> None:
        point(name)
        if name != "stage-completed":
            return
        [(run_id, ref)] = store_backend.sql(
            "SELECT run_id, output_path FROM tasks WHERE step_id = 'stats' AND task_no = 2")
        with store_backend.open() as store:
            lost.append(store.read_outputs([ref]))
            assert store.write_task_output(run_id, "stats", 2, lost[0].slice(0, 0)) == ref

    monkeypatch.setattr(faults, "point", lose_a_batch)
    r = cli(*store_backend.args, "--project", project, "run", "people", "--bbox", BOX,
            "--workers", "1")
    assert r.exit_code == 1, r.stderr
    [table] = lost
    assert table.num_rows > 10  # a batch of cells with people in it was lost
    error = r.stderr.strip().splitlines()[-1]
    assert "step 'stats': the cells' sum is" in error and "nothing was published" in error
    assert "Traceback" not in r.stderr

    # The figures in the message, against exactextract here: the raster over every cell of
    # the run, the cells' sum short of it by the people of the lost batch's cells.
    cells = sorted(h3.geo_to_cells(shapely.box(*BBOX), 7))
    with rasterio.open(tmp_path / "pop.tif") as ds:
        def people(ids: list[str]) -> float:
            union = shapely.union_all([shape(cell_feature(c)["geometry"]) for c in ids])
            return exact_extract(ds, [{"type": "Feature", "properties": {}, "geometry":
                                       shapely.geometry.mapping(union)}], "sum"
                                 )[0]["properties"]["sum"]
        everyone, missing = people(cells), people(table["h3_index"].to_pylist())
    said = re.search(r"the cells' sum is (\S+) but the raster holds (\S+) over", error)
    assert said, error
    cells_sum, union_sum = float(said[1]), float(said[2])
    assert union_sum == pytest.approx(everyone, rel=1e-6)
    assert cells_sum == pytest.approx(everyone - missing, rel=1e-6)
    assert missing > 0.01 * everyone

    e = cli(*store_backend.args, "--project", project, "export", "people", "-o",
            tmp_path / "x.parquet")
    assert e.exit_code == 2 and "no results for dataset 'people'" in e.stderr
    assert store_backend.sql("SELECT status FROM runs") == [("failed",)]
    assert store_backend.sql("SELECT count(*) FROM results") == [(0,)]


def test_an_intensive_source_is_not_checked(cli, tmp_path):
    project = _people(tmp_path)
    src = project / "sources" / "pop.yaml"
    src.write_text(src.read_text().replace("measure: extensive", "measure: intensive"))
    pipe = project / "pipelines" / "people.yaml"
    pipe.write_text(pipe.read_text().replace("[sum, density, coverage]", "[mean, coverage]"))
    r = cli("--project", project, "run", "people", "--bbox", BOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert "conservation" not in _params(project, _run_id(r.stdout + r.stderr))


def test_several_resolutions_in_one_command_each_exact(cli, tmp_path):
    project = _people(tmp_path)
    r = cli("--project", project, "run", "people", "--bbox", BOX, "--resolution", "6-8",
            "--workers", "1")
    assert r.exit_code == 0, r.stderr
    # One run reads the pixels once for the three, and checks each resolution's sums.
    assert "resolutions 6, 7, 8" in r.stdout
    checked = _params(project, _run_id(r.stdout))["conservation"]["stats"]
    assert sorted(f["resolution"] for f in checked) == [6, 7, 8]
    assert all(f["relative_error"] < 1e-6 for f in checked)
    exported = tmp_path / "all.parquet"
    assert cli("--project", project, "export", "people", "-o", exported).exit_code == 0
    rows = pq.read_table(exported).to_pylist()
    with rasterio.open(tmp_path / "pop.tif") as ds:
        for res in (6, 7, 8):
            mine = {x["h3_index"]: x["sum"] for x in rows if x["resolution"] == res}
            cells = sorted(h3.geo_to_cells(shapely.box(*BBOX), res))
            assert sorted(mine) == cells
            # Exact at every resolution: the pixels themselves, not finer cells' sums.
            sample = cells[:: max(1, len(cells) // 8)]
            expected = exact_extract(ds, [cell_feature(c) for c in sample], "sum",
                                     include_cols=["cell"])
            for e in expected:
                got = mine[e["properties"]["cell"]]
                assert got == pytest.approx(e["properties"]["sum"], rel=1e-6, abs=1e-9)


def test_a_pipeline_may_declare_its_resolutions(cli, tmp_path):
    project = _people(tmp_path)
    pipe = project / "pipelines" / "people.yaml"
    pipe.write_text(pipe.read_text().replace("resolution: 7,", "resolutions: '6-7',"))
    r = cli("--project", project, "run", "people", "--bbox", BOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert "resolutions 6, 7" in r.stdout
    one = cli("--project", project, "run", "people", "--bbox", BOX, "-r", "8",
              "--workers", "1")
    assert one.exit_code == 0 and "resolution 8" in one.stdout + one.stderr


@pytest.mark.parametrize("given, message", [
    ("9-5", "--resolution 9-5: the range runs backwards"),
    ("5-16", "--resolution 5-16: resolution 16 is outside 0..15"),
    ("six", "--resolution 'six' is not a resolution"),
])
def test_bad_resolutions_are_one_line_errors(cli, tmp_path, given, message):
    project = _people(tmp_path)
    r = cli("--project", project, "run", "people", "--bbox", BOX, "--resolution", given)
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_validate_refuses_a_backward_range_in_a_pipeline(cli, tmp_path):
    project = _people(tmp_path)
    pipe = project / "pipelines" / "people.yaml"
    pipe.write_text(pipe.read_text().replace("resolution: 7,", "resolutions: '9-4',"))
    r = cli("--project", project, "validate")
    assert r.exit_code == 1  # validate's own code for problems found
    assert "defaults.resolutions" in r.stdout + r.stderr
    assert "the range runs backwards" in r.stdout + r.stderr
