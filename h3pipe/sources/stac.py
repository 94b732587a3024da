"""STAC sources: find the items of a collection over an area and describe their assets as
one raster grid, :func:`describe_stac`.

The items come from a STAC API (item search, paged, retried on transient HTTP errors), a
static catalog or collection (``catalog.json``/``collection.json``, on disk or over HTTP),
or a stac-geoparquet file. Where an item states its grid (``proj:shape`` and
``proj:transform``) no file is opened to plan a run; readers check each file against it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from h3pipe import extras
from h3pipe.errors import NoDataInScope, RemoteReadError, SourceError
from h3pipe.sources import remote
from h3pipe.sources.raster import RasterInfo, TileInfo, gdal_path, gdal_reason, sign

if TYPE_CHECKING:
    from h3pipe.spec import StacSpec

Box = tuple[float, float, float, float]

_RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_ATTEMPTS = 5


@dataclass(frozen=True)
class ItemRef:
    """One item used by a run: its id and its asset's href (unsigned)."""

    id: str
    href: str
    size: int | None = None  # bytes, when the asset says (file:size)


def describe_stac(source_id: str, spec: StacSpec, boxes: Sequence[Box], base_dir: Path, *,
                  band: int = 1, nodata: float | None = None,
                  nodata_override: bool = False) -> tuple[RasterInfo, list[ItemRef]]:
    """The grid of every item of ``spec.collection`` that intersects one of ``boxes``
    (lon/lat, each within -180..180: a scope across the antimeridian sends its two
    sides, one search each, since not every STAC server reads a box with west > east)."""
    where = f"source '{source_id}' (collection '{spec.collection}' at {spec.url})"
    found = {i["id"]: i for box in boxes for i in search(source_id, spec, box, base_dir)}
    items = [found[k] for k in sorted(found)]
    if not items:
        raise NoDataInScope(f"{where}: no item intersects bbox "
                            f"{' or '.join(_fmt(b) for b in boxes)}",
                          hint="check the scope, the collection id and any datetime/query "
                          "filter")
    placed = [_placement(where, item, spec, band) for item in items]
    first = placed[0]
    tiles = []
    for p in placed:
        if p["crs"] != first["crs"] or not math.isclose(p["xres"], first["xres"], rel_tol=1e-9) \
                or not math.isclose(p["yres"], first["yres"], rel_tol=1e-9):
            raise SourceError(f"{where}: item '{p['id']}' is on another grid than "
                              f"'{first['id']}' (CRS or pixel size differ)",
                              hint="narrow the search (datetime/query) to one grid")
        col = (p["x0"] - first["x0"]) / first["xres"]
        row = (first["y0"] - p["y0"]) / first["yres"]
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise SourceError(f"{where}: item '{p['id']}' is not aligned to the pixel grid of "
                              f"'{first['id']}'")
        tiles.append(TileInfo(p["href"], round(col), round(row), p["width"], p["height"],
                              p["nodata"]))
    from pyproj import CRS

    crs = CRS.from_user_input(first["crs"])
    info = RasterInfo(
        source_id=source_id, crs_wkt=crs.to_wkt(), crs_is_wgs84=crs.to_epsg() == 4326,
        x0=first["x0"], y0=first["y0"], xres=first["xres"], yres=first["yres"], band=band,
        dtype=first["dtype"], nodata=nodata if nodata_override else first["nodata"],
        nodata_override=nodata_override, tiles=tuple(tiles), signer=spec.signer,
    )
    return info, [ItemRef(p["id"], p["href"], p.get("size")) for p in placed]


def _fmt(bbox: tuple[float, ...]) -> str:
    return ",".join(f"{v:.4f}" for v in bbox)


# -- finding items ---------------------------------------------------------------------------

def search(source_id: str, spec: StacSpec, bbox: tuple[float, float, float, float],
           base_dir: Path) -> list[dict[str, Any]]:
    """Item dicts (with a resolvable ``self`` href) intersecting ``bbox``, sorted by id."""
    url = spec.url
    is_remote = "://" in url
    local = None if is_remote else (Path(url).expanduser() if Path(url).is_absolute()
                                    else base_dir / url)
    lower = url.lower().split("?")[0]
    if lower.endswith((".parquet", ".geoparquet")):
        items = _from_geoparquet(source_id, spec, str(local) if local else url, bbox)
    elif lower.endswith(".json") or local is not None:
        items = _from_static(source_id, spec, str(local) if local else url, bbox)
    else:
        items = _from_api(source_id, spec, bbox)
    return sorted(items, key=lambda i: i["id"])


