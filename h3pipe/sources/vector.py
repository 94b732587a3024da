"""Vector sources: :class:`VectorInfo` says where features are, :func:`read_features`
reads those inside an area as one Arrow table.

Every feature table h3pipe passes between steps has the same shape: ``feature_id``
(text), the attributes the source names, then ``geometry`` (WKB, lon/lat, EPSG:4326).
Files are read with pyogrio (GeoPackage, FlatGeobuf, Shapefile, GeoJSON, anything GDAL
reads) or pyarrow (GeoParquet); PostGIS tables with one SQL query. Each is filtered by the
area's bounding box as it is read, so a country's buildings never come from the globe's.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe.errors import RemoteReadError, SourceError
from h3pipe.sources import remote
from h3pipe.sources.raster import gdal_path

Bounds = tuple[float, float, float, float]
FEATURE_ID = "feature_id"
GEOMETRY = "geometry"


@dataclass(frozen=True)
class VectorInfo:
    """A vector source as workers need it (pickles)."""

    source_id: str
    location: str  # a file path, or a postgresql:// URL when ``table`` is set
    layer: str | None = None
    table: str | None = None
    id_field: str | None = None
    attributes: tuple[str, ...] = ()

    @property
    def is_postgis(self) -> bool:
        return self.table is not None

    @property
    def columns(self) -> list[str]:
        return [FEATURE_ID, *self.attributes, GEOMETRY]


def vector_info(source_id: str, location: str, base_dir: Path, *, layer: str | None = None,
                table: str | None = None, id_field: str | None = None,
                attributes: tuple[str, ...] = ()) -> VectorInfo:
    """Resolve a vector source's location; a missing file is an error naming it."""
    if table is None and remote.is_http(location):
        if location.lower().split("?")[0].endswith((".parquet", ".geoparquet")):
            raise SourceError(f"source '{source_id}': GeoParquet is read from local files "
                              f"only, not '{location}'",
                              hint="download it, or serve the layer as FlatGeobuf or "
                              "GeoPackage, which are read over HTTP")
        location = gdal_path(location)  # read over /vsicurl/, retried (see _read_ogr)
    elif table is None:
        path = Path(location)
        if not path.is_absolute():
            path = base_dir / path
        if not path.exists():
            demo = ".h3pipe/demo/" in location
            raise SourceError(f"source '{source_id}': no file '{location}'",
                              hint="run 'make demo-flood' to generate the stand-in data, or "
                              "point the source at your file" if demo else
                              "check 'path' in the source file (relative paths are "
                              "relative to the project)")
        location = str(path)
    info = VectorInfo(source_id, location, layer, table, id_field, tuple(attributes))
    # Open its metadata now: a corrupt file, a missing layer, table or field fails before
    # the run starts, not when its stage comes.
    read_features(info, None)
    return info


def read_features(info: VectorInfo, bounds: Bounds | None) -> pa.Table:
    """The features whose bounding box meets ``bounds`` (lon/lat), as a feature table;
    with ``bounds`` None, only check that the source opens and has its fields."""
    if info.is_postgis:
        return _read_postgis(info, bounds)
    if info.location.lower().endswith((".parquet", ".geoparquet")):
        return _read_geoparquet(info, bounds)
    return _read_ogr(info, bounds)


def _read_ogr(info: VectorInfo, bounds: Bounds | None) -> pa.Table:
    # GDAL's remarks on a damaged file come as warnings; the error raised says what matters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _read_ogr_quietly(info, bounds)


