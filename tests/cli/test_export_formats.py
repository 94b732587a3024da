"""``h3pipe export`` to the formats GIS software opens: GeoParquet 1.1, GeoPackage, FlatGeobuf
and GeoJSON, the H3 id as text or uint64, and Parquet folders partitioned by parent cell.

Each output is opened with pyogrio, geopandas and DuckDB; geometry is checked against h3-py
cell by cell, and values against the plain Parquet export of the same result.
"""

from __future__ import annotations

import json

import duckdb
import geopandas
import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
import shapely.geometry

from h3pipe.cli import main
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

RES = 7
BBOX = "29.02,-2.18,29.18,-2.02"
STATS = ["h3_index", "resolution", "mean", "count"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with one result (mean and count at resolution 7 over BBOX), run once for
    the module, and its plain Parquet export: the reference for every other format."""
    tmp = tmp_path_factory.mktemp("formats")
    data = np.random.default_rng(3).normal(30, 3, (400, 400)).astype("float32")
    tif = write_raster(tmp / "r.tif", data, west=28.95, north=-1.9, res=0.001)
    proj = write_project(tmp / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean", "count"],
                                                        resolution=RES)})
    assert main(["--project", str(proj), "run", "p", "--bbox", BBOX, "--workers", "1"]) == 0
    assert main(["--project", str(proj), "export", "ds", "-o", str(tmp / "plain.parquet")]) == 0
    return proj


@pytest.fixture(scope="module")
def plain(project):
    """The plain Parquet export, as {h3_index: row}."""
    rows = pq.read_table(project.parent / "plain.parquet").to_pylist()
    assert [*rows[0]] == STATS and len(rows) > 30
    return {r["h3_index"]: r for r in rows}


def _export(cli, project, out, *options):
    r = cli("--project", project, "export", "ds", "-o", out, *options)
    assert r.exit_code == 0, r.stderr
    return r


def _ring(cell):
    """The cell's closed outline in (lon, lat), straight from h3-py."""
    ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
    return np.array([*ring, ring[0]])


def _centre(cell):
    lat, lng = h3.cell_to_latlng(cell)
    return np.array([[lng, lat]])


def _check_geometry(cell, geom, kind):
    if kind == "polygon":
        assert shapely.get_type_id(geom) == 3 and shapely.get_num_interior_rings(geom) == 0
        assert shapely.is_ccw(geom.exterior)
        assert np.allclose(shapely.get_coordinates(geom.exterior), _ring(cell), rtol=0,
                           atol=1e-12)
    else:
        assert shapely.get_type_id(geom) == 0
        assert np.allclose(shapely.get_coordinates(geom), _centre(cell), rtol=0, atol=1e-12)


def _check_values(rows, plain):
    """Every row of the plain export, with the same statistics, and nothing else."""
    assert sorted(r["h3_index"] for r in rows) == sorted(plain)
    for r in rows:
        assert {k: r[k] for k in STATS} == plain[r["h3_index"]]


def _union(bounds):
    b = np.asarray(bounds)
    return [b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]


def _check_geo_metadata(path, kind, cells):
    """The 'geo' metadata GeoParquet 1.1 asks for; bbox against h3-py's outlines."""
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB"
    assert column["geometry_types"] == ["Polygon" if kind == "polygon" else "Point"]
    assert "crs" not in column  # omitted means OGC:CRS84
    assert column["covering"] == {"bbox": {k: ["bbox", k]
                                           for k in ("xmin", "ymin", "xmax", "ymax")}}
    shape = _ring if kind == "polygon" else _centre
    expected = [[*shape(c).min(axis=0), *shape(c).max(axis=0)] for c in cells]
    assert table.schema.field("bbox").type == pa.struct(
        [(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
    boxes = [[b[k] for k in ("xmin", "ymin", "xmax", "ymax")]
             for b in table.column("bbox").to_pylist()]
    assert np.allclose(boxes, expected, rtol=0, atol=1e-12)
    assert np.allclose(column["bbox"], _union(expected), rtol=0, atol=1e-12)
    return table


@pytest.mark.parametrize("kind", ["polygon", "point"])
def test_geoparquet_is_valid_1_1_and_matches_h3(project, plain, cli, tmp_path, kind):
    out = tmp_path / "o.geoparquet"
    r = _export(cli, project, out, "--geometry", kind)
    assert r.stdout.strip() == f"wrote {len(plain)} rows to {out} (geoparquet)"
    cells = pq.read_table(out).column("h3_index").to_pylist()
    table = _check_geo_metadata(out, kind, cells)
    assert table.column_names == [*STATS, "geometry", "bbox"]
    _check_values(table.select(STATS).to_pylist(), plain)
    for cell, wkb in zip(cells, table.column("geometry").to_pylist(), strict=True):
        _check_geometry(cell, shapely.from_wkb(wkb), kind)

    frame = geopandas.read_parquet(out)
    assert frame.crs.equals("OGC:CRS84") and len(frame) == len(plain)
    for cell, geom in zip(frame["h3_index"], frame.geometry, strict=True):
        _check_geometry(cell, geom, kind)


def test_duckdb_reads_geoparquet_bbox_and_wkb(project, plain, cli, tmp_path):
    """As plain Parquet (DuckDB's spatial extension needs a download): the bbox struct
    filters, the WKB decodes to the cells' outlines."""
    out = tmp_path / "o.geoparquet"
    _export(cli, project, out)
    cell = sorted(plain)[len(plain) // 2]
    xmin, ymin = _ring(cell).min(axis=0)
    xmax, ymax = _ring(cell).max(axis=0)
    rows = duckdb.sql(
        f"SELECT h3_index, mean, geometry FROM read_parquet('{out}') "
        f"WHERE bbox.xmin >= {xmin - 1e-9} AND bbox.xmax <= {xmax + 1e-9} "
        f"AND bbox.ymin >= {ymin - 1e-9} AND bbox.ymax <= {ymax + 1e-9}").fetchall()
    assert [(c, m) for c, m, _ in rows] == [(cell, plain[cell]["mean"])]
    _check_geometry(cell, shapely.from_wkb(bytes(rows[0][2])), "polygon")
    [(count,)] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()
    assert count == len(plain)


@pytest.fixture(scope="module")
def spatial():
    """A DuckDB connection with the spatial extension, or a skip where it cannot be had
    (it is downloaded on first use)."""
    con = duckdb.connect()
    try:
        con.execute("LOAD spatial")
    except duckdb.Error:
        try:
            con.execute("INSTALL spatial")
            con.execute("LOAD spatial")
        except duckdb.Error as exc:
            pytest.skip(f"DuckDB's spatial extension is not available here: "
                        f"{str(exc).splitlines()[0]}")
    return con


@pytest.mark.parametrize("suffix", ["geoparquet", "gpkg", "fgb"])
def test_duckdb_spatial_reads_the_geometry(project, plain, cli, tmp_path, suffix, spatial):
    out = tmp_path / f"o.{suffix}"
    _export(cli, project, out)
    reader = f"read_parquet('{out}')" if suffix == "geoparquet" else f"ST_Read('{out}')"
    geom = "geometry" if suffix == "geoparquet" else "geom"
    rows = spatial.sql(f"SELECT h3_index, ST_AsWKB({geom}) FROM {reader}").fetchall()
    assert sorted(str(c) for c, _ in rows) == sorted(plain)
    for cell, wkb in rows:
        _check_geometry(cell, shapely.from_wkb(bytes(wkb)), "polygon")


def test_pyogrio_reads_geoparquet_where_gdal_has_the_driver(project, plain, cli, tmp_path):
    if "Parquet" not in pyogrio.list_drivers():
        pytest.skip("this GDAL (pyogrio's wheel) is built without the Parquet driver")
    out = tmp_path / "o.geoparquet"
    _export(cli, project, out)
    info = pyogrio.read_info(out)
    assert info["features"] == len(plain) and info["geometry_type"] == "Polygon"


@pytest.mark.parametrize("fmt", ["gpkg", "fgb"])
@pytest.mark.parametrize("kind", ["polygon", "point"])
def test_geopackage_and_flatgeobuf(project, plain, cli, tmp_path, fmt, kind):
    out = tmp_path / f"o.{fmt}"
    r = _export(cli, project, out, "--geometry", kind)
    assert r.stdout.strip().endswith(f"({fmt})")
    info = pyogrio.read_info(out)
    assert pyogrio.list_layers(out)[:, 0].tolist() == ["ds"]
    assert info["crs"] == "EPSG:4326" and info["features"] == len(plain)
    assert info["geometry_type"] == ("Polygon" if kind == "polygon" else "Point")
    assert info["fields"].tolist() == STATS
    if fmt == "gpkg":
        assert info["geometry_name"] == "geometry"

    meta, table = pyogrio.read_arrow(out)
    _check_values(table.select(STATS).to_pylist(), plain)
    for cell, wkb in zip(table.column("h3_index").to_pylist(),
                         table.column(meta["geometry_name"] or "wkb_geometry").to_pylist(),
                         strict=True):
        _check_geometry(cell, shapely.from_wkb(wkb), kind)

    frame = geopandas.read_file(out, layer="ds")
    assert frame.crs.to_epsg() == 4326
    for cell, geom in zip(frame["h3_index"], frame.geometry, strict=True):
        _check_geometry(cell, geom, kind)


@pytest.mark.parametrize("kind", ["polygon", "point"])
def test_geojson_polygons_or_points(project, plain, cli, tmp_path, kind):
    out = tmp_path / "o.geojson"
    _export(cli, project, out, "--geometry", kind)
    features = json.loads(out.read_text())["features"]
    _check_values([f["properties"] for f in features], plain)
    for f in features:
        _check_geometry(f["properties"]["h3_index"], shapely.geometry.shape(f["geometry"]),
                        kind)
    frame = geopandas.read_file(out)
    assert len(frame) == len(plain) and frame.crs.to_epsg() == 4326


@pytest.mark.parametrize("fmt, stored", [("parquet", pa.uint64()), ("geoparquet", pa.uint64()),
                                         ("gpkg", pa.int64()), ("fgb", pa.int64()),
                                         ("csv", pa.int64())])
def test_h3_as_integer(project, plain, cli, tmp_path, fmt, stored):
    """uint64 where the format has it; int64 in GeoPackage and FlatGeobuf (and as CSV
    readers guess), which holds every H3 id (63 bits)."""
    import pyarrow.csv as pcsv

    out = tmp_path / f"o.{fmt}"
    _export(cli, project, out, "--h3", "uint64")
    if fmt in ("gpkg", "fgb"):
        table = pyogrio.read_arrow(out)[1]
    elif fmt == "csv":
        table = pcsv.read_csv(out)
    else:
        table = pq.read_table(out)
    assert table.schema.field("h3_index").type == stored
    ids = table.column("h3_index").to_pylist()
    assert sorted(ids) == sorted(h3.str_to_int(c) for c in plain)
    rows = table.select(STATS).to_pylist()
    _check_values([r | {"h3_index": h3.int_to_str(r["h3_index"])} for r in rows], plain)
    if fmt == "geoparquet":
        for cell, wkb in zip(ids, table.column("geometry").to_pylist(), strict=True):
            _check_geometry(h3.int_to_str(cell), shapely.from_wkb(wkb), "polygon")


@pytest.mark.parametrize("fmt", ["parquet", "geoparquet"])
def test_partitioned_by_parent_cell(project, plain, cli, tmp_path, fmt):
    out = tmp_path / "cells"
    r = _export(cli, project, out, "--format", fmt, "--partition-resolution", "5")
    assert r.stdout.strip() == f"wrote {len(plain)} rows to {out} ({fmt})"
    parents = {h3.cell_to_parent(c, 5) for c in plain}
    assert len(parents) > 1  # the test means something
    assert sorted(p.name for p in out.iterdir()) == sorted(f"h3_parent={p}" for p in parents)
    seen = []
    for folder in out.iterdir():
        assert [f.name for f in folder.iterdir()] == ["part-0.parquet"]
        part = folder / "part-0.parquet"
        cells = pq.read_table(part).column("h3_index").to_pylist()
        assert {h3.cell_to_parent(c, 5) for c in cells} == {folder.name.split("=")[1]}
        if fmt == "geoparquet":
            _check_geo_metadata(part, "polygon", cells)
            assert len(geopandas.read_parquet(part)) == len(cells)
        else:
            assert b"geo" not in (pq.read_schema(part).metadata or {})
        seen += pq.read_table(part).select(STATS).to_pylist()
    _check_values(seen, plain)

    # The folder as one dataset: pyarrow and DuckDB add the parent from the path.
    whole = pq.read_table(out)
    assert whole.num_rows == len(plain)
    assert {(c, p) for c, p in zip(whole.column("h3_index").to_pylist(),
                                   whole.column("h3_parent").to_pylist(), strict=True)} == {
        (c, h3.cell_to_parent(c, 5)) for c in plain}
    hive = duckdb.sql(f"SELECT h3_index, h3_parent FROM read_parquet('{out}/*/*.parquet', "
                      "hive_partitioning = true)").fetchall()
    assert sorted(hive) == sorted((c, h3.cell_to_parent(c, 5)) for c in plain)
    if fmt == "geoparquet":
        assert len(geopandas.read_parquet(out)) == len(plain)

    # Exporting again replaces the earlier folder whole, and leaves nothing beside it.
    _export(cli, project, out, "--format", fmt, "--partition-resolution", "4")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        {f"h3_parent={h3.cell_to_parent(c, 4)}" for c in plain})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells"]


def _error(cli, project, out, *options):
    r = cli("--project", project, "export", "ds", "-o", out, *options)
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr.strip()


@pytest.mark.parametrize("name, options, message", [
    ("x.csv", ["--partition-resolution", "5"],
     "error: --partition-resolution writes a folder of Parquet files: use --format parquet or "
     "geoparquet, not csv"),
    ("x.gpkg", ["--partition-resolution", "5"],
     "error: --partition-resolution writes a folder of Parquet files: use --format parquet or "
     "geoparquet, not gpkg"),
    ("x.parquet", ["--format", "shp"],
     "error: --format 'shp' is not one of parquet, geoparquet, csv, geojson, gpkg, fgb"),
    ("x.gpkg", ["--geometry", "none"], "error: --geometry none: gpkg needs a geometry"),
    ("x.csv", ["--geometry", "point"], "error: --geometry point: csv has no geometry column"),
    ("x.fgb", ["--geometry", "hexagon"], "error: --geometry 'hexagon' is not one of polygon, "
     "point, none"),
    ("x.parquet", ["--h3", "int"], "error: --h3 'int' is not one of text, uint64"),
    ("x.geojson", ["--h3", "uint64"], "error: --h3 uint64: GeoJSON readers hold numbers as "
     "doubles"),
    ("x", ["--partition-resolution", str(RES)],
     f"error: --partition-resolution {RES} must be coarser than the data's resolution {RES}: "
     f"give 0..{RES - 1}"),
    ("x", ["--partition-resolution", "16"], "error: --partition-resolution 16 is not an H3 "
     "resolution (0..15)"),
])
def test_bad_options_are_one_line_and_write_nothing(project, cli, tmp_path, name, options,
                                                   message):
    assert _error(cli, project, tmp_path / name, *options).startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_an_earlier_export_is_left_alone(project, cli, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    err = _error(cli, project, tmp_path, "--partition-resolution", "5")
    assert f"cannot write {tmp_path}: it exists and is not an earlier partitioned export" in err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}")]
