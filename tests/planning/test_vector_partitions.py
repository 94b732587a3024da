"""Vector sources read in partitions (issue 24): every feature in exactly one batch, in
every format, without the planner holding a row; a cell's rows never split between
batches; joins near partition edges, and resumes after SIGKILL, as with one batch.

Expected sets and numbers are computed here from the input geometries with shapely and
h3-py, never with h3pipe's own code.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys

import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from h3pipe.planning.batching import Batcher
from h3pipe.planning.feeds import fed
from h3pipe.planning.scope import Scope, scope_cells
from h3pipe.sources.vector import vector_info
from h3pipe.spec import StepSpec
from tests.conftest import raster_source, write_project, write_raster

BOX = (29.0, -2.1, 29.3, -1.8)
# A hexagon-ish scope: its edge crosses partitions, so the scope rule matters there.
SCOPE = shapely.Polygon([(29.02, -1.95), (29.1, -2.08), (29.22, -2.07), (29.28, -1.95),
                         (29.2, -1.82), (29.08, -1.83)])
RES = 8


def _footprints(seed: int = 3) -> tuple[list[str], np.ndarray]:
    """Squares of 5 to 40 m, dense in a town and sparse elsewhere; long thin sheds that
    cross cells; points; a multipolygon; an empty geometry."""
    rng = np.random.default_rng(seed)
    town = rng.normal((29.15, -1.95), 0.012, (2500, 2))
    rural = np.column_stack([rng.uniform(BOX[0], BOX[2], 1500), rng.uniform(BOX[1], BOX[3], 1500)])
    xy = np.vstack([town, rural])
    half = rng.uniform(2.5, 20, len(xy)) / 111_320
    geoms = list(shapely.box(xy[:, 0] - half, xy[:, 1] - half, xy[:, 0] + half, xy[:, 1] + half))
    for k in range(40):  # 1.5 km long: their boxes reach beyond a cell's inradius
        x, y = rng.uniform(29.05, 29.25), rng.uniform(-2.05, -1.85)
        geoms.append(shapely.box(x, y, x + 0.0135, y + 0.0002) if k % 2 else
                     shapely.box(x, y, x + 0.0002, y + 0.0135))
    geoms += list(shapely.points(rng.uniform(29.05, 29.25, (200, 2)) * [1, 0]
                                 + [0, -1.95] + rng.normal(0, 0.03, (200, 2)) * [0, 1]))
    geoms.append(shapely.MultiPolygon([shapely.box(29.1, -1.9, 29.101, -1.899),
                                       shapely.box(29.12, -1.9, 29.121, -1.899)]))
    geoms.append(shapely.Polygon())
    ids = [f"f{i}" for i in range(len(geoms))]
    return ids, np.array(geoms, dtype=object)


def _expected(ids: list[str], geoms: np.ndarray, scope=SCOPE, res=RES) -> set[str]:
    """Features whose centroid's cell has its centre inside the scope (h3-py, shapely)."""
    out = set()
    for fid, g in zip(ids, geoms, strict=True):
        if g.is_empty:
            continue
        c = g.centroid
        cell = h3.latlng_to_cell(c.y, c.x, res)
        lat, lng = h3.cell_to_latlng(cell)
        if scope.contains(shapely.Point(lng, lat)):
            out.add(fid)
    return out


