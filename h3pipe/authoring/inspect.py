"""What a raster or STAC collection holds, for ``h3pipe sources inspect``: :class:`Inspection`.

:func:`inspect_location` reads headers and a decimated sample of pixels (never a whole
raster), guesses what the values are (elevation, population, classes, imagery) and
:func:`to_source_yaml` turns the answer into a source file to edit. Guesses are
heuristics and say why they were made; nothing here is used by runs.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe.errors import SourceError
from h3pipe.sources.raster import expand_location, gdal_reason

#: Pixels read per location at most (a decimated read; overviews are used when present).
SAMPLE_PIXELS = 1_000_000
#: Tiles of a glob whose pixels are sampled (spread over the list); every header is read.
SAMPLE_TILES = 4
#: Seconds before a remote raster or STAC document is given up on.
HTTP_TIMEOUT = 30

GUESSES = ("dem", "population", "landcover", "rgb", "unknown")
_THEMES = {"dem": "terrain", "population": "demographics", "landcover": "landcover",
           "rgb": "other", "unknown": "other"}
_STATS = {
    "dem": ("mean", "min", "max", "stdev"),
    "population": ("sum",),
    "landcover": ("majority", "minority", "variety"),
    "rgb": ("mean", "stdev"),
    "unknown": ("count", "mean"),
}
_UNITS = {"dem": "m", "population": "persons per pixel"}
# Words in a STAC collection's id, title or keywords that say what its values are.
_KEYWORDS = {
    "dem": ("elevation", "dem", "dsm", "dtm", "terrain", "height", "topography", "bathymetry"),
    "population": ("population", "worldpop", "people", "inhabitants"),
    "landcover": ("land cover", "landcover", "land-cover", "land use", "landuse", "lulc"),
}
_METRE_UNITS = {"m", "metre", "meter", "metres", "meters"}

# Heuristic thresholds, all on the sampled valid pixels.
_MAX_CLASSES = 64  # an integer raster with at most this many values is categorical
_DEM_RANGE = (-500.0, 9000.0)  # plausible elevations in metres (Dead Sea to Everest)
_SMOOTH = 0.15  # mean |neighbour difference| / (p98 - p2) at most, for a smooth surface
_SKEWED = 5.0  # skewness at least: a few pixels far above the rest (people in towns)
_ZERO_INFLATED = 0.3  # share of zeros at least: empty land between settlements
_POP_P95 = 1000.0  # 95% of people-per-pixel values stay below this


@dataclass(frozen=True)
class SampleStats:
    """Summary of the valid pixels read from a decimated sample of band 1."""

    pixels: int
    min: float
    max: float
    p2: float
    median: float
    p95: float
    p98: float
    zero_fraction: float
    distinct: int
    skewness: float
    roughness: float  # mean |difference| between neighbours / (p98 - p2); small = smooth


@dataclass(frozen=True)
class Inspection:
    """What could be inferred about a location; ``None`` where it could not."""

    location: str
    kind: str  # raster | stac
    dtype: str | None = None
    nodata: float | None = None
    band_count: int | None = None
    crs: str | None = None
    resolution_m: tuple[float, float] | None = None  # pixel width, height in metres
    extent: tuple[float, float, float, float] | None = None  # lon/lat minx, miny, maxx, maxy
    tile_count: int | None = None
    units: str | None = None
    title: str | None = None
    description: str | None = None
    # STAC only
    collection: str | None = None
    asset: str | None = None
    temporal_extent: tuple[str | None, str | None] | None = None
    license: str | None = None
    providers: tuple[str, ...] = ()
    provider_url: str | None = None
    # what the values look like
    sample: SampleStats | None = None
    guess: str = "unknown"
    reason: str = ""
    theme: str = "other"
    stats: tuple[str, ...] = ("count", "mean")
    resolutions: tuple[int, int] | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- entry point ---------------------------------------------------------------------------

def inspect_location(location: str, base_dir: Path) -> Inspection:
    """Describe a raster file, glob of tiles, VRT, raster URL or STAC collection.

    A STAC collection is a ``collection.json`` (local path or http(s) URL) or a STAC API
    URL followed by ``#collection=ID``.
    """
    if "#collection=" in location:
        api_url, _, collection_id = location.partition("#collection=")
        return _inspect_stac_api(location, api_url, collection_id)
    if _looks_like_json(location):
        return _inspect_stac_file(location, base_dir)
    return _inspect_raster(location, base_dir)


def _looks_like_json(location: str) -> bool:
    path = urllib.parse.urlsplit(location).path if "://" in location else location
    return path.lower().endswith(".json")


# -- rasters -------------------------------------------------------------------------------

def _expand(location: str, base_dir: Path) -> list[str]:
    """GDAL paths of a location, with errors that say what could not be inspected."""
    return expand_location(location, base_dir, who=f"cannot inspect '{location}'")


@dataclass
class _Header:
    path: str
    crs: Any
    bounds: tuple[float, float, float, float]
    res: tuple[float, float]
    count: int
    dtype: str
    nodata: float | None
    files: int


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


def _header(ds: Any, path: str) -> _Header:
    files = len(ds.files) - 1 if ds.driver == "VRT" and len(ds.files) > 1 else 1
    return _Header(path, ds.crs, tuple(ds.bounds), ds.res, ds.count, ds.dtypes[0],
                   ds.nodatavals[0], files)


def _inspect_raster(location: str, base_dir: Path) -> Inspection:
    from rasterio.errors import RasterioError

    paths = _expand(location, base_dir)
    notes: list[str] = []
    headers: list[_Header] = []
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
    first = headers[0]
    if first.crs is None:
        notes.append("the raster has no CRS: assign one (gdal_edit.py -a_srs EPSG:4326) "
                     "before using it")
    for what, key in (("CRS", "crs"), ("pixel size", "res"), ("data type", "dtype")):
        if any(getattr(h, key) != getattr(first, key) for h in headers[1:]):
            notes.append(f"tiles differ in {what}: one source needs one grid; split them "
                         f"into separate sources")
    extent = _union_extent(headers)
    res_m = _resolution_m(first.crs, first.res, extent)
    stats = _sample_stats(samples)
    guess, reason = _guess_from_pixels(first.count, first.dtype, stats)
    insp = Inspection(
        location=location, kind="raster", dtype=first.dtype,
        nodata=_clean_nodata(first.nodata), band_count=first.count,
        crs=_crs_name(first.crs), resolution_m=res_m, extent=extent,
        tile_count=sum(h.files for h in headers), sample=stats, notes=tuple(notes),
    )
    return _with_guess(insp, guess, reason)


def _read_sample(ds: Any, budget: int) -> np.ma.MaskedArray:
    """Band 1 decimated to at most ``budget`` pixels; nodata and NaN masked."""
    scale = min(1.0, math.sqrt(budget / (ds.width * ds.height)))
    shape = (max(1, int(ds.height * scale)), max(1, int(ds.width * scale)))
    data = ds.read(1, out_shape=shape, masked=True)
    if data.dtype.kind == "f":
        data = np.ma.masked_invalid(data)
    return data


def _union_extent(headers: list[_Header]) -> tuple[float, float, float, float] | None:
    from rasterio.warp import transform_bounds

    boxes = []
    for h in headers:
        if h.crs is None:
            return None
        boxes.append(transform_bounds(h.crs, "EPSG:4326", *h.bounds, densify_pts=21))
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def _resolution_m(crs: Any, res: tuple[float, float],
                  extent: tuple[float, float, float, float] | None
                  ) -> tuple[float, float] | None:
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


def _crs_name(crs: Any) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def _clean_nodata(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


# -- what the pixels look like -----------------------------------------------------------

def _sample_stats(samples: list[np.ma.MaskedArray]) -> SampleStats | None:
    values = np.concatenate([s.compressed().astype("float64") for s in samples])
    if values.size == 0:
        return None
    diff_sum, diff_n = 0.0, 0
    for s in samples:
        grid = np.ma.filled(s.astype("float64"), np.nan)
        for a, b in ((grid[:, 1:], grid[:, :-1]), (grid[1:], grid[:-1])):
            # Pairs of zeros say nothing about smoothness (sea, empty land): skip them.
            keep = ~np.isnan(a) & ~np.isnan(b) & ((a != 0) | (b != 0))
            d = np.abs(a[keep] - b[keep])
            diff_sum += float(d.sum())
            diff_n += int(d.size)
    p2, median, p95, p98 = np.percentile(values, [2, 50, 95, 98])
    spread = p98 - p2
    if diff_n == 0:
        roughness = 0.0
    elif spread > 0:
        roughness = diff_sum / diff_n / spread
    else:
        roughness = math.inf if diff_sum > 0 else 0.0
    std = float(values.std())
    skew = float(np.mean((values - values.mean()) ** 3) / std ** 3) if std > 0 else 0.0
    return SampleStats(
        pixels=int(values.size), min=float(values.min()), max=float(values.max()),
        p2=float(p2), median=float(median), p95=float(p95), p98=float(p98),
        zero_fraction=float(np.count_nonzero(values == 0) / values.size),
        distinct=int(np.unique(values).size), skewness=skew, roughness=float(roughness),
    )


def _is_integer(dtype: str | None) -> bool:
    return dtype is not None and np.dtype(dtype).kind in "iu"


def _num(value: float) -> str:
    """A value as people read it: 21425, 1756, 0.2388."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _guess_from_pixels(count: int | None, dtype: str | None,
                       s: SampleStats | None) -> tuple[str, str]:
    if count in (3, 4) and dtype == "uint8":
        return "rgb", f"{count} bands of uint8, the layout of a colour image"
    if s is None:
        return "unknown", "no valid pixel in the sample (all nodata?)"
    if s.distinct == 1:
        return "unknown", f"every sampled pixel has the same value ({_num(s.min)})"
    integer = _is_integer(dtype)
    span = s.max - s.min + 1
    # A run of consecutive integers that fills its range is a quantised surface (a flat
    # DEM in whole metres), not a set of class codes.
    quantised = span >= 20 and s.distinct >= 0.8 * span and s.roughness <= _SMOOTH
    if integer and s.distinct <= _MAX_CLASSES and not quantised:
        return "landcover", (f"{dtype} with only {s.distinct} distinct values in the sample: "
                             f"class codes of a categorical map")
    if (s.min >= 0 and s.p95 < _POP_P95
            and (s.skewness >= _SKEWED
                 or (s.zero_fraction >= _ZERO_INFLATED and s.roughness > _SMOOTH))):
        return "population", (
            f"non-negative values, {s.zero_fraction:.0%} zeros, 95% below {_num(s.p95)} and "
            f"median {_num(s.median)}, with a long tail up to {_num(s.max)} (skewness "
            f"{s.skewness:.1f}): counts of people per pixel look like this")
    continuous = not integer or dtype in ("int16", "int32", "uint16")
    lo, hi = _DEM_RANGE
    # p2..p98, not min..max: a few spikes or pits must not hide a DEM.
    if (continuous and s.p2 >= lo and s.p98 <= hi and s.roughness <= _SMOOTH
            and s.skewness < _SKEWED):
        return "dem", (f"{dtype} values {_num(s.min)}..{_num(s.max)} lie within plausible "
                       f"elevations ({_num(lo)}..{_num(hi)} m) and change smoothly between "
                       f"neighbours (roughness {s.roughness:.3f})")
    return "unknown", (f"{dtype} values {_num(s.min)}..{_num(s.max)} (median {_num(s.median)}, "
                       f"{s.distinct} distinct in the sample) match no known pattern")


