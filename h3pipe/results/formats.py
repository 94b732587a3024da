"""The files a result is written as: :class:`ExportSpec` names one (format, geometry, H3 id
type, partitioning), checked once before the store is opened; :func:`write` writes a table
so, atomically.

Geometry is made for every cell at once: outlines and centres come from :mod:`h3pipe.grid`
as arrays and become shapely geometries and WKB through shapely's vectorised constructors,
with no Python loop over the cells (an export of a country at resolution 9 is millions of
rows; only GeoJSON, a format for small exports, writes row by row). GeoParquet follows the
1.1 specification (``geo`` metadata with a ``bbox`` covering column); GeoPackage and
FlatGeobuf are written by GDAL through pyogrio's Arrow API.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
import pyarrow as pa
import shapely

from h3pipe import grid
from h3pipe.errors import ConfigError, UsageError
from h3pipe.results import outputs
from h3pipe.results.outputs import PARTITION_KEY, is_stdout
from h3pipe.storage import space
from h3pipe.storage.embedded import dictionary_columns

FORMATS = ("parquet", "geoparquet", "csv", "geojson", "gpkg", "fgb")
GEOMETRIES = ("polygon", "point", "none")
H3_TYPES = ("text", "uint64")
_GEO_FORMATS = ("geoparquet", "geojson", "gpkg", "fgb")
_PARTITIONED = ("parquet", "geoparquet")
# Formats written front to back, with no seeking back: these can go to a pipe.
_STREAMS = ("csv", "geojson", "parquet", "geoparquet")
_BY_SUFFIX = {"parquet": "parquet", "pq": "parquet", "geoparquet": "geoparquet",
              "csv": "csv", "geojson": "geojson", "json": "geojson", "gpkg": "gpkg",
              "fgb": "fgb"}
_OGR_DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}
# Rows per Parquet row group of a GeoParquet file: readers skip whole groups by the min and
# max statistics of the bbox column, which only helps when a group is a small part of the
# map (rows come in batches of neighbouring cells). pyarrow's default is a million rows.
_GEO_ROW_GROUP = 65_536


def format_for(path: Path | str, *, folder: bool = False) -> str:
    """The format a file name asks for by its extension (csv for ``-``, standard output;
    parquet for a folder without one, ``folder`` being a partitioned export); an unknown
    or missing extension is a :class:`UsageError` listing the known ones."""
    if is_stdout(path):
        return "csv"
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if folder and not suffix:
        return "parquet"
    known = ", ".join(f".{s}" for s in _BY_SUFFIX)
    raise UsageError(f"cannot tell the format of '{Path(path).name}' from its extension: "
                     f"give a file ending in {known}, or --format")


@dataclass(frozen=True)
class ExportSpec:
    """How a result is written: ``fmt`` (one of :data:`FORMATS`), ``geometry`` (polygon,
    point or none), ``h3`` (the id as text or uint64), ``partition_resolution`` (a folder
    of files by parent cell, Parquet only) and ``layer`` (the layer name in GeoPackage and
    FlatGeobuf)."""

    fmt: str
    geometry: str
    h3: str = "text"
    partition_resolution: int | None = None
    layer: str = "cells"

    @classmethod
    def parse(cls, fmt: str, *, geometry: str | None = None, h3: str = "text",
              partition_resolution: int | None = None, layer: str = "cells") -> ExportSpec:
        """The spec for these options, or a :class:`UsageError` naming the one that does
        not fit."""
        _one_of("--format", fmt, FORMATS)
        _one_of("--h3", h3, H3_TYPES)
        geo = fmt in _GEO_FORMATS
        geometry = geometry or ("polygon" if geo else "none")
        _one_of("--geometry", geometry, GEOMETRIES)
        if geo and geometry == "none":
            raise UsageError(f"--geometry none: {fmt} needs a geometry (polygon or point); "
                             "for a table without one, use --format parquet or csv")
        if not geo and geometry != "none":
            raise UsageError(f"--geometry {geometry}: {fmt} has no geometry column; use "
                             "--format geoparquet, gpkg, fgb or geojson")
        if h3 == "uint64" and fmt == "geojson":
            raise UsageError("--h3 uint64: GeoJSON readers hold numbers as doubles, which "
                             "cannot keep H3 ids exact; use --h3 text")
        if partition_resolution is not None:
            if fmt not in _PARTITIONED:
                raise UsageError(f"--partition-resolution writes a folder of Parquet files: "
                                 f"use --format parquet or geoparquet, not {fmt}")
            if not 0 <= partition_resolution <= 15:
                raise UsageError(f"--partition-resolution {partition_resolution} is not an "
                                 "H3 resolution (0..15)")
        return cls(fmt, geometry, h3, partition_resolution, layer)


def _one_of(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"{option} '{value}' is not one of {', '.join(allowed)}")


def write(table: pa.Table, out: Path | str, spec: ExportSpec) -> None:
    """Write ``table`` (an ``h3_index`` text column, then any others) to ``out`` as ``spec``
    says; ``-`` is standard output (csv, geojson, parquet and geoparquet). A file appears
    whole or not at all: it is written beside ``out`` and renamed."""
    cells = grid.ids(table.column("h3_index"))
    if is_stdout(out):
        _check_streams(spec)
        sys.stdout.flush()
        _WRITERS[spec.fmt](_prepared(table, cells, spec), sys.stdout.buffer, spec)
        sys.stdout.buffer.flush()
    elif spec.partition_resolution is not None:
        _check_partition(cells, spec.partition_resolution)
        atomic(Path(out), None, lambda tmp: _write_partitions(table, cells, tmp, spec))
    else:
        atomic(Path(out), spec.fmt, lambda tmp: _WRITERS[spec.fmt](
            _prepared(table, cells, spec), tmp, spec))


def _check_streams(spec: ExportSpec) -> None:
    if spec.fmt not in _STREAMS or spec.partition_resolution is not None:
        what = "a folder" if spec.partition_resolution is not None else spec.fmt
        raise UsageError(f"-o -: {what} cannot be written to standard output (only "
                         f"{', '.join(_STREAMS)})", hint="give a file name")


# -- the rows: ids and geometry -----------------------------------------------------------------

@dataclass(frozen=True)
class _Prepared:
    """A table ready to write: its id column as asked, and the rows' geometry (shapely
    objects, None without one) and bounds (n x 4: xmin, ymin, xmax, ymax)."""

    table: pa.Table
    geometry: np.ndarray | None
    bounds: np.ndarray | None


def _prepared(table: pa.Table, cells: np.ndarray, spec: ExportSpec) -> _Prepared:
    if spec.h3 == "uint64":
        # GeoPackage and FlatGeobuf have no unsigned 64-bit integer; H3 ids use 63 bits.
        ids = pa.array(cells, pa.int64() if spec.fmt in _OGR_DRIVERS else pa.uint64())
        table = table.set_column(table.column_names.index("h3_index"), "h3_index", ids)
    if spec.geometry == "none":
        return _Prepared(table, None, None)
    for name in ("geometry", "bbox"):
        if name in table.column_names:
            raise ConfigError(f"the dataset has a column '{name}', which the {spec.fmt} "
                              "geometry would replace", hint="export it as parquet or csv")
    # A sweep has a row per cell and scenario: each cell's geometry is made once.
    unique, inverse = np.unique(cells, return_inverse=True)
    geoms = _cell_geometries(unique, spec.geometry)
    return _Prepared(table, geoms[inverse], shapely.bounds(geoms)[inverse])


def _cell_geometries(cells: np.ndarray, kind: str) -> np.ndarray:
    """Shapely geometries of uint64 ``cells``: their outlines (``polygon``: lon/lat, closed,
    exterior counter-clockwise) or centres (``point``)."""
    if kind == "point":
        lng, lat = grid.centres(cells)
        return shapely.points(lng, lat)
    xy, starts = grid.outlines(cells)
    if len(cells):
        _unwrap_antimeridian(xy, starts)
    rings = shapely.linearrings(xy, indices=np.repeat(np.arange(len(cells)), np.diff(starts)))
    return shapely.orient_polygons(shapely.polygons(rings), exterior_cw=False)


def _unwrap_antimeridian(xy: np.ndarray, starts: np.ndarray) -> None:
    """Shift the western vertices of rings that cross 180 degrees by +360, in place.

    H3 gives such a cell's vertices on both sides (179.9 and -179.6); drawn as they are,
    the ring spans the whole world. Shifted, it stays one small polygon a little past 180,
    which GIS software draws where it belongs; splitting it would make it a MultiPolygon.
    """
    x = xy[:, 0]
    x[np.repeat(grid.crossing(xy, starts), np.diff(starts)) & (x < 0)] += 360


def _bbox_column(bounds: np.ndarray) -> pa.StructArray:
    """The GeoParquet 1.1 covering: each row's box as a struct of four doubles."""
    return pa.StructArray.from_arrays([pa.array(bounds[:, i]) for i in range(4)],
                                      names=["xmin", "ymin", "xmax", "ymax"])


