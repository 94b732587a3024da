"""Multi-step pipelines on a small synthetic scene whose numbers are known by
construction: buildings are squares of 0.0002 degrees centred in 0.001-degree pixels, so
each covers 4% of one pixel and samples that pixel; expected values per H3 cell are
computed here with h3 and numpy straight from the scene, not from h3pipe."""

from __future__ import annotations

import json
import textwrap
from collections import defaultdict

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_project, write_raster

WEST, NORTH, RES = 29.0, -1.9, 0.001
BBOX = "29.0,-2.0,29.1,-1.9"
NPIX = 100


def depth_at(col: int, row: int) -> float:
    return 0.05 * ((col + 2 * row) % 23)  # 0 .. 1.1 m


def pop_at(col: int, row: int) -> float:
    return float(1 + (3 * col + row) % 7)  # people per pixel


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    cols, rows = np.meshgrid(np.arange(NPIX), np.arange(NPIX))
    depth = np.vectorize(depth_at)(cols, rows).astype("float32")
    depth[40:45, :] = -9999  # a band of nodata: buildings there get no depth
    pop = np.vectorize(pop_at)(cols, rows).astype("float32")
    write_raster(root / "depth.tif", depth, west=WEST, north=NORTH, res=RES, nodata=-9999)
    write_raster(root / "pop.tif", pop, west=WEST, north=NORTH, res=RES)
    rng = np.random.default_rng(11)
    picks = rng.choice(NPIX * NPIX, size=600, replace=False)
    buildings = []
    for i, p in enumerate(sorted(picks)):
        row, col = divmod(int(p), NPIX)
        x = WEST + (col + 0.5) * RES
        y = NORTH - (row + 0.5) * RES
        h = 0.0001
        ring = [[x - h, y - h], [x + h, y - h], [x + h, y + h], [x - h, y + h], [x - h, y - h]]
        kind = "residential" if i % 3 else "commercial"
        buildings.append({"id": f"b{i}", "col": col, "row": row, "x": x, "y": y,
                          "kind": kind, "ring": ring})
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"bid": b["id"], "kind": b["kind"]},
         "geometry": {"type": "Polygon", "coordinates": [b["ring"]]}} for b in buildings]}
    (root / "buildings.geojson").write_text(json.dumps(gj))
    return root, buildings


def _sources(root, buildings_path=None):
    return {
        "depth": f"id: depth\nkind: raster\npath: '{root / 'depth.tif'}'\ntheme: hazard\n",
        "pop": f"id: pop\nkind: raster\npath: '{root / 'pop.tif'}'\ntheme: demographics\n",
        "buildings": textwrap.dedent(f"""\
            id: buildings
            kind: vector
            path: '{buildings_path or root / 'buildings.geojson'}'
            id_field: bid
            attributes: [kind]
            theme: infrastructure
            """),
    }


def _export(cli, proj, out, dataset):
    r = cli("--project", proj, "export", dataset, "-o", out)
    assert r.exit_code == 0, r.stderr
    return {row["h3_index"]: row for row in pq.read_table(out).to_pylist()}


def _expected_by_cell(buildings, resolution, scope_cells):
    groups = defaultdict(list)
    for b in buildings:
        cell = h3.latlng_to_cell(b["y"], b["x"], resolution)
        if cell in scope_cells:
            groups[cell].append(b)
    return groups


def _scope_cells(resolution):
    from shapely.geometry import box

    poly = h3.geo_to_cells(box(29.0, -2.0, 29.1, -1.9).__geo_interface__, resolution)
    return set(poly)


FLOOD_RISK = """\
id: flood_risk_weighted
output: {dataset: flood_risk, theme: hazard}
defaults: {resolution: 8, batch_size: 70}
steps:
  - id: depth_at_building
    operation: sample
    input: buildings
    source: depth
    output: intermediate
    params: {name: depth_m}
  - id: people
    operation: zonal_stats
    input: $depth_at_building
    source: pop
    output: intermediate
    params: {stats: [sum]}
  - id: risk
    operation: h3_weighted_aggregate
    input: $people
    params:
      aggregations:
        - {name: buildings, function: count}
        - {name: pop_weighted_depth_m, function: weighted_mean, column: depth_m, weight: sum}
        - {name: share_flooded, function: share, where: "depth_m > 0.5"}
        - {name: max_depth_m, function: max, column: depth_m}
        - {name: residential, function: count, where: "kind = 'residential'"}
"""