def _with_guess(insp: Inspection, guess: str, reason: str) -> Inspection:
    units = insp.units or _UNITS.get(guess)
    return replace(insp, guess=guess, reason=reason, theme=_THEMES[guess],
                   stats=_STATS[guess], units=units,
                   resolutions=suggest_resolutions(insp.resolution_m))


def suggest_resolutions(resolution_m: tuple[float, float] | None) -> tuple[int, int] | None:
    """``(coarsest, finest)`` H3 resolutions worth computing for pixels of this size.

    Finest: the finest level whose average hexagon edge is at least 3 pixels, so a cell
    (about 2.6 edge^2) covers some 20 pixels or more and its statistics are not just the
    one or two pixels under it. Coarsest: five levels up (7^5, about 17,000 fine cells
    per coarse cell). 30 m pixels give (4, 9), as the predecessor catalog had for GLO-30.
    """
    if resolution_m is None:
        return None
    import h3

    pixel = max(resolution_m)
    finest = 0
    for res in range(16):
        if h3.average_hexagon_edge_length(res, unit="m") >= 3 * pixel:
            finest = res
    return (max(0, finest - 5), finest)


# -- STAC ----------------------------------------------------------------------------------

def _read_json(location: str, base_dir: Path) -> tuple[dict[str, Any], str]:
    """A JSON document from a path or http(s) URL, and its resolved address."""
    if location.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(location, timeout=HTTP_TIMEOUT) as resp:
                text = resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise SourceError(f"cannot fetch '{location}': HTTP {exc.code} {exc.reason}",
                              hint="check the URL of the STAC collection") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"cannot fetch '{location}': {reason}",
                              hint="check the URL and your network connection") from exc
        where = location
    else:
        path = Path(location).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.exists():
            raise SourceError(f"cannot inspect '{location}': file not found: {path}",
                              hint="check the path of the STAC collection.json")
        text = path.read_text(encoding="utf-8")
        where = str(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"cannot inspect '{location}': not valid JSON ({exc.msg} at line "
                          f"{exc.lineno})", hint="give a STAC collection.json") from exc
    if not isinstance(doc, dict):
        raise SourceError(f"cannot inspect '{location}': not a STAC document",
                          hint="give a STAC collection.json")
    return doc, where


