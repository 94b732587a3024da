"""Vector sources in every format, and the feature operations, against values computed
here by an independent route (geometry by hand, pyproj's geodesic areas and distances)."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from pyproj import Geod, Transformer

from h3pipe.operations import Batch, get_operation
from h3pipe.sources.raster import describe_raster
from h3pipe.sources.vector import read_features, vector_info
from tests.conftest import write_project, write_raster

GEOD = Geod(ellps="WGS84")
POINTS = [("a", 29.011, -1.951), ("b", 29.023, -1.962), ("c", 29.047, -1.988),
          ("far", 29.9, -1.5)]  # 'far' lies outside every bounds used below
BOUNDS = (29.0, -2.0, 29.1, -1.9)


def _points_table(crs_to: str | None = None):
    geoms = np.array([shapely.Point(x, y) for _, x, y in POINTS])
    if crs_to:
        tr = Transformer.from_crs("EPSG:4326", crs_to, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0],
                                                                                 xy[:, 1])))
    return pa.table({"bid": [p[0] for p in POINTS], "floors": [1, 2, 3, 4],
                     "geometry": shapely.to_wkb(geoms)})


@pytest.mark.parametrize("ext, driver", [("gpkg", "GPKG"), ("fgb", "FlatGeobuf"),
                                         ("shp", "ESRI Shapefile"), ("geojson", "GeoJSON"),
                                         ("parquet", None), ("utm.gpkg", "GPKG")])
def test_every_format_reads_the_same_features_inside_the_bounds(tmp_path, ext, driver):
    path = tmp_path / f"points.{ext}"
    crs = "EPSG:32735" if ext.startswith("utm") else "EPSG:4326"
    table = _points_table(crs if crs != "EPSG:4326" else None)
    if driver is None:
        geo = {"version": "1.0.0", "primary_column": "geometry",
               "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}}}
        pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), path)
    else:
        pyogrio.write_arrow(table, path, driver=driver, geometry_name="geometry",
                            geometry_type="Point", crs=crs)
    info = vector_info("pts", str(path), tmp_path, id_field="bid", attributes=("floors",))
    got = read_features(info, BOUNDS)
    # FlatGeobuf returns features in its spatial index's order.
    got = got.take(pa.array(np.argsort(got.column("feature_id").to_pylist())))
    assert got.column_names == ["feature_id", "floors", "geometry"]
    assert got.column("feature_id").to_pylist() == ["a", "b", "c"]
    assert got.column("floors").to_pylist() == [1, 2, 3]
    xy = shapely.get_coordinates(shapely.from_wkb(got.column("geometry").to_numpy(
        zero_copy_only=False)))
    assert np.allclose(xy, [[x, y] for _, x, y in POINTS[:3]], atol=1e-7)


def test_a_missing_field_or_file_is_a_clear_source_error(tmp_path):
    from h3pipe.errors import SourceError

    path = tmp_path / "p.gpkg"
    pyogrio.write_arrow(_points_table(), path, driver="GPKG", geometry_name="geometry",
                        geometry_type="Point", crs="EPSG:4326")
    with pytest.raises(SourceError, match=r"no field 'height' in .*fields: bid, floors"):
        read_features(vector_info("pts", str(path), tmp_path, attributes=("height",)), BOUNDS)
    with pytest.raises(SourceError, match="source 'pts': no file 'nope.gpkg'"):
        vector_info("pts", "nope.gpkg", tmp_path)


def _batch(op, params, rows, raster=None, vector=None):
    return Batch(run_id="r", step_id="s", number=1, operation=op, params=params,
                 resolution=8, rows=rows, raster=raster, vector=vector)


def _features(geoms, **attrs):
    return pa.table({"feature_id": [str(i) for i in range(len(geoms))], **attrs,
                     "geometry": shapely.to_wkb(np.array(geoms))})


def test_zonal_stats_over_polygons_keeps_ids_and_chosen_attributes(tmp_path):
    # Two tiles side by side; the second polygon straddles them.
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 10, (20, 20)).astype("float32")
    b = rng.uniform(0, 10, (20, 20)).astype("float32")
    write_raster(tmp_path / "t" / "a.tif", a, west=29.0, north=-1.9, res=0.01)
    write_raster(tmp_path / "t" / "b.tif", b, west=29.2, north=-1.9, res=0.01)
    info = describe_raster("r", str(tmp_path / "t" / "*.tif"), tmp_path)
    # Exactly pixels (row 2..3, col 5..6) of tile a; and half of col 19 of a plus half of
    # col 0 of b, rows 0..0.
    square = shapely.box(29.05, -1.94, 29.07, -1.92)
    seam = shapely.box(29.195, -1.91, 29.205, -1.90)
    rows = _features([square, seam], kind=["x", "y"], floors=[1, 2])
    out = get_operation("zonal_stats").run_batch(_batch(
        "zonal_stats", {"stats": ["mean", "count", "sum"], "keep": ["kind"]}, rows, info))
    assert out.column_names == ["feature_id", "kind", "geometry", "mean", "count", "sum"]
    got = out.to_pylist()
    assert got[0]["count"] == pytest.approx(4)
    assert got[0]["mean"] == pytest.approx(a[2:4, 5:7].mean(), rel=1e-6)
    assert got[1]["count"] == pytest.approx(1.0)  # two half pixels
    assert got[1]["sum"] == pytest.approx(0.5 * a[0, 19] + 0.5 * b[0, 0], rel=1e-6)


def test_sample_reads_the_pixel_under_each_centroid_and_nodata_is_null(tmp_path):
    data = np.arange(100, dtype="float32").reshape(10, 10)
    data[3, 4] = -1
    write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.01, nodata=-1)
    info = describe_raster("r", str(tmp_path / "r.tif"), tmp_path)
    pts = [shapely.Point(29.0 + (c + 0.3) * 0.01, -1.9 - (r + 0.6) * 0.01)
           for r, c in [(0, 0), (2, 7), (3, 4), (9, 9)]]
    poly = shapely.box(29.051, -1.989, 29.059, -1.981)  # centroid in pixel (8, 5)
    out = get_operation("sample").run_batch(_batch("sample", {"name": "v"},
                                                   _features([*pts, poly]), info))
    assert out.column("v").to_pylist() == [0.0, 27.0, None, 99.0, 85.0]


def test_spatial_join_sums_a_raster_within_a_radius(tmp_path):
    data = np.full((200, 200), 2.0, dtype="float32")
    write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.0005)
    info = describe_raster("r", str(tmp_path / "r.tif"), tmp_path)
    centre = shapely.Point(29.05, -1.95)
    out = get_operation("spatial_join").run_batch(_batch(
        "spatial_join", {"radius_m": 300, "stats": ["sum", "count"], "prefix": "pop_"},
        _features([centre]), info))
    row = out.to_pylist()[0]
    # Independent: a 64-gon of radius 300 m over the geodesic area of one pixel there.
    circle = 300 ** 2 * 32 * math.sin(2 * math.pi / 64)
    lon, lat = 29.05, -1.95
    pixel, _ = GEOD.polygon_area_perimeter([lon, lon + 0.0005, lon + 0.0005, lon],
                                           [lat, lat, lat + 0.0005, lat + 0.0005])
    assert row["pop_count"] == pytest.approx(circle / abs(pixel), rel=2e-3)
    assert row["pop_sum"] == pytest.approx(2 * row["pop_count"], rel=1e-6)


def test_spatial_join_by_predicate_and_nearest(tmp_path):
    zones = pa.table({"zid": ["west", "east"], "name": ["W", "E"],
                      "geometry": shapely.to_wkb(np.array([
                          shapely.box(29.0, -2.0, 29.05, -1.9),
                          shapely.box(29.05, -2.0, 29.1, -1.9)]))})
    path = tmp_path / "zones.gpkg"
    pyogrio.write_arrow(zones, path, driver="GPKG", geometry_name="geometry",
                        geometry_type="Polygon", crs="EPSG:4326")
    vinfo = vector_info("zones", str(path), tmp_path, id_field="zid", attributes=("name",))
    buildings = [shapely.Point(29.01, -1.95), shapely.box(29.04, -1.95, 29.06, -1.94),
                 shapely.Point(29.3, -1.95)]
    op = get_operation("spatial_join")
    inter = op.run_batch(_batch("spatial_join", {"predicate": "intersects",
                                                 "attributes": ["name"]},
                                _features(buildings), vector=vinfo)).to_pylist()
    assert [(r["name"], r["matches"]) for r in inter] == [("W", 1), ("W", 2), (None, 0)]
    within = op.run_batch(_batch("spatial_join", {"predicate": "within", "prefix": "z_"},
                                 _features(buildings), vector=vinfo)).to_pylist()
    assert [(r["z_name"], r["z_matches"]) for r in within] == [("W", 1), (None, 0), (None, 0)]
    # Nearest within 1 km of points just outside the east zone's east edge.
    pts = [shapely.Point(29.104, -1.95), shapely.Point(29.12, -1.95)]
    near = op.run_batch(_batch("spatial_join", {"predicate": "nearest",
                                                "max_distance_m": 1000},
                               _features(pts), vector=vinfo)).to_pylist()
    _, _, dist = GEOD.inv(29.104, -1.95, 29.1, -1.95)
    assert near[0]["name"] == "E" and near[0]["distance_m"] == pytest.approx(dist, rel=2e-3)
    assert near[1]["name"] is None and near[1]["distance_m"] is None  # 2.2 km away


def _pipeline(steps: str, output="ds") -> str:
    return (f"id: p\noutput: {{dataset: {output}, theme: hazard}}\n"
            f"defaults: {{resolution: 8}}\nsteps:\n" + textwrap.indent(textwrap.dedent(steps),
                                                                        "  "))


@pytest.mark.parametrize("steps, message", [
    ("""\
     - id: f
       operation: filter
       input: bldg
       output: intermediate
       params: {where: "flors > 2"}
     - id: a
       operation: h3_weighted_aggregate
       input: $f
       params: {aggregations: [{name: n, function: count}]}
     """, "unknown column 'flors' (did you mean 'floors'?)"),
    ("""\
     - id: t
       operation: transform
       input: bldg
       output: intermediate
       params: {columns: {x: "(SELECT 1)"}}
     - id: a
       operation: h3_weighted_aggregate
       input: $t
       params: {aggregations: [{name: n, function: sum, column: x}]}
     """, "subqueries are not allowed"),
    ("""\
     - id: s
       operation: sample
       source: dem
       params: {name: v}
     """, "operation 'sample' runs over features, but its input gives cells"),
    ("""\
     - id: s
       operation: sample
       input: bldg
       source: dem
     """, "gives features, not H3 cells; aggregate them with h3_weighted_aggregate"),
    ("""\
     - id: j
       operation: spatial_join
       input: bldg
       source: dem
       output: intermediate
       params: {radius_m: 10, stats: [sum], predicate: within}
     """, "give either radius_m and stats (raster source) or predicate"),
    ("""\
     - id: j
       operation: spatial_join
       input: bldg
       source: bldg
       output: intermediate
       params: {radius_m: 10, stats: [sum]}
     """, "a vector source is joined by 'predicate'"),
    ("""\
     - id: z
       operation: zonal_stats
       input: dem
       source: dem
       params: {stats: [mean]}
     """, "input 'dem' is a raster source; an input is 'cells', '$step_id' or a vector"),
    ("""\
     - id: a
       operation: h3_weighted_aggregate
       input: bldg
       params: {aggregations: [{name: m, function: weighted_mean, column: floors}]}
     """, "'weighted_mean' needs 'weight'"),
    ("""\
     - id: z
       operation: zonal_stats
       input: bldg
       source: dem
       output: intermediate
       params: {stats: [mean], keep: [floors, height]}
     - id: a
       operation: h3_weighted_aggregate
       input: $z
       params: {aggregations: [{name: m, function: mean, column: mean}]}
     """, "params.keep[1]: no column 'height' in the input (feature_id, floors, geometry)"),
])
def test_validate_catches_flow_and_sql_problems(tmp_path, cli, steps, message):
    write_raster(tmp_path / "dem.tif", np.ones((5, 5), "float32"), west=29, north=-1.9,
                 res=0.01)
    pyogrio.write_arrow(_points_table(), tmp_path / "b.gpkg", driver="GPKG",
                        geometry_name="geometry", geometry_type="Point", crs="EPSG:4326")
    proj = write_project(tmp_path / "p", sources={
        "dem": f"id: dem\nkind: raster\npath: '{tmp_path / 'dem.tif'}'\ntheme: terrain\n",
        "bldg": f"id: bldg\nkind: vector\npath: '{tmp_path / 'b.gpkg'}'\nid_field: bid\n"
                "attributes: [floors]\ntheme: infrastructure\n"}, pipelines={"p": _pipeline(steps)})
    r = cli("--project", proj, "validate")
    assert r.exit_code == 1
    assert message in r.stdout, r.stdout


def test_a_postgis_table_is_a_vector_source(pg_url, tmp_path):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute("CREATE SCHEMA IF NOT EXISTS survey")
        conn.execute("CREATE TABLE survey.homes (hid integer PRIMARY KEY, floors integer, "
                     "geom geometry(Point, 32735))")
        tr = Transformer.from_crs("EPSG:4326", "EPSG:32735", always_xy=True)
        for i, (_, x, y) in enumerate(POINTS):
            ex, ny = tr.transform(x, y)
            conn.execute("INSERT INTO survey.homes VALUES (%s, %s, "
                         "ST_SetSRID(ST_MakePoint(%s, %s), 32735))", (i + 10, i + 1, ex, ny))
    info = vector_info("homes", pg_url, tmp_path, table="survey.homes", id_field="hid",
                       attributes=("floors",))
    got = read_features(info, BOUNDS)
    assert got.column("feature_id").to_pylist() == ["10", "11", "12"]
    assert got.column("floors").to_pylist() == [1, 2, 3]
    xy = shapely.get_coordinates(shapely.from_wkb(got.column("geometry").to_numpy(
        zero_copy_only=False)))
    assert np.allclose(xy, [[x, y] for _, x, y in POINTS[:3]], atol=1e-7)


def test_polygons_with_holes_and_multipolygons_agree_with_exactextract(tmp_path):
    from exactextract import exact_extract

    rng = np.random.default_rng(8)
    data = rng.normal(50, 10, (60, 60)).astype("float32")
    data[10:14, 10:30] = -9999
    write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.9, res=0.001, nodata=-9999)
    info = describe_raster("r", str(tmp_path / "r.tif"), tmp_path)
    shapes = []
    for _ in range(30):
        x, y = rng.uniform(29.005, 29.05), rng.uniform(-1.955, -1.905)
        outer = shapely.Point(x, y).buffer(rng.uniform(0.001, 0.004), quad_segs=5)
        hole = shapely.Point(x, y).buffer(0.0006, quad_segs=3)
        shapes.append(outer.difference(hole))
    # Off the pixel edges: on them, exactextract reading the file gives the polygon a
    # sliver of its neighbours (see test_zonal_semantics' pixel-edge test).
    shapes.append(shapely.MultiPolygon([shapely.box(29.0013, -1.9102, 29.0035, -1.9053),
                                        shapely.box(29.0403, -1.9497, 29.0427, -1.9471)]))
    stats = ["count", "sum", "mean", "min", "max", "stdev"]
    out = get_operation("zonal_stats").run_batch(_batch("zonal_stats", {"stats": stats},
                                                        _features(shapes), info)).to_pylist()
    features = [{"type": "Feature", "properties": {"i": i},
                 "geometry": json.loads(shapely.to_geojson(g))} for i, g in enumerate(shapes)]
    ref = exact_extract(str(tmp_path / "r.tif"), features, stats, include_cols=["i"])
    for got, want in zip(out, sorted(ref, key=lambda f: f["properties"]["i"]), strict=True):
        for stat in stats:
            assert got[stat] == pytest.approx(want["properties"][stat], rel=1e-7, abs=1e-9)


def test_a_feature_is_measured_in_its_own_utm_zone_whatever_its_batch(tmp_path):
    # Features on both sides of 30 E (UTM zones 35 and 36): joined together or one by one,
    # each gets the same numbers (its buffer and distances in its own zone).
    data = np.random.default_rng(3).normal(5, 1, (200, 200)).astype("float32")
    write_raster(tmp_path / "r.tif", data, west=29.95, north=-1.95, res=0.0005)
    info = describe_raster("r", str(tmp_path / "r.tif"), tmp_path)
    pts = [shapely.Point(29.96 + 0.008 * i, -1.99) for i in range(10)]
    op = get_operation("spatial_join")
    params = {"radius_m": 150, "stats": ["sum", "count"]}
    together = op.run_batch(_batch("spatial_join", params, _features(pts), info)).to_pylist()
    alone = [op.run_batch(_batch("spatial_join", params, _features([p]), info)).to_pylist()[0]
             for p in pts]
    assert [(r["sum"], r["count"]) for r in together] == [(r["sum"], r["count"]) for r in alone]