def test_three_step_population_weighted_flood_depth(scene, tmp_path, cli):
    root, buildings = scene
    proj = write_project(tmp_path / "p", sources=_sources(root),
                         pipelines={"flood_risk_weighted": FLOOD_RISK})
    assert cli("--project", proj, "validate").exit_code == 0
    r = cli("--project", proj, "run", "flood_risk_weighted", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    got = _export(cli, proj, tmp_path / "o.parquet", "flood_risk")

    expected = _expected_by_cell(buildings, 8, _scope_cells(8))
    assert set(got) == set(expected)
    for cell, members in expected.items():
        row = got[cell]
        depths = [None if 40 <= b["row"] < 45 else depth_at(b["col"], b["row"])
                  for b in members]
        # A square of 0.0002 degrees inside one pixel covers 4% of it.
        weights = [0.04 * pop_at(b["col"], b["row"]) for b in members]
        pairs = [(d, w) for d, w in zip(depths, weights, strict=True) if d is not None]
        assert row["buildings"] == len(members)
        assert row["residential"] == sum(b["kind"] == "residential" for b in members)
        assert row["share_flooded"] == pytest.approx(
            sum(1 for d in depths if d is not None and d > 0.5) / len(members))
        if pairs:
            wmean = sum(d * w for d, w in pairs) / sum(w for _, w in pairs)
            assert row["pop_weighted_depth_m"] == pytest.approx(wmean, rel=1e-5)
            assert row["max_depth_m"] == pytest.approx(max(d for d, _ in pairs), rel=1e-6)
        else:
            assert row["pop_weighted_depth_m"] is None and row["max_depth_m"] is None


EXPOSURE = """\
id: exposure
output: {dataset: exposure, theme: hazard}
defaults: {resolution: 7, batch_size: 100}
steps:
  - id: homes
    operation: filter
    input: buildings
    output: intermediate
    params: {where: "kind = 'residential'"}
  - id: depth
    operation: sample
    input: $homes
    source: depth
    output: intermediate
  - id: classes
    operation: transform
    input: $depth
    output: intermediate
    params:
      columns: {flooded: "coalesce(value > 0.3, false)", depth_cm: "value * 100"}
  - id: cells
    operation: h3_assign
    input: $classes
    output: intermediate
  - id: exposure
    operation: h3_weighted_aggregate
    input: $cells
    params:
      aggregations:
        - {name: homes, function: count}
        - {name: flooded_homes, function: count, where: flooded}
        - {name: mean_depth_cm, function: mean, column: depth_cm}
"""


def test_filter_transform_assign_and_aggregate(scene, tmp_path, cli):
    root, buildings = scene
    proj = write_project(tmp_path / "p", sources=_sources(root), pipelines={"e": EXPOSURE})
    r = cli("--project", proj, "run", "exposure", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    got = _export(cli, proj, tmp_path / "o.parquet", "exposure")
    homes = [b for b in buildings if b["kind"] == "residential"]
    expected = _expected_by_cell(homes, 7, _scope_cells(7))
    assert set(got) == set(expected)
    for cell, members in expected.items():
        depths = [depth_at(b["col"], b["row"]) for b in members if not 40 <= b["row"] < 45]
        assert got[cell]["homes"] == len(members)
        assert got[cell]["flooded_homes"] == sum(d > 0.3 for d in depths)
        if depths:
            assert got[cell]["mean_depth_cm"] == pytest.approx(np.mean(depths) * 100, rel=1e-5)


def test_a_failing_middle_step_resumes_from_it(scene, tmp_path, cli):
    import os
    import sqlite3
    import subprocess
    import sys

    root, _ = scene
    proj = write_project(tmp_path / "p", sources=_sources(root),
                         pipelines={"flood_risk_weighted": FLOOD_RISK})
    # The second batch of the middle step fails (a permanent error, not retried).
    failed = subprocess.run(
        [sys.executable, "-m", "h3pipe", "--project", str(proj), "run", "flood_risk_weighted",
         "--bbox", BBOX, "--workers", "1"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "H3PIPE_FAULTS": "batch.people:fail@2"})
    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert "fault injected at batch.people" in last
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    steps = dict(db.execute("SELECT step_id, status FROM steps").fetchall())
    assert steps == {"depth_at_building": "completed", "people": "failed", "risk": "pending"}
    first_tasks = db.execute("SELECT count(*) FROM tasks WHERE step_id = 'depth_at_building' "
                             "AND status = 'completed'").fetchone()[0]
    r = cli("--project", proj, "runs", "show", "latest")
    assert "last successful step: depth_at_building" in r.stdout
    assert "first failure:        people" in r.stdout

    r = cli("--project", proj, "run", "flood_risk_weighted", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0 and "completed (resumed)" in r.stdout, r.stderr
    run_id = r.stdout.split()[1]
    redone = db.execute(
        "SELECT count(*) FROM events WHERE run_id = ? AND kind = 'task' AND subject LIKE "
        "'depth_at_building#%' AND id > (SELECT max(id) FROM events WHERE run_id = ? AND "
        "status = 'resumed')", (run_id, run_id)).fetchone()[0]
    assert first_tasks > 0 and redone == 0  # the first step was not computed again
    fresh = write_project(tmp_path / "fresh", sources=_sources(root),
                          pipelines={"flood_risk_weighted": FLOOD_RISK})
    assert cli("--project", fresh, "run", "flood_risk_weighted", "--bbox", BBOX).exit_code == 0
    assert _export(cli, proj, tmp_path / "a.parquet", "flood_risk") == \
        _export(cli, fresh, tmp_path / "b.parquet", "flood_risk")


def test_postgis_store_keeps_feature_intermediates_in_unlogged_tables(scene, tmp_path, cli,
                                                                      pg_url):
    import psycopg

    root, _ = scene
    fresh = write_project(tmp_path / "e", sources=_sources(root),
                          pipelines={"flood_risk_weighted": FLOOD_RISK})
    assert cli("--project", fresh, "run", "flood_risk_weighted", "--bbox", BBOX).exit_code == 0
    keep = FLOOD_RISK.replace("    output: intermediate\n    params: {stats: [sum]}",
                              "    output: intermediate\n    cleanup: {policy: manual}\n"
                              "    params: {stats: [sum]}")
    proj = write_project(tmp_path / "p", sources=_sources(root),
                         pipelines={"flood_risk_weighted": keep},
                         settings=f"store: {pg_url}\n")
    assert cli("--project", proj, "db", "upgrade").exit_code == 0
    r = cli("--project", proj, "run", "flood_risk_weighted", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    assert _export(cli, proj, tmp_path / "pg.parquet", "flood_risk") == \
        _export(cli, fresh, tmp_path / "emb.parquet", "flood_risk")
    with psycopg.connect(pg_url) as conn:
        kinds = conn.execute(
            "SELECT c.relname, c.relpersistence FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname = 'h3_temp' AND c.relkind = 'r'").fetchall()
        # The manual-cleanup step's features stay, with their geometry, in an UNLOGGED table.
        people = [name for name, persistence in kinds if name.endswith("__people")]
        assert people and all(p == "u" for _, p in kinds)
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_schema = 'h3_temp' AND table_name = %s", (people[0],)).fetchall())
        assert types["geometry"] == "bytea" and types["sum"] == "double precision"


def test_a_scope_without_features_publishes_an_empty_dataset(scene, tmp_path, cli):
    root, buildings = scene
    proj = write_project(tmp_path / "p", sources=_sources(root),
                         pipelines={"flood_risk_weighted": FLOOD_RISK})
    r = cli("--project", proj, "run", "flood_risk_weighted", "--bbox", "29.2,-1.99,29.3,-1.91")
    assert r.exit_code == 2 and "does not overlap" in r.stderr  # outside the rasters: refused
    # A block of 8 x 8 pixels inside the rasters where no building lies.
    taken = {(b["row"], b["col"]) for b in buildings}
    row, col = next((r, c) for r in range(0, NPIX - 8) for c in range(0, NPIX - 8)
                    if not any((r + i, c + j) in taken for i in range(8) for j in range(8)))
    # The scope keeps a pixel's margin inside the block: cells at resolution 10 reach at
    # most 0.0007 degrees beyond their centres, so none of them holds a building.
    west, north = WEST + (col + 1) * RES, NORTH - (row + 1) * RES
    bbox = f"{west},{north - 6 * RES},{west + 6 * RES},{north}"
    assert _scope_cells_of(bbox, 10)
    r = cli("--project", proj, "run", "flood_risk_weighted", "--bbox", bbox, "-r", "10")
    assert r.exit_code == 0, r.stderr
    assert "has no rows" in r.stderr
    assert _export(cli, proj, tmp_path / "o.parquet", "flood_risk") == {}


def _scope_cells_of(bbox, resolution):
    from shapely.geometry import box

    return h3.geo_to_cells(box(*map(float, bbox.split(","))).__geo_interface__, resolution)


def test_every_published_step_lands_in_one_dataset_and_rows_are_batched_by_rows(
        scene, tmp_path, cli):
    import sqlite3

    root, buildings = scene
    both = textwrap.dedent("""\
        id: both
        output: {dataset: both, theme: hazard}
        defaults: {resolution: 8, batch_size: 100}
        steps:
          - id: people
            operation: zonal_stats
            source: pop
            params: {stats: [sum]}
          - id: count
            operation: h3_weighted_aggregate
            input: buildings
            params: {aggregations: [{name: buildings, function: count}]}
        """)
    proj = write_project(tmp_path / "p", sources=_sources(root), pipelines={"both": both})
    r = cli("--project", proj, "run", "both", "--bbox", BBOX, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    got = _export(cli, proj, tmp_path / "o.parquet", "both")
    scope = _scope_cells(8)
    expected = _expected_by_cell(buildings, 8, scope)
    assert set(got) == scope  # every cell, from the cell step
    for cell, row in got.items():
        assert row["sum"] is not None
        assert row["buildings"] == (len(expected[cell]) if cell in expected else None)
    # The cell step's batches follow the cells, the feature step's follow its rows: about
    # 100 rows a task, not the cell step's smaller batches.
    db = sqlite3.connect(proj / ".h3pipe" / "catalog.sqlite")
    tasks = dict(db.execute("SELECT step_id, tasks_total FROM steps").fetchall())
    rows_in = sum(1 for b in buildings if h3.latlng_to_cell(b["y"], b["x"], 8) in scope)
    assert tasks["count"] <= -(-rows_in // 100) + len(expected)  # groups never split
    assert tasks["people"] == -(-len(scope) // min(100, -(-len(scope) // 8)))
