"""What a run will read and what it will cost, before it runs: :func:`source_facts` (tiles,
bytes, pixels per cell, with warnings) and :func:`estimate` (wall time and peak memory on
this machine, from what earlier runs in the store measured, or conservative defaults).

Everything here only reads: file sizes, STAC asset sizes, HTTP HEAD for remote tiles.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from h3pipe.errors import H3PipeError
from h3pipe.planning.partitions import Partitions
from h3pipe.planning.prepare import RunPlan, UsedItem
from h3pipe.sources.raster import RasterInfo, TileInfo, sign, window_budget

# Remote tiles whose size is asked with HEAD at most (the rest extrapolated from them).
HEAD_SAMPLE = 16
HEAD_TIMEOUT_S = 5.0
# Cells holding more pixels than this read far more detail than a cell keeps.
MANY_PIXELS = 100_000


@dataclass(frozen=True)
class SourceFacts:
    source_id: str
    kind: str  # raster | stac | vector
    files: int  # tiles or STAC items the scope touches (vector: the file)
    bytes: int | None
    bytes_how: str
    pixels: int | None = None  # pixels inside the scope
    pixels_per_cell: float | None = None
    pixel_m: float | None = None  # about how wide a pixel is, in metres
    features: int | None = None  # vector: features in the scope
    partitions: int | None = None  # vector: the partitions they are read in
    batches: int | None = None  # vector: the batches of a step reading them
    counted: bool = True  # vector: features counted one by one (else estimated)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def source_facts(plan: RunPlan, partitions: dict[str, Partitions]) -> list[SourceFacts]:
    """Facts of every source the run reads; ``partitions``: each vector source's over the
    scope (how many features, in how many partitions and batches)."""
    out = []
    for sid, spec in plan.sources.items():
        if sid in plan.rasters:
            out.append(_raster_facts(plan, plan.rasters[sid], spec.kind))
        else:
            location = plan.vectors[sid].location
            size = _local_size(location)
            out.append(SourceFacts(sid, "vector", 1, size, "file size" if size is not None
                                   else "unknown (a database table)",
                                   **_vector_facts(partitions.get(sid))))
    return out


def _vector_facts(parts: Partitions | None) -> dict[str, Any]:
    if parts is None:
        return {}
    return {"features": parts.features, "partitions": len(parts.cells),
            "batches": len(parts), "counted": parts.counted}


def _raster_facts(plan: RunPlan, info: RasterInfo, kind: str) -> SourceFacts:
    import h3

    touched = tiles_touched(info, plan.scope.geometry)
    size, how = _bytes(touched, [i for i in plan.items if i.source_id == info.source_id],
                       info.signer)
    pixels = pixels_in_scope(info, plan.scope.geometry, touched)
    per_cell = pixels / len(plan.cells) if plan.cells else None
    pixel_m = pixel_metres(info, plan.scope.geometry.centroid.y)
    warnings = []
    if per_cell is not None and per_cell < 1:
        match = matching_resolution(pixel_m)
        warnings.append(
            f"cells (about {h3.average_hexagon_area(plan.resolution, 'm^2'):,.0f} m²) are "
            f"smaller than a pixel (about {pixel_m:,.0f} m wide): the statistics stay exact, "
            f"weighted by coverage, but neighbouring cells share pixels; resolution {match} "
            "matches the data")
    elif per_cell is not None and per_cell > MANY_PIXELS:
        warnings.append(
            f"cells hold about {per_cell:,.0f} pixels each: the run reads far more detail "
            "than a cell keeps; a coarser version of the data (an overview or a "
            f"lower-resolution product) would give nearly the same numbers for less reading, "
            f"or resolution {min(15, plan.resolution + 2)} keeps more of the detail")
    window = largest_window(info, plan, pixel_m)
    if window > window_budget():
        warnings.append(
            f"a batch may read windows of up to about {window / 1e6:,.0f} M pixels, over the "
            f"budget of {window_budget() / 1e6:,.0f} M per read: the run would stop there; "
            "read a coarser version of the data, or raise H3PIPE_MAX_WINDOW_PIXELS")
    return SourceFacts(info.source_id, kind, len(touched), size, how, pixels,
                       per_cell, pixel_m, warnings=tuple(warnings))


def largest_window(info: RasterInfo, plan: RunPlan, pixel_m: float) -> float:
    """About the most pixels (times bands) one window read takes: zonal_stats reads the
    cells of a quarter-degree square together, so a window spans that square (or the
    scope, if smaller) and a cell beyond it."""
    import math

    import h3

    minx, miny, maxx, maxy = plan.scope.geometry.bounds
    lat = (miny + maxy) / 2
    across = 111_320 * max(0.01, math.cos(math.radians(lat)))
    edge = 2 * h3.average_hexagon_edge_length(plan.resolution, "m")
    width = min(0.25, maxx - minx) * across + edge
    height = min(0.25, maxy - miny) * 110_574 + edge
    return width * height / pixel_m ** 2 * len(info.indexes)


def tiles_touched(info: RasterInfo, geometry: Any) -> list[TileInfo]:
    import shapely

    geom = _in_raster_crs(info, geometry)
    shapely.prepare(geom)
    return [t for t in info.tiles if geom.intersects(shapely.box(*_tile_bounds(info, t)))]


def pixels_in_scope(info: RasterInfo, geometry: Any, touched: list[TileInfo]) -> int:
    """Pixels of the tiles that lie inside the scope (by area: their centres, roughly)."""
    import shapely

    if not touched:
        return 0
    cover = shapely.union_all([shapely.box(*_tile_bounds(info, t)) for t in touched])
    inside = shapely.intersection(_in_raster_crs(info, geometry), cover)
    return round(inside.area / abs(info.xres * info.yres))


def pixel_metres(info: RasterInfo, lat: float) -> float:
    import math

    if not info.crs_is_wgs84:
        return abs(info.xres * info.yres) ** 0.5  # a projected grid: assume metres
    width = abs(info.xres) * 111_320 * max(0.01, math.cos(math.radians(lat)))
    return (width * abs(info.yres) * 110_574) ** 0.5


def matching_resolution(pixel_m: float) -> int:
    """The finest H3 resolution whose cells still hold at least one pixel."""
    import h3

    return max([0] + [r for r in range(16) if h3.average_hexagon_area(r, "m^2") >= pixel_m ** 2])


def _tile_bounds(info: RasterInfo, t: TileInfo) -> tuple[float, float, float, float]:
    x0 = info.x0 + t.col_off * info.xres
    y1 = info.y0 - t.row_off * info.yres
    return (x0, y1 - t.height * info.yres, x0 + t.width * info.xres, y1)


def _in_raster_crs(info: RasterInfo, geometry: Any) -> Any:
    if info.crs_is_wgs84:
        return geometry
    import numpy as np
    import shapely
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_wkt(info.crs_wkt), always_xy=True)
    return shapely.transform(geometry, lambda xy: np.column_stack(tr.transform(xy[:, 0],
                                                                               xy[:, 1])))


# -- bytes ----------------------------------------------------------------------------------

def _bytes(tiles: list[TileInfo], items: list[UsedItem], signer: str
           ) -> tuple[int | None, str]:
    """Bytes of ``tiles``: local file sizes, STAC asset sizes, else HTTP HEAD."""
    stated = {i.href: i.size for i in items if i.size is not None}
    if tiles and all(t.path in stated for t in tiles):
        return sum(stated[t.path] or 0 for t in tiles), "STAC asset sizes (file:size)"
    local = [_local_size(t.path) for t in tiles]
    if all(s is not None for s in local):
        return sum(s or 0 for s in local), "file sizes"
    urls = [t.path.removeprefix("/vsicurl/") for t in tiles]
    remote = [u for u in urls if u.startswith(("http://", "https://"))]
    if len(remote) != len(tiles):
        return None, "unknown (not local files, nor http)"
    sample = remote[:: max(1, len(remote) // HEAD_SAMPLE)][:HEAD_SAMPLE]
    with ThreadPoolExecutor(max_workers=8) as pool:
        sizes = [s for s in pool.map(lambda u: _head_size(u, signer), sample)
                 if s is not None]
    if not sizes:
        return None, f"unknown (HTTP HEAD of {len(sample)} tile(s) gave no size)"
    if len(sample) == len(remote) and len(sizes) == len(sample):
        return sum(sizes), "HTTP HEAD"
    return (round(sum(sizes) / len(sizes) * len(remote)),
            f"HTTP HEAD of {len(sizes)} of {len(remote)} tiles, extrapolated")


def _local_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _head_size(url: str, signer: str) -> int | None:
    import urllib.request

    try:
        req = urllib.request.Request(sign(url, signer), method="HEAD")
        with urllib.request.urlopen(req, timeout=HEAD_TIMEOUT_S) as resp:  # noqa: S310
            length = resp.headers.get("Content-Length")
            return int(length) if length else None
    except (OSError, ValueError, H3PipeError):
        return None


__all__ = ["SourceFacts", "matching_resolution", "pixels_in_scope", "source_facts",
           "tiles_touched"]
