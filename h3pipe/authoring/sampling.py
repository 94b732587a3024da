"""Reading what ``h3pipe sources inspect`` looks at: raster headers (:class:`Header`), a
decimated sample of pixels, and STAC documents from a file, a URL or a STAC API.

Nothing here reads a whole raster: :func:`read_tiles` asks GDAL for at most
:data:`SAMPLE_PIXELS` pixels, from overviews when the file has them.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe import extras
from h3pipe.errors import SourceError
from h3pipe.sources.raster import expand_location, gdal_reason

#: Pixels read per location at most (a decimated read; overviews are used when present).
SAMPLE_PIXELS = 1_000_000
#: Tiles of a glob whose pixels are sampled (spread over the list); every header is read.
SAMPLE_TILES = 4
#: Seconds before a remote raster or STAC document is given up on.
HTTP_TIMEOUT = 30

Extent = tuple[float, float, float, float]


# -- rasters -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    """What a raster's header says, for one path of a location."""

    path: str
    crs: Any  # rasterio CRS, or None
    bounds: Extent
    res: tuple[float, float]
    count: int
    dtype: str
    nodata: float | None
    files: int  # files behind it: a VRT's tiles, else 1


def expand(location: str, base_dir: Path) -> list[str]:
    """GDAL paths of a location, with errors that say what could not be inspected."""
    return expand_location(location, base_dir, who=f"cannot inspect '{location}'")


def read_tiles(paths: list[str], location: str
               ) -> tuple[list[Header], list[np.ma.MaskedArray]]:
    """Every path's header, and band 1 of up to :data:`SAMPLE_TILES` of them, spread over
    the list so a glob's sample is not all from one corner."""
    from rasterio.errors import RasterioError

    headers: list[Header] = []
    samples: list[np.ma.MaskedArray] = []
    picked = set(np.linspace(0, len(paths) - 1, min(SAMPLE_TILES, len(paths))).round()
                 .astype(int).tolist())
    budget = SAMPLE_PIXELS // len(picked)
    with _gdal_env():
        for i, p in enumerate(paths):
            shown = location if len(paths) == 1 else p
            with _open(p, shown) as ds:
                headers.append(_header(ds, p))
                if i in picked:
                    try:
                        samples.append(_read_sample(ds, budget))
                    except RasterioError as exc:
                        raise SourceError(f"cannot read pixels of '{shown}': "
                                          f"{gdal_reason(exc)}",
                                          hint="the file may be corrupt or truncated") from exc
    return headers, samples


def _gdal_env() -> Any:
    import rasterio

    return rasterio.Env(GDAL_HTTP_TIMEOUT=str(HTTP_TIMEOUT),
                        GDAL_HTTP_CONNECTTIMEOUT=str(min(10, HTTP_TIMEOUT)),
                        GDAL_HTTP_MAX_RETRY="0")


def _open(path: str, location: str) -> Any:
    import rasterio
    from rasterio.errors import RasterioError

    try:
        return rasterio.open(path)
    except RasterioError as exc:
        remote = path.startswith("/vsi")
        raise SourceError(
            f"cannot open '{location}' as a raster: {gdal_reason(exc)}",
            hint=("check the URL is reachable and points to a GeoTIFF/COG (for a STAC "
                  "API, add '#collection=ID')" if remote
                  else "check the file is a readable GeoTIFF/VRT (it may be corrupt or "
                       "truncated)"),
        ) from exc


def _header(ds: Any, path: str) -> Header:
    files = len(ds.files) - 1 if ds.driver == "VRT" and len(ds.files) > 1 else 1
    return Header(path, ds.crs, tuple(ds.bounds), ds.res, ds.count, ds.dtypes[0],
                  ds.nodatavals[0], files)


def _read_sample(ds: Any, budget: int) -> np.ma.MaskedArray:
    """Band 1 decimated to at most ``budget`` pixels; nodata and NaN masked."""
    scale = min(1.0, math.sqrt(budget / (ds.width * ds.height)))
    shape = (max(1, int(ds.height * scale)), max(1, int(ds.width * scale)))
    data: np.ma.MaskedArray = ds.read(1, out_shape=shape, masked=True)
    if data.dtype.kind == "f":
        data = np.ma.masked_invalid(data)
    return data


def union_extent(headers: list[Header]) -> Extent | None:
    """The lon/lat box around every header, or ``None`` if one has no CRS."""
    from rasterio.warp import transform_bounds

    boxes = []
    for h in headers:
        if h.crs is None:
            return None
        boxes.append(transform_bounds(h.crs, "EPSG:4326", *h.bounds, densify_pts=21))
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def resolution_m(crs: Any, res: tuple[float, float], extent: Extent | None
                 ) -> tuple[float, float] | None:
    """Pixel width and height in metres; ``None`` when the CRS cannot say."""
    if crs is None:
        return None
    if crs.is_geographic:
        if extent is None:
            return None
        return _degrees_to_m(res, (extent[1] + extent[3]) / 2)
    try:
        factor = crs.linear_units_factor[1]
    except Exception:  # rasterio raises CRSError for CRSs without linear units
        return None
    return (res[0] * factor, res[1] * factor)


