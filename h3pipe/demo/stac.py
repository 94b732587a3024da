"""STAC metadata for the synthetic cop-dem-glo-30 tiles made by :mod:`h3pipe.demo.copdem`.

The main entry point is :func:`write_static_catalog`, which writes a self-contained static
catalog (``collection.json`` plus ``items/<id>.json``) that pystac can read; :func:`item_dict`
and :func:`collection_dict` give the same documents as plain dicts, e.g. to load into pgSTAC.

The documents are shaped like the real ``cop-dem-glo-30`` ones, so code that reads them works
on the real collection:

* item id = tile file stem, ``datetime`` 2021-04-22T00:00:00Z, ``gsd`` 30, ``grid:code``;
* geometry and bbox are the pixel extent of the tile, half a pixel north-west of the 1-degree
  cell, and ``proj:transform`` is the tile's GeoTIFF transform, as in the real items;
* one asset, ``data``: the COG, with ``raster:bands`` sampling ``point``, unit ``meter``.

The items carry both ``proj:epsg`` (what the real items have, projection extension v1.0.0)
and its replacement ``proj:code``, so they declare projection v1.2.0, the one version that
defines both. pystac >= 1.12 migrates them to v2.0.0 when reading, dropping ``proj:epsg``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import rasterio

__all__ = [
    "ASSET_TYPE",
    "COLLECTION_ID",
    "DATETIME",
    "collection_dict",
    "item_dict",
    "write_static_catalog",
]

COLLECTION_ID = "cop-dem-glo-30"
#: Acquisition date every real cop-dem-glo-30 item carries (the 2021 release).
DATETIME = "2021-04-22T00:00:00Z"
ASSET_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

_STAC_VERSION = "1.0.0"
_TITLE = "Copernicus DEM GLO-30"
_GSD = 30
_PLATFORM = "tandem-x"
_ITEM_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v1.2.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
]
_COLLECTION_EXTENSIONS = [
    "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.2.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
# An empty collection still needs an extent; the real collection declares the whole globe.
_GLOBAL_BBOX = [-180.0, -90.0, 180.0, 90.0]
_TILE_STEM = re.compile(r"^Copernicus_DSM_COG_10_([NS])(\d{2})_00_([EW])(\d{3})_00_DEM$")
_JSON = "application/json"


def item_dict(tile_path: Path | str, href: str, *, collection_id: str = COLLECTION_ID) -> dict:
    """STAC Item for one tile, from its name and GeoTIFF header; ``href`` is the asset's href.

    Raises ``ValueError`` if the file is not named like a cop-dem-glo-30 tile or is not a
    single-band EPSG:4326 raster; ``rasterio.errors.RasterioIOError`` if it cannot be opened.
    """
    tile_path = Path(tile_path)
    item_id = tile_path.stem
    match = _TILE_STEM.match(item_id)
    if match is None:
        raise ValueError(
            f"{tile_path.name}: not a cop-dem-glo-30 tile name "
            "(expected Copernicus_DSM_COG_10_<N|S>nn_00_<E|W>nnn_00_DEM.tif)"
        )
    ns, lat, ew, lon = match.groups()
    lat_sw = int(lat) * (1 if ns == "N" else -1)
    lon_sw = int(lon) * (1 if ew == "E" else -1)

    with rasterio.open(tile_path) as ds:
        if ds.crs is None or ds.crs.to_epsg() != 4326:
            raise ValueError(f"{tile_path.name}: CRS is {ds.crs}, expected EPSG:4326")
        if ds.count != 1:
            raise ValueError(f"{tile_path.name}: has {ds.count} bands, expected 1")
        transform = [float(v) for v in tuple(ds.transform)[:6]]
        rows, cols = ds.height, ds.width
        west, south, east, north = (float(v) for v in ds.bounds)
        data_type = ds.dtypes[0]

    return {
        "type": "Feature",
        "stac_version": _STAC_VERSION,
        "stac_extensions": list(_ITEM_EXTENSIONS),
        "id": item_id,
        "collection": collection_id,
        "geometry": {"type": "Polygon", "coordinates": [_ring(west, south, east, north)]},
        "bbox": [west, south, east, north],
        "properties": {
            "datetime": DATETIME,
            "platform": _PLATFORM,
            "gsd": _GSD,
            "proj:epsg": 4326,
            "proj:code": "EPSG:4326",
            "proj:shape": [rows, cols],
            "proj:transform": transform,
            # The real items give the centre of the 1-degree cell, not of the pixel extent.
            "proj:centroid": {"lat": lat_sw + 0.5, "lon": lon_sw + 0.5},
            "grid:code": f"CDEM-{ns}{lat}{ew}{lon}",
        },
        "links": [],
        "assets": {
            "data": {
                "href": href,
                "type": ASSET_TYPE,
                "title": "Data",
                "roles": ["data"],
                "raster:bands": [
                    {
                        "sampling": "point",
                        "data_type": data_type,
                        "spatial_resolution": _GSD,
                        "unit": "meter",
                    }
                ],
            }
        },
    }


def collection_dict(
    items: Iterable[dict],
    *,
    collection_id: str = COLLECTION_ID,
    title: str = _TITLE,
) -> dict:
    """STAC Collection whose extent covers ``items`` (the real, global extent if none)."""
    items = list(items)
    if items:
        boxes = [it["bbox"] for it in items]
        bbox = [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
        # Same-format UTC strings ("...Z") sort chronologically.
        times = sorted(it["properties"]["datetime"] for it in items)
        interval = [times[0], times[-1]]
    else:
        bbox = list(_GLOBAL_BBOX)
        interval = [DATETIME, DATETIME]
    return {
        "type": "Collection",
        "stac_version": _STAC_VERSION,
        "stac_extensions": list(_COLLECTION_EXTENSIONS),
        "id": collection_id,
        "title": title,
        "description": (
            "Synthetic stand-in for the Copernicus DEM GLO-30 digital surface model, made "
            "offline by h3pipe.demo.copdem: same tile names, grid, data type and metadata "
            "layout as the real collection, invented elevations."
        ),
        "license": "proprietary",
        "keywords": ["Copernicus", "DEM", "DSM", "Elevation"],
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [interval]}},
        "summaries": {"gsd": [_GSD], "platform": [_PLATFORM]},
        "item_assets": {"data": {"type": ASSET_TYPE, "roles": ["data"]}},
        "links": [],
    }


def write_static_catalog(
    out_dir: Path | str,
    tile_paths: Sequence[Path | str],
    *,
    href_for: Callable[[Path], str] | None = None,
) -> Path:
    """Write ``out_dir/collection.json`` and ``out_dir/items/<id>.json``; return the former.

    All links are relative, so the folder can be moved or served as it is (no ``self`` links,
    as in a self-contained catalog). Asset hrefs are relative to the item file unless
    ``href_for(tile_path)`` gives one, e.g. an ``http://`` URL.
    """
    out_dir = Path(out_dir)
    items_dir = out_dir / "items"
    items_dir.mkdir(parents=True, exist_ok=True)

    items = []
    for tile in (Path(p) for p in tile_paths):
        href = href_for(tile) if href_for is not None else _relative(tile, items_dir)
        items.append(item_dict(tile, href))
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate tiles in tile_paths: {sorted(ids)}")

    collection = collection_dict(items)
    title = collection["title"]
    collection["links"] = [
        {"rel": "root", "href": "./collection.json", "type": _JSON, "title": title},
        *(
            {"rel": "item", "href": f"./items/{item_id}.json", "type": _JSON}
            for item_id in ids
        ),
    ]
    for item in items:
        item["links"] = [
            {"rel": rel, "href": "../collection.json", "type": _JSON, "title": title}
            for rel in ("root", "collection", "parent")
        ]
        _write_json(items_dir / f"{item['id']}.json", item)
    path = out_dir / "collection.json"
    _write_json(path, collection)
    return path


def _ring(west: float, south: float, east: float, north: float) -> list[list[float]]:
    # Counter-clockwise from the south-east corner, as the real items list it.
    return [[east, south], [east, north], [west, north], [west, south], [east, south]]


def _relative(target: Path, start: Path) -> str:
    # POSIX separators: STAC hrefs are URLs, whatever the OS.
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