def _read_ogr_quietly(info: VectorInfo, bounds: Bounds | None) -> pa.Table:
    import pyogrio
    import pyogrio.errors

    def read() -> tuple[Any, Any, Any]:
        meta = pyogrio.read_info(info.location, layer=info.layer)
        _check_fields(info, list(meta["fields"]))
        crs = meta.get("crs")
        if bounds is None:
            return crs, None, None
        meta_r, table = pyogrio.read_arrow(
            info.location, layer=info.layer, bbox=_bounds_in(bounds, crs),
            columns=[c for c in [info.id_field, *info.attributes] if c], return_fids=True)
        return crs, meta_r, table

    try:
        # pyogrio has a GDAL of its own: its memory of a failed file is cleared with its call.
        crs, meta_r, table = remote.retrying(
            read, href=info.location, who=f"source '{info.source_id}'", action="read",
            errors=(pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError),
            reason=lambda exc: " ".join(str(exc).split()),
            forget=lambda: pyogrio.vsi_curl_clear_cache(info.location))
        if table is None:
            return pa.table({})
    except SourceError:
        raise
    except Exception as exc:  # pyogrio's DataSourceError, DataLayerError, ...
        raise SourceError(f"source '{info.source_id}': cannot read '{info.location}': "
                          f"{' '.join(str(exc).split())}",
                          hint="check the file and its 'layer'") from exc
    geometry_name = meta_r.get("geometry_name") or "wkb_geometry"
    if geometry_name not in table.column_names:
        raise SourceError(f"source '{info.source_id}': '{info.location}' has no geometry")
    fids = table.column(meta_r.get("fid_column") or "OGC_FID") \
        if (meta_r.get("fid_column") or "OGC_FID") in table.column_names else None
    ids = table.column(info.id_field) if info.id_field else fids
    if ids is None:
        ids = pa.array(np.arange(table.num_rows))
    geoms = _to_wgs84(table.column(geometry_name).to_numpy(zero_copy_only=False), crs)
    return _feature_table(info, ids, {a: table.column(a) for a in info.attributes}, geoms)


def _read_geoparquet(info: VectorInfo, bounds: Bounds | None) -> pa.Table:
    import pyarrow.parquet as pq
    import shapely

    try:
        schema = pq.read_schema(info.location)
        geo = json.loads((schema.metadata or {}).get(b"geo", b"{}"))
        geometry_name = geo.get("primary_column", GEOMETRY)
        crs = geo.get("columns", {}).get(geometry_name, {}).get("crs")
        _check_fields(info, [n for n in schema.names if n != geometry_name])
        if bounds is None:
            return pa.table({})
        wanted = [c for c in dict.fromkeys([info.id_field, *info.attributes, geometry_name]) if c]
        table = pq.read_table(info.location, columns=wanted)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"source '{info.source_id}': cannot read '{info.location}': "
                          f"{' '.join(str(exc).split())}",
                          hint="check that the file is GeoParquet") from exc
    crs_text = json.dumps(crs) if isinstance(crs, dict) else crs
    geoms_src = table.column(geometry_name).to_numpy(zero_copy_only=False)
    minx, miny, maxx, maxy = _bounds_in(bounds, crs_text)
    env = shapely.bounds(shapely.from_wkb(geoms_src))
    keep = (env[:, 0] <= maxx) & (env[:, 2] >= minx) & (env[:, 1] <= maxy) & (env[:, 3] >= miny)
    table = table.filter(pa.array(keep))
    ids = table.column(info.id_field) if info.id_field else pa.array(np.flatnonzero(keep))
    geoms = _to_wgs84(table.column(geometry_name).to_numpy(zero_copy_only=False), crs_text)
    return _feature_table(info, ids, {a: table.column(a) for a in info.attributes}, geoms)