def _degrees_to_m(res: tuple[float, float], lat: float) -> tuple[float, float]:
    """Ground size of a pixel of ``res`` degrees at latitude ``lat`` (WGS84 ellipsoid)."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    x = geod.line_length([0.0, res[0]], [lat, lat])
    lat0, lat1 = max(-90.0, lat - res[1] / 2), min(90.0, lat + res[1] / 2)
    y = geod.line_length([0.0, 0.0], [lat0, lat1])
    return (x, y)


def crs_name(crs: Any) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def clean_nodata(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


# -- STAC documents ------------------------------------------------------------------------

def read_json(location: str, base_dir: Path) -> tuple[dict[str, Any], str]:
    """A JSON document from a path or http(s) URL, and its resolved address."""
    if location.startswith(("http://", "https://")):
        text, where = _fetch_text(location), location
    else:
        path = Path(location).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.exists():
            raise SourceError(f"cannot inspect '{location}': file not found: {path}",
                              hint="check the path of the STAC collection.json")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"cannot inspect '{location}': not valid JSON ({exc.msg} at line "
                          f"{exc.lineno})", hint="give a STAC collection.json") from exc
    if not isinstance(doc, dict):
        raise SourceError(f"cannot inspect '{location}': not a STAC document",
                          hint="give a STAC collection.json")
    return doc, where


def _fetch_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp:
            return resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise SourceError(f"cannot fetch '{url}': HTTP {exc.code} {exc.reason}",
                          hint="check the URL of the STAC collection") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot fetch '{url}': {reason}",
                          hint="check the URL and your network connection") from exc


def join(base: str, href: str) -> str:
    """``href`` resolved against the document at ``base`` (a URL or a local path)."""
    if "://" in href or href.startswith("/"):
        return href
    if "://" in base:
        return urllib.parse.urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


def read_api_collection(location: str, api_url: str, collection_id: str, notes: list[str]
                        ) -> tuple[dict[str, Any], dict[str, Any] | None, int | None]:
    """A STAC API collection, its first item and how many items it has (``None`` for
    either when the search fails: a note says why)."""
    client = _open_client(location, api_url, collection_id)
    try:
        collection = client.get_collection(collection_id)
    except Exception as exc:
        raise SourceError(f"cannot get STAC collection '{collection_id}' from '{api_url}': "
                          f"{one_line(exc)}",
                          hint="list the collections the API has at URL/collections") from exc
    if collection is None:
        raise SourceError(f"STAC collection '{collection_id}' not found at '{api_url}'",
                          hint="list the collections the API has at URL/collections")
    item: dict[str, Any] | None = None
    matched: int | None = None
    try:
        search = client.search(collections=[collection_id], max_items=1)
        first = next(iter(search.items()), None)
        item = first.to_dict() if first is not None else None
        matched = search.matched()
    except Exception as exc:  # the collection alone still says a lot
        notes.append(f"could not fetch an item: {one_line(exc)}")
    return collection.to_dict(), item, matched


def _open_client(location: str, api_url: str, collection_id: str) -> Any:
    if not collection_id:
        raise SourceError(f"cannot inspect '{location}': no collection id after "
                          f"'#collection='", hint="write URL#collection=ID")
    extras.require("stac", "a STAC API")
    from pystac_client import Client

    # pystac-client raises requests', pystac's and its own errors: all mean the same here.
    try:
        return Client.open(api_url)
    except Exception as exc:
        raise SourceError(f"cannot open STAC API '{api_url}': {one_line(exc)}",
                          hint="check the URL is a STAC API root and is reachable") from exc


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _roles(asset: dict[str, Any]) -> list[str]:
    # Some real collections (Copernicus DEM) spell it "role".
    roles = asset.get("roles", asset.get("role", []))
    return [roles] if isinstance(roles, str) else list(roles)


def _is_geotiff(asset: dict[str, Any]) -> bool:
    kind = str(asset.get("type", "")).lower()
    return "geotiff" in kind or "image/tiff" in kind


def choose_asset(assets: dict[str, dict[str, Any]]) -> str | None:
    """``data`` if present, else the first asset with role data and a GeoTIFF type."""
    if "data" in assets:
        return "data"
    for key, asset in assets.items():
        if "data" in _roles(asset) and _is_geotiff(asset):
            return key
    return None