def _join(base: str, href: str) -> str:
    """``href`` resolved against the document at ``base`` (a URL or a local path)."""
    if "://" in href or href.startswith("/"):
        return href
    if "://" in base:
        return urllib.parse.urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


def _inspect_stac_file(location: str, base_dir: Path) -> Inspection:
    doc, where = _read_json(location, base_dir)
    if doc.get("type") != "Collection":
        raise SourceError(f"cannot inspect '{location}': it is a STAC "
                          f"{doc.get('type', 'document without a type')}, not a Collection",
                          hint="give the collection.json, or a STAC API URL with "
                               "'#collection=ID'")
    item_links = [ln for ln in doc.get("links") or [] if ln.get("rel") == "item"]
    item: dict[str, Any] | None = None
    item_where = where
    notes: list[str] = []
    if item_links:
        item_where = _join(where, item_links[0]["href"])
        try:
            item, item_where = _read_json(item_where, base_dir)
        except SourceError as exc:
            notes.append(f"first item not readable: {exc.message}")
    return _stac_inspection(location, doc, item, item_where, tile_count=len(item_links) or None,
                            notes=notes)


def _inspect_stac_api(location: str, api_url: str, collection_id: str) -> Inspection:
    if not collection_id:
        raise SourceError(f"cannot inspect '{location}': no collection id after "
                          f"'#collection='", hint="write URL#collection=ID")
    try:
        from pystac_client import Client
    except ImportError as exc:
        raise SourceError(f"cannot inspect '{location}': STAC APIs need the pystac-client "
                          f"package", hint="pip install pystac-client") from exc
    # pystac-client raises requests', pystac's and its own errors: all mean the same here.
    try:
        client = Client.open(api_url)
    except Exception as exc:
        raise SourceError(f"cannot open STAC API '{api_url}': {_one_line(exc)}",
                          hint="check the URL is a STAC API root and is reachable") from exc
    try:
        collection = client.get_collection(collection_id)
    except Exception as exc:
        raise SourceError(f"cannot get STAC collection '{collection_id}' from '{api_url}': "
                          f"{_one_line(exc)}",
                          hint="list the collections the API has at URL/collections") from exc
    if collection is None:
        raise SourceError(f"STAC collection '{collection_id}' not found at '{api_url}'",
                          hint="list the collections the API has at URL/collections")
    notes: list[str] = []
    item: dict[str, Any] | None = None
    matched: int | None = None
    try:
        search = client.search(collections=[collection_id], max_items=1)
        first = next(iter(search.items()), None)
        item = first.to_dict() if first is not None else None
        matched = search.matched()
    except Exception as exc:  # the collection alone still says a lot
        notes.append(f"could not fetch an item: {_one_line(exc)}")
    return _stac_inspection(location, collection.to_dict(), item, api_url,
                            tile_count=matched, notes=notes, api_url=api_url)