def _write(path, ids, geoms, kind: str, rows_per_group: int = 300):
    table = pa.table({"bid": ids, "geometry": shapely.to_wkb(geoms)})
    if kind in ("covered", "plain"):
        geo = {"version": "1.1.0", "primary_column": "geometry",
               "columns": {"geometry": {"encoding": "WKB", "geometry_types": []}}}
        if kind == "covered":
            b = shapely.bounds(geoms)
            table = table.append_column("bbox", pa.StructArray.from_arrays(
                [pa.array(b[:, i]) for i in range(4)], ["xmin", "ymin", "xmax", "ymax"]))
            geo["columns"]["geometry"]["covering"] = {"bbox": {
                s: ["bbox", s] for s in ("xmin", "ymin", "xmax", "ymax")}}
            # Sorted in space, as a national file is written, so row groups prune.
            key = [h3.str_to_int(h3.latlng_to_cell((y0 + y1) / 2, (x0 + x1) / 2, 9))
                   if np.isfinite(x0) else 0 for x0, y0, x1, y1 in b.tolist()]
            order = np.argsort(np.array(key, dtype=np.uint64), kind="stable")
            table = table.take(pa.array(order))
        pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), path,
                       row_group_size=rows_per_group)
    else:
        keep = np.array([not g.is_empty for g in geoms])  # OGR drivers differ on empties
        pyogrio.write_arrow(table.filter(pa.array(keep)), path, driver=kind,
                            geometry_name="geometry", geometry_type="Unknown",
                            crs="EPSG:4326")


def _planner(tmp_path, path, size: int):
    info = vector_info("b", str(path), tmp_path, id_field="bid")
    cells = scope_cells(Scope("aoi", "aoi=t", "t", SCOPE), RES)
    return Batcher("r", cells, RES, 100, {}, {"b": info}, None, row_batch=lambda n: size)


@pytest.mark.parametrize("kind, suffix", [("covered", "parquet"), ("plain", "parquet"),
                                          ("GPKG", "gpkg"), ("FlatGeobuf", "fgb")])
@pytest.mark.parametrize("size", [25, 400])
def test_every_feature_is_in_exactly_one_batch(tmp_path, kind, suffix, size):
    ids, geoms = _footprints()
    path = tmp_path / f"b.{suffix}"
    _write(path, ids, geoms, kind)
    planner = _planner(tmp_path, path, size)
    batches = planner.batches(StepSpec("s", "h3_assign", input="b", output="intermediate"))
    assert len(batches) > (3 if size == 25 else 1)
    # The planner holds no feature: a batch names its partitions, small whatever the data.
    assert all(b.rows is None and len(pickle.dumps(b)) < 20_000 for b in batches)
    seen: list[str] = []
    for b in batches:
        rows = fed(b).rows
        seen += rows.column("feature_id").to_pylist()
        # Each batch's features lie in its partitions, spatially ordered by cell.
        cells = [h3.latlng_to_cell(y, x, RES) for x, y in
                 zip(rows.column("centroid_lon").to_pylist(),
                     rows.column("centroid_lat").to_pylist(), strict=True)]
        assert [h3.str_to_int(c) for c in cells] == sorted(h3.str_to_int(c) for c in cells)
    assert len(seen) == len(set(seen)), "a feature was read by two batches"
    assert set(seen) == _expected(ids, geoms)


def test_a_postgis_table_in_metres_is_partitioned_exactly(pg_url, tmp_path):
    """The same, from a PostGIS table in UTM: boxes from the database, features by bbox
    queries, ids from its key."""
    import psycopg

    from h3pipe.sources.vector import transform

    ids, geoms = _footprints()
    utm = transform(geoms, "EPSG:4326", "EPSG:32735")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute("CREATE TABLE footprints (bid text PRIMARY KEY, "
                     "geom geometry(Geometry, 32735))")
        with conn.cursor().copy("COPY footprints (bid, geom) FROM STDIN") as copy:
            for fid, wkb in zip(ids, shapely.to_wkb(utm, hex=True), strict=True):
                copy.write_row((fid, f"SRID=32735;{wkb}" if wkb else None))
    info = vector_info("b", pg_url, tmp_path, table="footprints", id_field="bid")
    cells = scope_cells(Scope("aoi", "aoi=t", "t", SCOPE), RES)
    planner = Batcher("r", cells, RES, 100, {}, {"b": info}, None, row_batch=lambda n: 60)
    batches = planner.batches(StepSpec("s", "h3_assign", input="b", output="intermediate"))
    assert len(batches) > 5
    seen = [fid for b in batches for fid in fed(b).rows.column("feature_id").to_pylist()]
    assert len(seen) == len(set(seen))
    # Centroids taken after the features come back in lon/lat, as for every source.
    back = transform(utm, "EPSG:32735", "EPSG:4326")
    assert set(seen) == _expected(ids, back)