def _read_postgis(info: VectorInfo, bounds: Bounds | None) -> pa.Table:
    import psycopg
    from psycopg import sql

    assert info.table is not None
    schema, _, name = info.table.rpartition(".")
    try:
        with psycopg.connect(info.location, connect_timeout=10) as conn:
            found = conn.execute(
                "SELECT f_geometry_column FROM geometry_columns WHERE f_table_name = %s "
                "AND f_table_schema = coalesce(nullif(%s, ''), current_schema())",
                (name, schema)).fetchone()
            if found is None:
                raise SourceError(f"source '{info.source_id}': no geometry table "
                                  f"'{info.table}' in the database",
                                  hint="check 'table' (schema.name) in the source file")
            cols = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "AND table_schema = coalesce(nullif(%s, ''), current_schema())",
                (name, schema)).fetchall()]
            _check_fields(info, cols)
            if bounds is None:
                return pa.table({})
            geom = sql.Identifier(found[0])
            table_id = sql.Identifier(*info.table.split("."))
            id_expr = sql.SQL("{}::text").format(sql.Identifier(info.id_field or ""))
            attrs = sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(a))
                                     for a in info.attributes)
            query = sql.SQL(
                "SELECT {id}{attrs}, ST_AsBinary(ST_Transform({g}, 4326)) FROM {t} "
                "WHERE {g} && ST_Transform(ST_MakeEnvelope(%s, %s, %s, %s, 4326), "
                "ST_SRID({g}))").format(id=id_expr, attrs=attrs, g=geom, t=table_id)
            rows = conn.execute(query, bounds).fetchall()
    except SourceError:
        raise
    except psycopg.OperationalError as exc:
        raise RemoteReadError(f"source '{info.source_id}': cannot reach the database: "
                              f"{' '.join(str(exc).split())[:200]}",
                              hint="check that the database is up and the URL") from exc
    except psycopg.Error as exc:
        raise SourceError(f"source '{info.source_id}': cannot read '{info.table}': "
                          f"{' '.join(str(exc).split())[:200]}") from exc
    width = 2 + len(info.attributes)
    columns = list(zip(*rows, strict=True)) if rows else [()] * width
    attrs_out = {a: pa.array(list(columns[1 + i])) for i, a in enumerate(info.attributes)}
    geoms = np.array([bytes(g) for g in columns[-1]], dtype=object)
    return _feature_table(info, pa.array(list(columns[0]), pa.string()), attrs_out, geoms)


def _check_fields(info: VectorInfo, available: list[str]) -> None:
    for name in [info.id_field, *info.attributes]:
        if name and name not in available:
            raise SourceError(f"source '{info.source_id}': no field '{name}' in "
                              f"'{info.table or info.location}' (fields: "
                              f"{', '.join(available) or 'none'})",
                              hint="fix 'id_field' or 'attributes' in the source file")


def _bounds_in(bounds: Bounds, crs: str | None) -> Bounds:
    """``bounds`` (lon/lat) in the data's CRS, for filtering as it is read."""
    if not crs or _is_wgs84(crs):
        return bounds
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_user_input(crs), always_xy=True)
    return tuple(tr.transform_bounds(*bounds, densify_pts=21))  # type: ignore[return-value]


def _is_wgs84(crs: str) -> bool:
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    return c.equals(CRS.from_epsg(4326), ignore_axis_order=True) or c.to_string() == "OGC:CRS84"


def _to_wgs84(wkb: np.ndarray, crs: str | None) -> np.ndarray:
    if not crs or _is_wgs84(crs) or len(wkb) == 0:
        return wkb
    import shapely

    return shapely.to_wkb(transform(shapely.from_wkb(wkb), crs, "EPSG:4326"))


def transform(geoms: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Shapely geometries from CRS ``src`` to ``dst`` (any form pyproj reads: EPSG code,
    WKT, PROJJSON), x as longitude or easting."""
    import shapely
    from pyproj import Transformer

    tr = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0],
                                                                          xy[:, 1])))


def _feature_table(info: VectorInfo, ids: Any, attributes: dict[str, Any],
                   geoms: np.ndarray) -> pa.Table:
    id_col = pa.array([None if v is None else str(v) for v in ids.to_pylist()], pa.string()) \
        if not pa.types.is_string(ids.type) else ids
    cols: dict[str, Any] = {FEATURE_ID: id_col, **attributes,
                            GEOMETRY: pa.array(list(geoms), pa.binary())}
    return pa.table(cols)


def geometries(table: pa.Table) -> np.ndarray:
    """The shapely geometries of a feature table."""
    import shapely

    return shapely.from_wkb(table.column(GEOMETRY).to_numpy(zero_copy_only=False))