def _from_api(source_id: str, spec: StacSpec, bbox: tuple[float, ...]) -> list[dict[str, Any]]:
    extras.require("stac", f"the STAC source '{source_id}'")
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    where = f"source '{source_id}': STAC API {spec.url}"
    retry = _retry()
    try:
        client = Client.open(spec.url, stac_io=StacApiIO(timeout=30, max_retries=retry))
        search = client.search(collections=[spec.collection], bbox=list(bbox),
                               datetime=spec.datetime, query=spec.query, limit=500)
        items = list(search.items_as_dicts())
    except Exception as exc:  # requests, pystac-client and HTTP errors alike
        _raise_transient(exc, f"{where}: the search for collection '{spec.collection}' "
                         f"and bbox {_fmt(bbox)} failed", spec.url, retry.total + 1)
        raise SourceError(f"{where} is unreachable or failed for collection "
                          f"'{spec.collection}' and bbox {_fmt(bbox)}: {_reason(exc)}",
                          hint="check the URL (or H3PIPE_STAC_API) and the network") from exc
    if not items:
        try:
            found = client.get_collection(spec.collection) is not None
        except Exception:
            found = False
        if not found:
            raise SourceError(f"{where} has no collection '{spec.collection}'",
                              hint="check 'stac.collection' in the source file")
    for item in items:
        item.setdefault("_base", _self_href(item) or spec.url)
    return items


def _retry() -> Any:
    """Retries of every STAC request (pages, items, catalogs) on 429, 5xx, refused
    connections, resets and timeouts, with backoff (0.3, 0.6, 1.2... s)."""
    from urllib3.util.retry import Retry

    return Retry(total=_ATTEMPTS - 1, backoff_factor=0.3, status_forcelist=_RETRY_STATUS,
                 allowed_methods=None, raise_on_status=False)


def _raise_transient(exc: BaseException, what: str, url: str, attempts: int) -> None:
    """Raise RemoteReadError if ``exc`` is a server's passing failure, else return."""
    found = remote.explain(exc)
    if found is not None and found.transient:
        raise RemoteReadError(f"{what}: {found.reason} from {remote.server_of(url)} after "
                              f"{attempts} attempts",
                              hint="the server failed or is unreachable, not the "
                              "source: run again later") from exc


def _from_static(source_id: str, spec: StacSpec, location: str,
                 bbox: tuple[float, ...]) -> list[dict[str, Any]]:
    extras.require("stac", f"the STAC source '{source_id}'")
    import pystac
    from pystac.stac_io import RetryStacIO

    where = f"source '{source_id}': STAC catalog {location}"
    retry = _retry()
    try:
        root = pystac.read_file(location, stac_io=RetryStacIO(retry=retry))
    except Exception as exc:
        _raise_transient(exc, f"{where} cannot be read", location, retry.total + 1)
        raise SourceError(f"{where} cannot be read: {_reason(exc)}",
                          hint="give a catalog.json or collection.json path or URL") from exc
    collection = None
    if isinstance(root, pystac.Collection) and root.id == spec.collection:
        collection = root
    elif isinstance(root, pystac.Catalog):
        collection = next((c for c in root.get_collections() if c.id == spec.collection), None)
        if collection is None:
            collection = next((c for c in root.get_all_collections()
                               if c.id == spec.collection), None)
    if collection is None:
        raise SourceError(f"{where} has no collection '{spec.collection}'",
                          hint="check 'stac.collection' in the source file")
    out = []
    try:
        found = list(collection.get_items(recursive=True))
    except Exception as exc:  # the item files are read as they are listed
        _raise_transient(exc, f"{where}: reading the items of '{spec.collection}' failed",
                         location, retry.total + 1)
        raise SourceError(f"{where}: an item of '{spec.collection}' cannot be read: "
                          f"{_reason(exc)}") from exc
    for item in found:
        if item.bbox is None or not _intersects(item.bbox, bbox):
            continue
        if spec.datetime and not _in_interval(item, spec.datetime):
            continue
        d = item.to_dict(include_self_link=True, transform_hrefs=False)
        d["_base"] = item.get_self_href() or location
        out.append(d)
    return out


