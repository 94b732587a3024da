"""h3pipe.results.formats on tables made here: cells no small run gives (pentagons, the
antimeridian, several resolutions, several rows per cell, none at all), and writes that
fail half way. Geometry is checked against h3-py."""

from __future__ import annotations

import json
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from h3pipe.errors import ConfigError, UsageError
from h3pipe.results import formats


def _table(cells, **columns):
    return pa.table({"h3_index": pa.array(cells, pa.string()),
                     "resolution": pa.array([h3.get_resolution(c) for c in cells], pa.int8()),
                     **columns})


def _write(table, path, fmt, **options):
    formats.write(table, path, formats.ExportSpec.parse(fmt, layer="t", **options))


def _polygons(path):
    table = pq.read_table(path)
    return table.column("h3_index").to_pylist(), shapely.from_wkb(
        table.column("geometry").to_pylist())


def _ring(cell):
    ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
    return np.array([*ring, ring[0]])


def test_pentagons_keep_every_vertex(tmp_path):
    cells = [h3.get_pentagons(r)[2] for r in (0, 3, 5, 8)]
    _write(_table(cells), tmp_path / "p.geoparquet", "geoparquet")
    got, polygons = _polygons(tmp_path / "p.geoparquet")
    assert got == cells
    for cell, polygon in zip(cells, polygons, strict=True):
        assert np.allclose(shapely.get_coordinates(polygon.exterior), _ring(cell), rtol=0,
                           atol=1e-12)
        assert shapely.is_ccw(polygon.exterior) and polygon.is_valid


def test_a_cell_across_the_antimeridian_stays_one_small_polygon(tmp_path):
    cell = h3.latlng_to_cell(10.0, 179.99, 3)
    ring = _ring(cell)
    assert ring[:, 0].max() - ring[:, 0].min() > 180  # as h3 draws it: across the world
    _write(_table([cell]), tmp_path / "a.geoparquet", "geoparquet")
    (polygon,) = _polygons(tmp_path / "a.geoparquet")[1]
    east = ring.copy()
    east[east[:, 0] < 0, 0] += 360
    assert np.allclose(shapely.get_coordinates(polygon.exterior), east, rtol=0, atol=1e-12)
    assert shapely.is_ccw(polygon.exterior) and polygon.is_valid
    assert polygon.contains(shapely.Point(h3.cell_to_latlng(cell)[::-1]))
    geo = json.loads(pq.read_schema(tmp_path / "a.geoparquet").metadata[b"geo"])
    assert geo["columns"]["geometry"]["bbox"] == pytest.approx(
        [*east.min(axis=0), *east.max(axis=0)], abs=1e-12)


def test_several_rows_per_cell_each_get_the_cells_geometry(tmp_path):
    """A sweep's rows: a cell once per scenario, the scenario a dictionary column."""
    a, b = h3.latlng_to_cell(-2.0, 29.0, 8), h3.latlng_to_cell(-2.1, 29.3, 8)
    cells = [a, b, a, b, a]
    scenario = pa.array(["x", "x", "y", "y", "z"]).dictionary_encode()
    table = _table(cells, scenario=scenario, v=pa.array([1.0, 2.0, 3.0, None, 5.0]))
    _write(table, tmp_path / "s.gpkg", "gpkg")
    meta, read = pyogrio.read_arrow(tmp_path / "s.gpkg")
    assert read.column("scenario").to_pylist() == ["x", "x", "y", "y", "z"]
    assert read.column("v").to_pylist() == [1.0, 2.0, 3.0, None, 5.0]
    for cell, wkb in zip(cells, read.column(meta["geometry_name"]).to_pylist(), strict=True):
        assert np.allclose(shapely.get_coordinates(shapely.from_wkb(wkb)), _ring(cell),
                           rtol=0, atol=1e-12)