def _one_line(exc: BaseException) -> str:
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


def _stac_inspection(location: str, coll: dict[str, Any], item: dict[str, Any] | None,
                     item_where: str, *, tile_count: int | None, notes: list[str],
                     api_url: str | None = None) -> Inspection:
    item_assets: dict[str, Any] = coll.get("item_assets") or {}
    assets: dict[str, Any] = (item or {}).get("assets") or {}
    key = choose_asset(item_assets) or choose_asset(assets)
    if key is None:
        notes.append("no asset named 'data' nor a GeoTIFF asset with role 'data': set "
                     "'asset:' by hand")
    meta = {**item_assets.get(key or "", {}), **assets.get(key or "", {})}
    bands = meta.get("raster:bands") or []
    band0 = bands[0] if bands else {}
    props = (item or {}).get("properties", {})

    extent = None
    bbox = ((coll.get("extent") or {}).get("spatial") or {}).get("bbox") or []
    if bbox and len(bbox[0]) in (4, 6):
        b = [float(v) for v in bbox[0]]
        # The first box is the overall extent; a 3D box is minx, miny, minz, maxx, maxy, maxz.
        extent = (b[0], b[1], b[2], b[3]) if len(b) == 4 else (b[0], b[1], b[3], b[4])
    interval = ((coll.get("extent") or {}).get("temporal") or {}).get("interval") or []
    temporal = (interval[0][0], interval[0][1]) if interval and len(interval[0]) == 2 else None
    providers_meta = coll.get("providers") or []
    providers = tuple(p["name"] for p in providers_meta if p.get("name"))
    provider_url = next((p["url"] for p in providers_meta
                         if p.get("url") and "licensor" in (p.get("roles") or [])), None)

    epsg = props.get("proj:epsg") or meta.get("proj:epsg")
    code = props.get("proj:code") or meta.get("proj:code")
    crs = f"EPSG:{epsg}" if epsg else code
    gsd = (meta.get("gsd") or props.get("gsd") or band0.get("spatial_resolution")
           or _first((coll.get("summaries") or {}).get("gsd")))
    res_m = (float(gsd), float(gsd)) if gsd else None

    fields: dict[str, Any] = dict(
        dtype=band0.get("data_type"), nodata=_clean_nodata(band0.get("nodata")),
        band_count=len(bands) or None, crs=crs, resolution_m=res_m,
    )
    sample = None
    href = assets.get(key, {}).get("href") if key else None
    if href:
        raster = _try_asset_pixels(_join(item_where, href), notes, api_url)
        if raster is not None:
            sample = raster.sample
            fields.update(dtype=raster.dtype, nodata=raster.nodata, crs=raster.crs,
                          band_count=raster.band_count, resolution_m=raster.resolution_m)
    unit = band0.get("unit")
    insp = Inspection(
        location=location, kind="stac", extent=extent, tile_count=tile_count,
        units=("m" if str(unit).lower() in _METRE_UNITS else unit) if unit else None,
        title=coll.get("title"), description=coll.get("description"),
        collection=coll.get("id"), asset=key, temporal_extent=temporal,
        license=coll.get("license"), providers=providers, provider_url=provider_url,
        sample=sample, notes=tuple(notes), **fields,
    )
    pixel_guess, pixel_reason = _guess_from_pixels(insp.band_count, insp.dtype, sample) \
        if sample is not None else ("unknown", "")
    meta_guess, meta_reason = _guess_from_metadata(coll, unit)
    if meta_guess != "unknown" and pixel_guess not in ("unknown", meta_guess):
        guess, reason = meta_guess, (f"{meta_reason}, though the first item's pixels look "
                                     f"like {pixel_guess}: {pixel_reason}")
    elif meta_guess != "unknown":
        guess = meta_guess
        reason = meta_reason + (f"; the first item's pixels agree: {pixel_reason}"
                                if pixel_guess == meta_guess else "")
    elif pixel_guess != "unknown":
        guess, reason = pixel_guess, f"the first item's pixels: {pixel_reason}"
    else:
        guess = "unknown"
        reason = ("neither the collection's title and keywords nor its pixels say what the "
                  "values are" + (f" ({pixel_reason})" if pixel_reason else ""))
    return _with_guess(insp, guess, reason)