# -- the writers -------------------------------------------------------------------------------

def _write_parquet(rows: _Prepared, path: Path | BinaryIO, spec: ExportSpec) -> None:
    import pyarrow.parquet as pq

    table, extra = rows.table, {}
    if rows.geometry is not None:
        assert rows.bounds is not None
        table = table.append_column("geometry", _wkb(rows.geometry))
        table = table.append_column("bbox", _bbox_column(rows.bounds))
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"geo":
                                               json.dumps(_geo_metadata(spec.geometry,
                                                                        rows.bounds))})
        extra = {"row_group_size": _GEO_ROW_GROUP}
    plain = [c for c in dictionary_columns(table.schema) if c not in ("geometry", "bbox")]
    pq.write_table(table, path, compression="zstd", use_dictionary=plain, **extra)


def _wkb(geometry: np.ndarray) -> pa.Array:
    return pa.array(shapely.to_wkb(geometry), pa.binary())


def _geo_metadata(kind: str, bounds: np.ndarray) -> dict[str, Any]:
    """The ``geo`` file metadata of GeoParquet 1.1 for a ``geometry`` column of cell
    polygons or points whose rows have ``bounds``. No ``crs``: omitted, it means OGC:CRS84
    (lon/lat on WGS 84), which H3 is."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon" if kind == "polygon" else "Point"],
        "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if kind == "polygon":
        column["orientation"] = "counterclockwise"
    if len(bounds):
        column["bbox"] = [float(bounds[:, 0].min()), float(bounds[:, 1].min()),
                          float(bounds[:, 2].max()), float(bounds[:, 3].max())]
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def _write_csv(rows: _Prepared, path: Path | BinaryIO, spec: ExportSpec) -> None:
    import pyarrow.csv as pcsv

    pcsv.write_csv(rows.table, path)


def _write_ogr(rows: _Prepared, path: Path | BinaryIO, spec: ExportSpec) -> None:
    import pyogrio

    assert rows.geometry is not None
    table = rows.table.append_column("geometry", _wkb(rows.geometry))
    # GeoPackage names its geometry column 'geom' unless told; the same name everywhere.
    options = {"GEOMETRY_NAME": "geometry"} if spec.fmt == "gpkg" else {}
    pyogrio.write_arrow(table, str(path), layer=spec.layer, driver=_OGR_DRIVERS[spec.fmt],
                        geometry_name="geometry", crs="EPSG:4326", layer_options=options,
                        geometry_type="Polygon" if spec.geometry == "polygon" else "Point")


def _write_geojson(rows: _Prepared, path: Path | BinaryIO, spec: ExportSpec) -> None:
    assert rows.geometry is not None
    cols = rows.table.column_names
    shapes = shapely.to_geojson(rows.geometry)
    with _text(path) as f:
        f.write('{"type": "FeatureCollection", "features": [\n')
        for i, (row, shape) in enumerate(zip(rows.table.to_pylist(), shapes, strict=True)):
            properties = json.dumps({c: row[c] for c in cols}, allow_nan=False)
            f.write(("," if i else "") + '{"type": "Feature", "properties": ' + properties
                    + ', "geometry": ' + shape + "}\n")
        f.write("]}\n")


@contextmanager
def _text(dest: Path | BinaryIO) -> Iterator[TextIO]:
    """``dest`` opened for UTF-8 text; a stream (standard output) is left open."""
    if isinstance(dest, Path):
        with dest.open("w", encoding="utf-8") as f:
            yield f
        return
    text = io.TextIOWrapper(dest, encoding="utf-8")  # type: ignore[arg-type]
    try:
        yield text
    finally:
        text.flush()
        text.detach()


_WRITERS: dict[str, Callable[[_Prepared, Any, ExportSpec], None]] = {
    "parquet": _write_parquet, "geoparquet": _write_parquet, "csv": _write_csv,
    "geojson": _write_geojson, "gpkg": _write_ogr, "fgb": _write_ogr,
}


# -- partitions -----------------------------------------------------------------------------

def _check_partition(cells: np.ndarray, resolution: int) -> None:
    coarsest = int(grid.resolutions(cells).min()) if len(cells) else 16
    if resolution >= coarsest:
        raise UsageError(f"--partition-resolution {resolution} must be coarser than the "
                         f"data's resolution {coarsest}"
                         + (f": give 0..{coarsest - 1}" if coarsest else ""))


def _partition_parents(cells: np.ndarray, resolution: int) -> np.ndarray:
    """Each cell's ancestor at ``resolution``, for cells of any mix of finer resolutions."""
    out = np.empty_like(cells)
    res = grid.resolutions(cells)
    for r in np.unique(res):
        at = res == r
        out[at] = grid.parents(cells[at], resolution)
    return out