def test_partitions_of_several_resolutions_sit_under_their_parents(tmp_path):
    cells = [*sorted(h3.grid_disk(h3.latlng_to_cell(-2.0, 29.0, 7), 4)),
             *sorted(h3.grid_disk(h3.latlng_to_cell(-1.5, 30.0, 9), 3))]
    _write(_table(cells), tmp_path / "out", "geoparquet", partition_resolution=5)
    seen = []
    for folder in sorted((tmp_path / "out").iterdir()):
        got, polygons = _polygons(folder / "part-0.parquet")
        assert {h3.cell_to_parent(c, 5) for c in got} == {folder.name.removeprefix(
            "h3_parent=")}
        for cell, polygon in zip(got, polygons, strict=True):
            assert np.allclose(shapely.get_coordinates(polygon.exterior), _ring(cell),
                               rtol=0, atol=1e-12)
        seen += got
    assert sorted(seen) == sorted(cells)
    with pytest.raises(UsageError, match="coarser than the data's resolution 7: give 0..6"):
        _write(_table(cells), tmp_path / "again", "parquet", partition_resolution=7)


def test_an_empty_result_is_still_a_valid_file(tmp_path):
    empty = _table([], v=pa.array([], pa.float64()))
    _write(empty, tmp_path / "e.geoparquet", "geoparquet")
    geo = json.loads(pq.read_schema(tmp_path / "e.geoparquet").metadata[b"geo"])
    assert "bbox" not in geo["columns"]["geometry"]  # no data, no extent
    assert pq.read_table(tmp_path / "e.geoparquet").num_rows == 0
    _write(empty, tmp_path / "e.fgb", "fgb")
    assert pyogrio.read_arrow(tmp_path / "e.fgb")[1].num_rows == 0
    _write(empty, tmp_path / "e", "geoparquet", partition_resolution=3)
    assert list((tmp_path / "e").iterdir()) == []


def test_a_failed_write_leaves_the_earlier_output_and_nothing_else(tmp_path, monkeypatch):
    cells = [h3.latlng_to_cell(lat, 29.0, 7) for lat in (-2.0, 0.0, 2.0)]
    out = tmp_path / "o.gpkg"
    out.write_bytes(b"earlier")

    def half_then_fail(rows, path, spec):
        Path(path).write_bytes(b"half")
        Path(f"{path}-journal").write_bytes(b"journal")
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(formats._WRITERS, "gpkg", half_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _write(_table(cells), out, "gpkg")
    assert out.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["o.gpkg"]

    folder = tmp_path / "parts"
    _write(_table(cells), folder, "parquet", partition_resolution=5)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    calls = []

    def fail_second(rows, path, spec):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        Path(path).write_bytes(b"part")

    monkeypatch.setattr(formats, "_write_parquet", fail_second)
    with pytest.raises(ConfigError, match=f"cannot write {folder}: no space left on its disk"):
        _write(_table(cells), folder, "parquet", partition_resolution=4)
    assert len(calls) == 2
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.gpkg", "parts"]


def test_a_column_the_geometry_would_replace_is_refused(tmp_path):
    cells = [h3.latlng_to_cell(-2.0, 29.0, 7)]
    with pytest.raises(ConfigError, match="has a column 'bbox'"):
        _write(_table(cells, bbox=pa.array([1.0])), tmp_path / "b.geoparquet", "geoparquet")
    _write(_table(cells, bbox=pa.array([1.0])), tmp_path / "b.parquet", "parquet")


@pytest.mark.parametrize("name, fmt", [
    ("a.parquet", "parquet"), ("a.PQ", "parquet"), ("a.geoparquet", "geoparquet"),
    ("a.csv", "csv"), ("a.json", "geojson"), ("a.geojson", "geojson"), ("a.gpkg", "gpkg"),
    ("a.fgb", "fgb"), ("-", "csv")])
def test_format_by_file_name(name, fmt):
    assert formats.format_for(Path(name)) == fmt


def test_a_folder_without_extension_is_parquet_only_when_partitioned():
    assert formats.format_for(Path("folder"), folder=True) == "parquet"
    for name in ("folder", "a.txt"):
        with pytest.raises(UsageError, match="cannot tell the format"):
            formats.format_for(Path(name))