def _from_geoparquet(source_id: str, spec: StacSpec, location: str,
                     bbox: tuple[float, ...]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    where = f"source '{source_id}': stac-geoparquet {location}"
    try:
        rows = pq.read_table(location).to_pylist()
    except Exception as exc:
        raise SourceError(f"{where} cannot be read: {_reason(exc)}") from exc
    out = []
    for row in rows:
        if row.get("collection") not in (None, spec.collection):
            continue
        b = row.get("bbox")
        box = (b["xmin"], b["ymin"], b["xmax"], b["ymax"]) if isinstance(b, dict) else b
        if box is None or not _intersects(box, bbox):
            continue
        props = {k: v for k, v in row.items() if k not in ("assets", "geometry", "links")}
        out.append({"id": row["id"], "bbox": list(box), "properties": props,
                    "assets": row.get("assets") or {}, "_base": location})
    return out


def _intersects(a: Any, b: tuple[float, ...]) -> bool:
    a = list(a)
    if len(a) == 6:  # 3-D bbox
        a = [a[0], a[1], a[3], a[4]]
    return a[0] < b[2] and a[2] > b[0] and a[1] < b[3] and a[3] > b[1]


def _in_interval(item: Any, interval: str) -> bool:
    from datetime import datetime

    start, _, end = interval.partition("/")
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        return True

    def parse(text: str) -> datetime | None:
        if text in ("", ".."):
            return None
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    lo, hi = parse(start), parse(end) if end else parse(start)
    naive = when.replace(tzinfo=None)
    return (lo is None or naive >= lo.replace(tzinfo=None)) and (
        hi is None or naive <= hi.replace(tzinfo=None))


def _self_href(item: dict[str, Any]) -> str | None:
    for link in item.get("links", []):
        if link.get("rel") == "self":
            return str(link.get("href"))
    return None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# -- placing items on a grid -----------------------------------------------------------------

def _placement(where: str, item: dict[str, Any], spec: StacSpec, band: int) -> dict[str, Any]:
    assets = item.get("assets") or {}
    asset = assets.get(spec.asset)
    if not asset:
        raise SourceError(f"{where}: item '{item.get('id')}' has no asset '{spec.asset}' "
                          f"(it has: {', '.join(sorted(assets)) or 'none'})",
                          hint="set 'stac.asset' in the source file")
    href = _absolute(asset["href"], item.get("_base", ""))
    props = {**(item.get("properties") or {}), **asset}
    shape, transform = props.get("proj:shape"), props.get("proj:transform")
    crs = props.get("proj:code") or (f"EPSG:{props['proj:epsg']}"
                                     if props.get("proj:epsg") else None)
    bands = props.get("raster:bands") or []
    meta = bands[band - 1] if len(bands) >= band else {}
    if shape and transform and crs and len(transform) >= 6 and meta.get("data_type"):
        a, _, c, _, e, f = transform[:6]
        return {"id": item["id"], "href": href, "crs": crs, "x0": c, "y0": f, "xres": a,
                "yres": -e, "width": int(shape[1]), "height": int(shape[0]),
                "dtype": meta["data_type"], "nodata": meta.get("nodata"),
                "size": asset.get("file:size")}
    return _from_file(where, item["id"], href, spec.signer, band) | {
        "size": asset.get("file:size")}


def _from_file(where: str, item_id: str, href: str, signer: str, band: int) -> dict[str, Any]:
    """The item does not state its grid: read the file's header."""
    from rasterio.errors import RasterioError

    try:
        header = remote.retrying(
            lambda: _header(href, signer), href=href, who=f"{where}: item '{item_id}'",
            action="open", errors=(RasterioError,), reason=gdal_reason,
            url=lambda: gdal_path(sign(href, signer)))
    except RasterioError as exc:
        raise SourceError(f"{where}: cannot open item '{item_id}' at {href}: "
                          f"{gdal_reason(exc)}") from exc
    if header["count"] < band:
        raise SourceError(f"{where}: item '{item_id}' has {header['count']} band(s), the "
                          f"source asks for band {band}")
    t = header["transform"]
    return {"id": item_id, "href": href, "crs": header["crs"], "x0": t.c, "y0": t.f,
            "xres": t.a, "yres": -t.e, "width": header["width"], "height": header["height"],
            "dtype": header["dtypes"][band - 1], "nodata": header["nodata"][band - 1]}


def _header(href: str, signer: str) -> dict[str, Any]:
    import rasterio

    with rasterio.open(gdal_path(sign(href, signer))) as ds:
        return {"count": ds.count, "crs": ds.crs.to_string() if ds.crs else None,
                "transform": ds.transform, "width": ds.width, "height": ds.height,
                "dtypes": ds.dtypes, "nodata": ds.nodatavals}


def _absolute(href: str, base: str) -> str:
    if "://" in href or href.startswith("/"):
        return href
    if "://" in base:
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


__all__ = ["ItemRef", "describe_stac", "search"]
