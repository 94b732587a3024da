"""Vector sources: :class:`VectorInfo` says where features are, :func:`iter_features`
reads those inside an area in pieces of bounded size (:func:`read_features`: as one
table), :func:`iter_boxes` only their bounding boxes.

Every feature table h3pipe passes between steps has the same shape: ``feature_id``
(text), the attributes the source names, then ``geometry`` (WKB, lon/lat, EPSG:4326);
features read for a run's partition also carry their centroid (``CENTROID``), computed
once where they are read. Files are read with pyogrio (GeoPackage, FlatGeobuf,
Shapefile, GeoJSON, anything GDAL reads: its spatial filter) or pyarrow (GeoParquet, a
row group at a time, pruned by the bbox covering: :mod:`h3pipe.sources.geoparquet`);
PostGIS tables with a bbox query. Each is filtered by the area's bounding box as it is
read, so a country's buildings never come from the globe's, nor a batch's from the
country's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from h3pipe import extras
from h3pipe.errors import RemoteReadError, SourceError
from h3pipe.sources import remote
from h3pipe.sources.geoparquet import GeoParquet, open_geoparquet
from h3pipe.sources.raster import gdal_path

_T = TypeVar("_T")

Bounds = tuple[float, float, float, float]
FEATURE_ID = "feature_id"
GEOMETRY = "geometry"
# A feature's centroid (lon, lat), added where a run reads it and kept by every step: the
# one fact that places it in a partition, a batch and a cell.
CENTROID = ("centroid_lon", "centroid_lat")
# ... and the H3 cell holding it at the run's resolution (its id as int64: H3 ids leave
# the sign bit 0, and every store keeps int64).
CENTROID_CELL = "centroid_cell"


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
    if bounds is None:
        _check_source(info)
        return pa.table({})
    parts = [table for table, _ in iter_features(info, bounds)]
    if not parts:
        return _feature_table(info, pa.array([], pa.string()),
                              {a: pa.array([]) for a in info.attributes},
                              pa.array([], pa.binary()))
    return pa.concat_tables(parts, promote_options="permissive")


def iter_features(info: VectorInfo, bounds: Bounds, within: np.ndarray | None = None
                  ) -> Iterator[tuple[pa.Table, np.ndarray | None]]:
    """The features whose bounding box meets ``bounds`` (lon/lat), as feature tables of
    bounded size (a GeoParquet row group's, or one read of an area), each with its rows'
    lon/lat boxes when the source gives them without parsing geometries (else None).
    ``within``: boxes (n, 4) inside ``bounds`` the features are wanted near, for a source
    that can skip parts of itself by them."""
    if info.is_postgis:
        yield _read_postgis(info, bounds), None
    elif _is_parquet(info):
        yield from _iter_geoparquet(info, bounds, within)
    else:
        yield _read_ogr(info, bounds), None


def iter_boxes(info: VectorInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """The lon/lat boxes (n, 4) of the features meeting ``bounds``, in pieces of bounded
    size: all that planning a run reads of a source (a GeoParquet file with a covering
    column is not asked for one geometry)."""
    if info.is_postgis:
        yield from _postgis_boxes(info, bounds)
    elif _is_parquet(info):
        yield from _geoparquet_boxes(info, bounds)
    else:
        yield from _ogr_boxes(info, bounds)


def feature_count(info: VectorInfo) -> int | None:
    """How many features the source holds in all, when it says so cheaply (None: not)."""
    if _is_parquet(info):
        return _geoparquet(info).rows
    return None


def _is_parquet(info: VectorInfo) -> bool:
    return info.location.lower().endswith((".parquet", ".geoparquet"))


def _check_source(info: VectorInfo) -> None:
    """Open the source's metadata: a corrupt file, a missing layer, table or field fails
    here, before any run."""
    if info.is_postgis:
        _read_postgis(info, None)
    elif _is_parquet(info):
        _geoparquet(info)
    else:
        _read_ogr(info, None)


def _read_ogr(info: VectorInfo, bounds: Bounds | None) -> pa.Table:
    # GDAL's remarks on a damaged file come as warnings; the error raised says what matters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _read_ogr_quietly(info, bounds)


def _read_ogr_quietly(info: VectorInfo, bounds: Bounds | None) -> pa.Table:
    import pyogrio

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

    crs, meta_r, table = _ogr_call(info, read)
    if table is None:
        return pa.table({})
    geometry_name = meta_r.get("geometry_name") or "wkb_geometry"
    if geometry_name not in table.column_names:
        raise SourceError(f"source '{info.source_id}': '{info.location}' has no geometry")
    fids = table.column(meta_r.get("fid_column") or "OGC_FID") \
        if (meta_r.get("fid_column") or "OGC_FID") in table.column_names else None
    ids = table.column(info.id_field) if info.id_field else fids
    if ids is None:
        ids = pa.array(np.arange(table.num_rows))
    geoms = _to_wgs84(table.column(geometry_name), crs)
    return _feature_table(info, ids, {a: table.column(a) for a in info.attributes}, geoms)


def _ogr_call(info: VectorInfo, read: Callable[[], _T]) -> _T:
    """``read`` through pyogrio, retried while a remote file's server has trouble; its
    errors as ours, naming the source."""
    import pyogrio
    import pyogrio.errors

    try:
        # pyogrio has a GDAL of its own: its memory of a failed file is cleared with its call.
        return remote.retrying(
            read, href=info.location, who=f"source '{info.source_id}'", action="read",
            errors=(pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError),
            reason=lambda exc: " ".join(str(exc).split()),
            forget=lambda: pyogrio.vsi_curl_clear_cache(info.location))
    except SourceError:
        raise
    except Exception as exc:  # pyogrio's DataSourceError, DataLayerError, ...
        raise SourceError(f"source '{info.source_id}': cannot read '{info.location}': "
                          f"{' '.join(str(exc).split())}",
                          hint="check the file and its 'layer'") from exc


def _ogr_boxes(info: VectorInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """Feature boxes through OGR's spatial filter, a batch of rows at a time."""
    import pyogrio
    import shapely

    def boxes() -> list[np.ndarray]:
        crs = pyogrio.read_info(info.location, layer=info.layer).get("crs")
        out = []
        with pyogrio.open_arrow(info.location, layer=info.layer, columns=[],
                                bbox=_bounds_in(bounds, crs), batch_size=65_536,
                                use_pyarrow=True) as (meta, r):
            name = meta.get("geometry_name") or "wkb_geometry"
            for part in r:
                wkb = pa.Table.from_batches([part]).column(name)
                out.append(_boxes_wgs84(shapely.bounds(shapely.from_wkb(
                    wkb.to_numpy(zero_copy_only=False))), crs))
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield from _ogr_call(info, boxes)


def _geoparquet(info: VectorInfo) -> GeoParquet:
    try:
        gp = open_geoparquet(info.location)
    except Exception as exc:
        raise _not_geoparquet(info, exc) from exc
    _check_fields(info, gp.names)
    return gp


def _not_geoparquet(info: VectorInfo, exc: Exception) -> SourceError:
    said = getattr(exc, "message", None) or str(exc)  # ours: its hint comes apart
    return SourceError(f"source '{info.source_id}': cannot read '{info.location}': "
                       f"{' '.join(said.split())}",
                       hint=getattr(exc, "hint", None) or "check that the file is GeoParquet")


def _iter_geoparquet(info: VectorInfo, bounds: Bounds, within: np.ndarray | None
                     ) -> Iterator[tuple[pa.Table, np.ndarray | None]]:
    gp = _geoparquet(info)
    wanted = [c for c in dict.fromkeys([info.id_field, *info.attributes, gp.geometry]) if c]
    native = not gp.crs or _is_wgs84(gp.crs)
    near = within if native else None
    try:
        for chunk in gp.chunks(_bounds_in(bounds, gp.crs), wanted, near):
            table = chunk.table
            ids = table.column(info.id_field) if info.id_field else pa.array(chunk.rows)
            yield (_feature_table(info, ids, {a: table.column(a) for a in info.attributes},
                                  _to_wgs84(table.column(gp.geometry), gp.crs)),
                   chunk.boxes if native and gp.covering is not None else None)
    except OSError as exc:  # pyarrow's errors of a damaged file
        raise _not_geoparquet(info, exc) from exc


def _geoparquet_boxes(info: VectorInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    gp = _geoparquet(info)
    try:
        for chunk in gp.chunks(_bounds_in(bounds, gp.crs), []):
            yield _boxes_wgs84(chunk.boxes, gp.crs)
    except OSError as exc:
        raise _not_geoparquet(info, exc) from exc


def _read_postgis(info: VectorInfo, bounds: Bounds | None) -> pa.Table:
    _need_postgres(info)
    from psycopg import sql

    def query(conn: Any, geom: Any, table_id: Any) -> pa.Table:
        id_expr = sql.SQL("{}::text").format(sql.Identifier(info.id_field or ""))
        attrs = sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(a))
                                 for a in info.attributes)
        rows = conn.execute(sql.SQL(
            "SELECT {id}{attrs}, ST_AsBinary(ST_Transform({g}, 4326)) FROM {t} "
            "WHERE {g} && ST_Transform(ST_MakeEnvelope(%s, %s, %s, %s, 4326), "
            "ST_SRID({g}))").format(id=id_expr, attrs=attrs, g=geom, t=table_id),
            bounds).fetchall()
        width = 2 + len(info.attributes)
        columns = list(zip(*rows, strict=True)) if rows else [()] * width
        attrs_out = {a: pa.array(list(columns[1 + i])) for i, a in enumerate(info.attributes)}
        geoms = pa.array([bytes(g) for g in columns[-1]], pa.binary())
        return _feature_table(info, pa.array(list(columns[0]), pa.string()), attrs_out, geoms)

    found = _postgis(info, query if bounds is not None else None)
    return found if found is not None else pa.table({})


