"""What a raster or STAC collection holds, for ``h3pipe sources inspect``: :class:`Inspection`.

:func:`inspect_location` reads headers and a decimated sample of pixels (never a whole
raster; :mod:`~h3pipe.authoring.sampling`), guesses what the values are (elevation,
population, classes, imagery; :mod:`~h3pipe.authoring.guessing`), and
:mod:`~h3pipe.authoring.drafting` turns the answer into a source file to edit. Guesses are
heuristics and say why they were made; nothing here is used by runs.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from h3pipe.authoring.guessing import (
    UNKNOWN,
    Guess,
    SampleStats,
    combine,
    guess_from_metadata,
    guess_from_pixels,
    metre_unit,
    sample_stats,
    suggest_resolutions,
)
from h3pipe.authoring.sampling import (
    Header,
    choose_asset,
    clean_nodata,
    crs_name,
    expand,
    join,
    read_api_collection,
    read_json,
    read_tiles,
    resolution_m,
    union_extent,
)
from h3pipe.errors import SourceError


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
    measure: str | None = None  # intensive | extensive | categorical, when guessed
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


def _with_guess(insp: Inspection, guess: Guess) -> Inspection:
    return replace(insp, guess=guess.name, reason=guess.reason, theme=guess.theme,
                   measure=guess.measure, stats=guess.stats, units=insp.units or guess.units,
                   resolutions=suggest_resolutions(insp.resolution_m))


# -- rasters -------------------------------------------------------------------------------

def _inspect_raster(location: str, base_dir: Path) -> Inspection:
    headers, samples = read_tiles(expand(location, base_dir), location)
    first = headers[0]
    extent = union_extent(headers)
    stats = sample_stats(samples)
    insp = Inspection(
        location=location, kind="raster", dtype=first.dtype,
        nodata=clean_nodata(first.nodata), band_count=first.count,
        crs=crs_name(first.crs), resolution_m=resolution_m(first.crs, first.res, extent),
        extent=extent, tile_count=sum(h.files for h in headers), sample=stats,
        notes=tuple(_grid_notes(headers)),
    )
    return _with_guess(insp, guess_from_pixels(first.count, first.dtype, stats))


def _grid_notes(headers: list[Header]) -> list[str]:
    """What keeps these tiles from being one source as they are."""
    first = headers[0]
    notes: list[str] = []
    if first.crs is None:
        notes.append("the raster has no CRS: assign one (gdal_edit.py -a_srs EPSG:4326) "
                     "before using it")
    for what, key in (("CRS", "crs"), ("pixel size", "res"), ("data type", "dtype")):
        if any(getattr(h, key) != getattr(first, key) for h in headers[1:]):
            notes.append(f"tiles differ in {what}: one source needs one grid; split them "
                         f"into separate sources")
    return notes


# -- STAC ----------------------------------------------------------------------------------

def _inspect_stac_file(location: str, base_dir: Path) -> Inspection:
    doc, where = read_json(location, base_dir)
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
        item_where = join(where, item_links[0]["href"])
        try:
            item, item_where = read_json(item_where, base_dir)
        except SourceError as exc:
            notes.append(f"first item not readable: {exc.message}")
    return _stac_inspection(location, doc, item, item_where, tile_count=len(item_links) or None,
                            notes=notes)


def _inspect_stac_api(location: str, api_url: str, collection_id: str) -> Inspection:
    notes: list[str] = []
    collection, item, matched = read_api_collection(location, api_url, collection_id, notes)
    return _stac_inspection(location, collection, item, api_url,
                            tile_count=matched, notes=notes, api_url=api_url)


def _stac_inspection(location: str, coll: dict[str, Any], item: dict[str, Any] | None,
                     item_where: str, *, tile_count: int | None, notes: list[str],
                     api_url: str | None = None) -> Inspection:
    """The collection's metadata, its data asset's, and pixels of the first item's asset
    when they can be read."""
    item_assets: dict[str, Any] = coll.get("item_assets") or {}
    assets: dict[str, Any] = (item or {}).get("assets") or {}
    key = choose_asset(item_assets) or choose_asset(assets)
    if key is None:
        notes.append("no asset named 'data' nor a GeoTIFF asset with role 'data': set "
                     "'asset:' by hand")
    meta = {**item_assets.get(key or "", {}), **assets.get(key or "", {})}
    fields = _asset_fields(coll, meta, (item or {}).get("properties", {}))
    sample = None
    href = assets.get(key, {}).get("href") if key else None
    if href:
        raster = _try_asset_pixels(join(item_where, href), notes, api_url)
        if raster is not None:
            sample = raster.sample
            fields.update(dtype=raster.dtype, nodata=raster.nodata, crs=raster.crs,
                          band_count=raster.band_count, resolution_m=raster.resolution_m)
    unit = _band0(meta).get("unit")
    insp = Inspection(
        location=location, kind="stac", tile_count=tile_count, asset=key,
        units=("m" if metre_unit(unit) else unit) if unit else None,
        sample=sample, notes=tuple(notes), **_collection_fields(coll), **fields,
    )
    pixels = (guess_from_pixels(insp.band_count, insp.dtype, sample)
              if sample is not None else UNKNOWN)
    return _with_guess(insp, combine(guess_from_metadata(coll, unit), pixels))


def _collection_fields(coll: dict[str, Any]) -> dict[str, Any]:
    """Inspection fields a collection document says directly."""
    extent = None
    bbox = ((coll.get("extent") or {}).get("spatial") or {}).get("bbox") or []
    if bbox and len(bbox[0]) in (4, 6):
        b = [float(v) for v in bbox[0]]
        # The first box is the overall extent; a 3D box is minx, miny, minz, maxx, maxy, maxz.
        extent = (b[0], b[1], b[2], b[3]) if len(b) == 4 else (b[0], b[1], b[3], b[4])
    interval = ((coll.get("extent") or {}).get("temporal") or {}).get("interval") or []
    temporal = (interval[0][0], interval[0][1]) if interval and len(interval[0]) == 2 else None
    providers = coll.get("providers") or []
    return dict(
        extent=extent, temporal_extent=temporal,
        title=coll.get("title"), description=coll.get("description"),
        collection=coll.get("id"), license=coll.get("license"),
        providers=tuple(p["name"] for p in providers if p.get("name")),
        provider_url=next((p["url"] for p in providers
                           if p.get("url") and "licensor" in (p.get("roles") or [])), None),
    )


def _asset_fields(coll: dict[str, Any], meta: dict[str, Any], props: dict[str, Any]
                  ) -> dict[str, Any]:
    """Inspection fields the data asset's metadata (and the first item's) say."""
    bands = meta.get("raster:bands") or []
    band0 = _band0(meta)
    epsg = props.get("proj:epsg") or meta.get("proj:epsg")
    code = props.get("proj:code") or meta.get("proj:code")
    gsd = (meta.get("gsd") or props.get("gsd") or band0.get("spatial_resolution")
           or _first((coll.get("summaries") or {}).get("gsd")))
    return dict(
        dtype=band0.get("data_type"), nodata=clean_nodata(band0.get("nodata")),
        band_count=len(bands) or None, crs=f"EPSG:{epsg}" if epsg else code,
        resolution_m=(float(gsd), float(gsd)) if gsd else None,
    )


def _band0(meta: dict[str, Any]) -> dict[str, Any]:
    bands = meta.get("raster:bands") or [{}]
    return bands[0]


def _first(values: Any) -> Any:
    return values[0] if isinstance(values, list) and values else None


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