def test_planning_a_covered_geoparquet_parses_no_geometry(tmp_path, monkeypatch):
    ids, geoms = _footprints()
    _write(tmp_path / "b.parquet", ids, geoms, "covered")
    planner = _planner(tmp_path, tmp_path / "b.parquet", 25)

    def refuse(*args, **kwargs):
        raise AssertionError("planning parsed a geometry")

    monkeypatch.setattr(shapely, "from_wkb", refuse)
    parts = planner.partitions("b")
    assert len(parts) > 3
    # Counted by box centres: a building's box centre is its centroid's neighbour.
    assert abs(parts.features - len(_expected(ids, geoms))) <= 45
    b = shapely.bounds(geoms)  # the widest is the multipolygon, the tallest a shed
    assert parts.extent == pytest.approx((np.nanmax(b[:, 2] - b[:, 0]),
                                          np.nanmax(b[:, 3] - b[:, 1])), rel=1e-9)


def test_a_covered_file_is_read_only_where_a_batch_is(tmp_path, monkeypatch):
    """A sorted file's row groups are pruned by their bbox statistics: a batch reads the
    groups near its partitions, not the file."""
    from h3pipe.sources import geoparquet

    ids, geoms = _footprints()
    _write(tmp_path / "b.parquet", ids, geoms, "covered", rows_per_group=100)
    planner = _planner(tmp_path, tmp_path / "b.parquet", 25)
    batches = planner.batches(StepSpec("s", "h3_assign", input="b", output="intermediate"))
    reads: list[int] = []
    original = pq.ParquetFile.read_row_group

    def counting(self, i, *args, **kwargs):
        reads.append(i)
        return original(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
    groups = pq.ParquetFile(tmp_path / "b.parquet").metadata.num_row_groups
    per_batch = []
    for b in batches:
        geoparquet._RECENT.clear()
        reads.clear()
        fed(b)
        per_batch.append(len(reads))
    assert len(batches) > 20 and groups > 40
    assert max(per_batch) <= groups / 2 and sum(per_batch) < 0.35 * groups * len(batches)


PIPELINE = """\
id: p
output: {dataset: ds, theme: hazard}
defaults: {resolution: 8, batch_size: BATCH}
steps:
  - {id: depth, operation: sample, input: b, source: depth, output: intermediate,
     params: {name: depth_m}}
  - {id: people, operation: spatial_join, input: $depth, source: pop, output: intermediate,
     params: {radius_m: 150, stats: [sum], prefix: pop_}}
  - id: agg
    operation: h3_weighted_aggregate
    input: $people
    params:
      aggregations:
        - {name: n, function: count}
        - {name: flooded, function: count, where: "depth_m > 1"}
        - {name: people, function: sum, column: pop_sum}
        - {name: wdepth, function: weighted_mean, column: depth_m, weight: pop_sum}
"""


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(11)
    write_raster(root / "depth.tif", rng.uniform(0, 2, (400, 400)).astype("float32"),
                 west=29.0, north=-1.8, res=0.00075)
    write_raster(root / "pop.tif", rng.gamma(2, 3, (400, 400)).astype("float32"),
                 west=29.0, north=-1.8, res=0.00075)
    ids, geoms = _footprints()
    _write(root / "b.parquet", ids, geoms, "covered")
    (root / "aoi.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {}, "geometry": SCOPE.__geo_interface__}]}))
    return root, ids, geoms


def _project(root, scene_root, batch: int):
    return write_project(root, sources={
        "depth": raster_source("depth", str(scene_root / "depth.tif")),
        "pop": raster_source("pop", str(scene_root / "pop.tif"), measure="extensive"),
        "b": f"id: b\nkind: vector\npath: '{scene_root / 'b.parquet'}'\nid_field: bid\n"
             "theme: infrastructure\n"},
        pipelines={"p": PIPELINE.replace("BATCH", str(batch))})


def _run_and_export(cli, proj, *extra):
    r = cli("--project", proj, "run", "p", "--aoi", _aoi(proj), "--workers", "2", *extra)
    assert r.exit_code == 0, r.stderr
    out = proj / "out.parquet"
    assert cli("--project", proj, "export", "ds", "-o", out).exit_code == 0
    return {row["h3_index"]: row for row in pq.read_table(out).to_pylist()}


def _aoi(proj):
    return str(proj / "aoi.geojson")


@pytest.fixture(scope="module")
def one_batch(scene, tmp_path_factory):
    from h3pipe.cli import main

    root, _, _ = scene
    proj = _project(tmp_path_factory.mktemp("one") / "p", root, 100_000)
    (proj / "aoi.geojson").write_text((root / "aoi.geojson").read_text())
    assert main(["--project", str(proj), "-q", "run", "p", "--aoi", _aoi(proj),
                 "--workers", "1"]) == 0
    out = proj / "out.parquet"
    assert main(["--project", str(proj), "export", "ds", "-o", str(out)]) == 0
    return {row["h3_index"]: row for row in pq.read_table(out).to_pylist()}


def test_cells_are_never_split_and_joins_see_across_partition_edges(scene, one_batch,
                                                                    tmp_path, cli):
    root, ids, geoms = scene
    proj = _project(tmp_path / "p", root, 15)
    (proj / "aoi.geojson").write_text((root / "aoi.geojson").read_text())
    many = _run_and_export(cli, proj)
    db_tasks = cli("--project", proj, "runs", "show", "latest").stdout
    assert "depth" in db_tasks
    # Counted by hand: each feature in the cell of its centroid.
    wanted = _expected(ids, geoms)
    counts: dict[str, int] = {}
    for fid, g in zip(ids, geoms, strict=True):
        if fid in wanted:
            c = g.centroid
            cell = h3.latlng_to_cell(c.y, c.x, RES)
            counts[cell] = counts.get(cell, 0) + 1
    assert {c: r["n"] for c, r in many.items()} == counts
    # Many small batches give what one batch gives (but for the order of sums): no cell
    # split, no join cut short at a partition's edge (a 150 m buffer reaches into its
    # neighbours' pixels).
    _same(many, one_batch)


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for cell, row in got.items():
        for k, v in row.items():
            expected = want[cell][k]
            if isinstance(v, float) and isinstance(expected, float):
                assert v == pytest.approx(expected, rel=1e-9, abs=1e-12), (cell, k)
            else:
                assert v == expected, (cell, k)


STAGE_POINTS = [
    "task-recorded:kill@3",      # stage 1, some tasks recorded
    "stage-completed:kill@1",    # stage 1 done, stage 2 not planned
    "task-recorded:kill@40",     # in stage 2 or 3 (stage 1 has fewer tasks)
    "stage-completed:kill@2",    # stage 2 done
    "stage-completed:kill@3",    # every stage done, nothing published
]


@pytest.mark.parametrize("fault", STAGE_POINTS)
def test_sigkill_at_each_stage_then_resume_matches_one_batch(scene, one_batch, tmp_path,
                                                             cli, fault):
    root, _, _ = scene
    proj = _project(tmp_path / "p", root, 15)
    (proj / "aoi.geojson").write_text((root / "aoi.geojson").read_text())
    killed = subprocess.run(
        [sys.executable, "-m", "h3pipe", "--project", str(proj), "-q", "run", "p", "--aoi",
         _aoi(proj), "--workers", "2"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "H3PIPE_FAULTS": fault})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _same(_run_and_export(cli, proj), one_batch)


def test_plan_says_how_many_features_partitions_and_batches(scene, tmp_path, cli):
    root, ids, geoms = scene
    proj = _project(tmp_path / "p", root, 15)
    (proj / "aoi.geojson").write_text((root / "aoi.geojson").read_text())
    r = cli("--project", proj, "plan", "p", "--aoi", _aoi(proj), "--workers", "2",
            "--format", "json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    [vector] = [s for s in plan["sources"] if s["kind"] == "vector"]
    assert abs(vector["features"] - len(_expected(ids, geoms))) <= 45
    assert vector["partitions"] >= vector["batches"] > 5
    first, second, third = plan["stages"]
    assert first["tasks"] == second["tasks"] == third["tasks"] == vector["batches"]
    assert not (proj / ".h3pipe").exists()


def _scattered(box, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Small squares and points scattered over a lon/lat ``box`` (west > east: across ±180)."""
    west, south, east, north = box
    rng = np.random.default_rng(seed)
    width = (east - west) % 360
    x = (west + rng.uniform(0, width, n) + 180) % 360 - 180
    y = rng.uniform(south, north, n)
    half = rng.uniform(2.5, 20, n) / 111_320
    half = np.minimum(half, 180 - np.abs(x))  # none drawn across ±180 itself
    geoms = list(shapely.box(x - half, y - half, x + half, y + half))
    geoms[::5] = list(shapely.points(x[::5], y[::5]))
    return [f"f{i}" for i in range(n)], np.array(geoms, dtype=object)


@pytest.mark.parametrize("kind, suffix", [("covered", "parquet"), ("GPKG", "gpkg")])
@pytest.mark.parametrize("box, res", [((179.8, -16.95, -179.8, -16.75), 8),
                                      ((-180.0, 84.0, 180.0, 90.0), 4)])
def test_features_across_the_antimeridian_and_near_a_pole_are_each_read_once(
        tmp_path, kind, suffix, box, res):
    from h3pipe.planning.scope import box_geometry

    ids, geoms = _scattered(box, 3000, seed=25)
    # Buildings cut by 180 itself, stored as their two sides (RFC 7946): their centroid is
    # by 180, found here by moving the western side east by hand.
    split = {}
    if box[0] > box[2]:
        for k, y in enumerate(np.linspace(box[1] + 0.01, box[3] - 0.01, 12)):
            east_w, west_w = 0.0001 * (1 + k % 3), 0.0001 * (1 + k % 4)
            sides = shapely.MultiPolygon([shapely.box(180 - east_w, y, 180, y + 0.0001),
                                          shapely.box(-180, y, -180 + west_w, y + 0.0001)])
            whole = shapely.box(180 - east_w, y, 180 + west_w, y + 0.0001).centroid
            split[f"s{k}"] = (sides, ((whole.x + 180) % 360 - 180, whole.y))
        ids += list(split)
        geoms = np.concatenate([geoms, np.array([g for g, _ in split.values()], dtype=object)])
    path = tmp_path / f"b.{suffix}"
    _write(path, ids, geoms, kind)
    scope = box_geometry(*box)
    info = vector_info("b", str(path), tmp_path, id_field="bid")
    planner = Batcher("r", scope_cells(Scope("aoi", "aoi=t", "t", scope), res), res, 100, {},
                      {"b": info}, None, row_batch=lambda n: 200)
    batches = planner.batches(StepSpec("s", "h3_assign", input="b", output="intermediate"))
    assert len(batches) > 1
    seen = [f for b in batches for f in fed(b).rows.column("feature_id").to_pylist()]
    assert len(seen) == len(set(seen)), "a feature was read by two batches"
    expected = _expected(ids[:3000], geoms[:3000], scope=scope, res=res)
    for fid, (_, (x, y)) in split.items():
        lat, lng = h3.cell_to_latlng(h3.latlng_to_cell(y, x, res))
        if scope.contains(shapely.Point(lng, lat)):
            expected.add(fid)
    assert set(seen) == expected
    assert not split or set(split) & expected
    lng = [shapely.get_coordinates(g)[0, 0] for f, g in zip(ids, geoms, strict=True)
           if f in expected]
    if box[0] > box[2]:
        assert min(lng) < -179.8 and max(lng) > 179.8  # both sides were found