def _postgis_boxes(info: VectorInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """Feature boxes in lon/lat, computed by the database, fetched in pieces."""
    _need_postgres(info)
    from psycopg import sql

    def query(conn: Any, geom: Any, table_id: Any) -> list[np.ndarray]:
        out = []
        with conn.cursor(name="h3pipe_boxes") as cur:
            cur.execute(sql.SQL(
                "SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM (SELECT "
                "Box2D(ST_Transform({g}, 4326)) AS b FROM {t} WHERE {g} && ST_Transform("
                "ST_MakeEnvelope(%s, %s, %s, %s, 4326), ST_SRID({g}))) AS boxes"
            ).format(g=geom, t=table_id), bounds)
            while rows := cur.fetchmany(100_000):
                out.append(np.array(rows, dtype=np.float64).reshape(-1, 4))
        return out

    yield from _postgis(info, query) or []


def _postgis(info: VectorInfo, query: Callable[[Any, Any, Any], _T] | None) -> _T | None:
    """Check the table and its fields, then run ``query(conn, geometry column, table)``;
    database errors as ours, naming the source."""
    _need_postgres(info)
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
            if query is None:
                return None
            return query(conn, sql.Identifier(found[0]),
                         sql.Identifier(*info.table.split(".")))
    except SourceError:
        raise
    except psycopg.OperationalError as exc:
        raise RemoteReadError(f"source '{info.source_id}': cannot reach the database: "
                              f"{' '.join(str(exc).split())[:200]}",
                              hint="check that the database is up and the URL") from exc
    except psycopg.Error as exc:
        raise SourceError(f"source '{info.source_id}': cannot read '{info.table}': "
                          f"{' '.join(str(exc).split())[:200]}") from exc


def _need_postgres(info: VectorInfo) -> None:
    extras.require("postgres", f"the PostGIS source '{info.source_id}'")


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


def _to_wgs84(wkb: pa.ChunkedArray | pa.Array, crs: str | None) -> pa.Array:
    """WKB geometries in lon/lat, as an Arrow binary array (as they are when already)."""
    if isinstance(wkb, pa.ChunkedArray):
        wkb = wkb.combine_chunks() if wkb.num_chunks != 1 else wkb.chunk(0)
    if not pa.types.is_binary(wkb.type):
        wkb = wkb.cast(pa.binary())
    if not crs or _is_wgs84(crs) or len(wkb) == 0:
        return wkb
    import shapely

    geoms = transform(shapely.from_wkb(wkb.to_numpy(zero_copy_only=False)), crs, "EPSG:4326")
    return pa.array(shapely.to_wkb(geoms), pa.binary())


def _boxes_wgs84(boxes: np.ndarray, crs: str | None) -> np.ndarray:
    """Boxes (n, 4) in lon/lat: their corners transformed (an estimate's accuracy)."""
    if not crs or _is_wgs84(crs) or len(boxes) == 0:
        return boxes
    from pyproj import Transformer

    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    xs, ys = [], []
    for ix, iy in ((0, 1), (0, 3), (2, 1), (2, 3)):
        x, y = tr.transform(boxes[:, ix], boxes[:, iy])
        xs.append(x)
        ys.append(y)
    return np.column_stack([np.min(xs, axis=0), np.min(ys, axis=0), np.max(xs, axis=0),
                            np.max(ys, axis=0)])


def transform(geoms: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Shapely geometries from CRS ``src`` to ``dst`` (any form pyproj reads: EPSG code,
    WKT, PROJJSON), x as longitude or easting."""
    import shapely
    from pyproj import Transformer

    tr = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0],
                                                                          xy[:, 1])))


def _feature_table(info: VectorInfo, ids: Any, attributes: dict[str, Any],
                   geoms: pa.Array) -> pa.Table:
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if pa.types.is_integer(ids.type):
        id_col = ids.cast(pa.string())
    elif pa.types.is_string(ids.type):
        id_col = ids
    else:  # as Python writes them (a float id 3.0 is '3.0')
        id_col = pa.array([None if v is None else str(v) for v in ids.to_pylist()],
                          pa.string())
    cols: dict[str, Any] = {FEATURE_ID: id_col, **attributes, GEOMETRY: geoms}
    return pa.table(cols)


def centroid_xy(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lon and lat of each geometry's centroid (NaN for an empty or missing one). A feature
    split at the antimeridian (parts by +180 and by -180, RFC 7946's way) has its centroid
    there, not halfway round the world: its western parts are moved by +360 first."""
    import shapely

    c = shapely.centroid(geoms)
    box = shapely.bounds(geoms).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        split = np.flatnonzero(box[:, 2] - box[:, 0] > 180)
    if len(split):
        east = shapely.transform(geoms[split], lambda xy: np.where(
            xy[:, :1] < 0, xy + np.array([360.0, 0.0]), xy))
        c[split] = shapely.transform(shapely.centroid(east), lambda xy: np.column_stack(
            [(xy[:, 0] + 180) % 360 - 180, xy[:, 1]]))
    there = ~(shapely.is_missing(c) | shapely.is_empty(c))
    x = np.full(len(geoms), np.nan)
    y = np.full(len(geoms), np.nan)
    x[there], y[there] = shapely.get_x(c[there]), shapely.get_y(c[there])
    return x, y


def geometries(table: pa.Table, info: VectorInfo | None = None) -> np.ndarray:
    """The shapely geometries of a feature table; a value that is not WKB (a GeoParquet
    file whose covering let its rows pass unparsed) is a SourceError naming the feature."""
    import shapely
    from shapely.errors import GEOSException

    wkb = table.column(GEOMETRY).to_numpy(zero_copy_only=False)
    try:
        return shapely.from_wkb(wkb)
    except GEOSException as exc:
        parsed = shapely.from_wkb(wkb, on_invalid="ignore")
        bad = next(i for i, g in enumerate(parsed) if g is None and wkb[i] is not None)
        where = f"source '{info.source_id}': '{info.location}': " if info else ""
        raise SourceError(f"{where}feature '{table.column(FEATURE_ID)[bad]}' holds no valid "
                          f"WKB geometry ({' '.join(str(exc).split())})",
                          hint="write its file again from its origin, or drop that row"
                          ) from None