def _first(values: Any) -> Any:
    return values[0] if isinstance(values, list) and values else None


def _guess_from_metadata(coll: dict[str, Any], unit: Any) -> tuple[str, str]:
    words = [str(coll.get("id", "")), str(coll.get("title", "")),
             *(str(k) for k in coll.get("keywords") or [])]
    text = " " + " ".join(words).lower().replace("_", " ") + " "
    for guess, keys in _KEYWORDS.items():
        for k in keys:
            # Whole words only: 'dem' must not match 'demographics'.
            if any(f"{sep}{k}{end}" in text for sep in " -" for end in " -"):
                return guess, f"the collection's id, title or keywords mention '{k}'"
    if unit is not None and str(unit).lower() in _METRE_UNITS:
        return "dem", f"the data asset's raster:bands unit is '{unit}'"
    return "unknown", ""


def _try_asset_pixels(href: str, notes: list[str], api_url: str | None) -> Inspection | None:
    """The first item's data asset inspected as a raster, or ``None`` with a note."""
    if "://" not in href and not os.path.exists(href):
        notes.append(f"first item's asset not found at {href}: pixels not sampled")
        return None
    try:
        return _inspect_raster(href, Path("."))
    except SourceError as exc:
        hint = ""
        if api_url and "planetarycomputer" in api_url:
            hint = " (Planetary Computer assets must be signed: signer: planetary_computer)"
        notes.append(f"pixels of the first item not read: {exc.message}{hint}")
        return None