def _write_partitions(table: pa.Table, cells: np.ndarray, folder: Path,
                      spec: ExportSpec) -> None:
    """``folder/h3_parent=<parent>/part-0.parquet``, one file per parent cell (Hive
    layout), each a whole Parquet or GeoParquet file of its own."""
    assert spec.partition_resolution is not None
    parents = _partition_parents(cells, spec.partition_resolution)
    rows = _prepared(table, cells, spec)
    order = np.argsort(parents, kind="stable")
    keys, first = np.unique(parents[order], return_index=True)
    edges = np.append(first, len(order))
    for name, lo, hi in zip(grid.strings(keys).to_pylist(), edges[:-1], edges[1:], strict=True):
        take = order[lo:hi]
        part = _Prepared(rows.table.take(pa.array(take)),
                         None if rows.geometry is None else rows.geometry[take],
                         None if rows.bounds is None else rows.bounds[take])
        (folder / f"{PARTITION_KEY}={name}").mkdir()
        _write_parquet(part, folder / f"{PARTITION_KEY}={name}" / "part-0.parquet", spec)


# -- atomic output ----------------------------------------------------------------------------

def atomic(out: Path, fmt: str | None, write_to: Callable[[Path], object]) -> None:
    """Run ``write_to`` on a temporary path beside ``out`` (a file of format ``fmt``, or a
    folder when None), then move it to ``out``; on any failure, remove what was written and
    leave ``out`` as it was. ``out`` is checked first (:func:`h3pipe.results.outputs.target`):
    a device, FIFO, socket or folder is refused, a symlink is written through."""
    import pyogrio.errors

    real = outputs.target(out, folder=fmt is None)
    # GDAL warns when a GeoPackage's name does not end in .gpkg: the temporary one does.
    ending = f".{fmt}" if fmt in _OGR_DRIVERS else ""
    try:
        outputs.atomic(real, write_to, ending=ending, folder=fmt is None)
    except (OSError, pyogrio.errors.DataSourceError) as exc:
        # The output path is the user's to choose: a bad one is bad input (exit 2).
        # GDAL's errors carry no errno: then the free space decides.
        if space.is_full(exc, real.parent) or (
                isinstance(exc, pyogrio.errors.DataSourceError) and space.low(real.parent)):
            raise ConfigError(f"cannot write {out}: no space left on its disk",
                              hint="free some space there, or write elsewhere") from exc
        raise ConfigError(f"cannot write {out}: {exc}",
                          hint="check the folder exists, is a folder and is writable") from exc