# -- source YAML ---------------------------------------------------------------------------

def suggest_source_id(insp: Inspection) -> str:
    """An id that source.v1.json accepts: the STAC collection id, else the file's name."""
    import re

    if insp.collection:
        base = insp.collection
    else:
        # The last path part that is not only a pattern: 'tiles/*.tif' gives 'tiles'.
        parts = [p.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
                 for p in insp.location.partition("#")[0].split("/")]
        base = next((p for p in reversed(parts) if p.strip("._-")), "")
        base = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    slug = re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-_.")[:100]
    return slug or "source"

def _yaml_scalar(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _one_line_text(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def to_source_yaml(insp: Inspection, *, source_id: str, location: str) -> str:
    """A source file for ``insp``, with ``# inferred:`` comments on every guessed value."""
    import textwrap

    q = _yaml_scalar
    out = ["# Written by 'h3pipe sources inspect' from:", f"#   {location}",
           "# Values marked 'inferred' are guesses from the metadata and a sample of pixels:",
           "# check them before running.",
           "schema_version: 1",
           f"id: {q(source_id)}",
           f"kind: {'stac' if insp.kind == 'stac' else 'raster'}",
           f"title: {q(insp.title)}" if insp.title else "# title:",
           f"description: {q(_one_line_text(insp.description))}" if insp.description
           else "# description:"]
    if insp.kind == "stac":
        api_url = location.partition("#collection=")[0]
        signer = ("  signer: planetary_computer  # inferred: Planetary Computer assets are "
                  "signed before reading" if "planetarycomputer.microsoft.com" in api_url
                  else "  signer: none  # planetary_computer for Planetary Computer data")
        out += ["stac:",
                f"  url: {q(api_url)}",
                f"  collection: {q(insp.collection or '')}",
                f"  asset: {q(insp.asset or 'data')}"
                + ("" if insp.asset else "  # no data asset found: set the asset key"),
                signer]
    else:
        out.append(f"path: {q(location)}")
        note = (f"  # the file has {insp.band_count} bands; a source reads one"
                if (insp.band_count or 1) > 1 else "")
        out.append(f"band: 1{note}")
    if insp.nodata is not None:
        shown = "NaN" if math.isnan(insp.nodata) else f"{insp.nodata:g}"
        out.append(f"# nodata: {shown} is declared ({insp.dtype}) and used unless set here; "
                   f"NaN is never counted")
    elif insp.dtype:
        out.append(f"# nodata: none declared ({insp.dtype}); set one if a value marks "
                   f"missing data")
    out.append(f"units: {q(insp.units)}  # inferred ({insp.guess})" if insp.units
               else "# units:")
    out += textwrap.wrap(f"inferred: {insp.guess}: {insp.reason}", width=92,
                         initial_indent="# ", subsequent_indent="#   ")
    out.append(f"theme: {insp.theme}")
    out.append(f"license: {q(insp.license)}" if insp.license else "# license:")
    prov = []
    if insp.providers:
        prov.append(f"  provider: {q(', '.join(insp.providers))}")
    url = insp.provider_url or (location.partition("#")[0] if "://" in location else None)
    if url:
        prov.append(f"  url: {q(url)}")
    out += (["provenance:", *prov] if prov
            else ["# provenance:", "#   provider:", "#   url:", "#   citation:"])
    out += ["recommended:",
            f"  stats: [{', '.join(insp.stats)}]  # inferred: usual for {insp.guess}"]
    if insp.resolutions is not None and insp.resolution_m is not None:
        lo, hi = insp.resolutions
        pixel = max(insp.resolution_m)
        out += [f"  # finest: the finest H3 level whose average cell edge is >= 3 pixels "
                f"(3 x {pixel:.4g} m),",
                "  # so each cell holds ~20 pixels or more; coarsest: 5 levels up.",
                f"  resolutions: [{lo}, {hi}]"]
    else:
        out.append("  # resolutions: [MIN, MAX]  (pixel size unknown)")
    return "\n".join(out) + "\n"
