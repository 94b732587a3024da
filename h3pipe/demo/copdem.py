"""Deterministic local stand-in for the Copernicus DEM GLO-30 STAC collection (``cop-dem-glo-30``).

The main entry point is :func:`generate_tiles`, which writes one Cloud-Optimized GeoTIFF per
1x1 degree cell touched by a bounding box, named, gridded and encoded like the real tiles so
that code developed against it works unchanged on the real collection:

* ``Copernicus_DSM_COG_10_{N|S}{lat:02d}_00_{E|W}{lon:03d}_00_DEM.tif``, named by the
  south-west corner of the cell;
* float32, one band, EPSG:4326, ``AREA_OR_POINT=Point``; pixel centres sit on integer multiples
  of ``1/size`` degrees, so the first pixel's centre is the cell's north-west corner and the
  last row/column stop one pixel short of the south/east edges (the next tile owns those);
* no nodata value declared; water is NaN (as in the real data) and a few small voids carry
  ``-32767.0``, the nodata value declared by the predecessor catalogue, so consumers must cope
  with both.

Every pixel value is a pure function of the pixel's global grid position, ``size`` and ``seed``,
so tiles are continuous across their edges and identical no matter which bbox produced them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError

__all__ = [
    "LAKE_CENTRE",
    "LAKE_SEMI_AXES",
    "VOID_VALUE",
    "generate_tiles",
    "tile_name",
    "tile_transform",
    "tiles_for_bbox",
]

Bbox = tuple[float, float, float, float]

#: Value written into the small synthetic voids (the predecessor catalogue's nodata value).
VOID_VALUE = -32767.0
#: Centre (lon, lat) and semi-axes (lon, lat) in degrees of the NaN "lake" (a Lake Kivu stand-in).
LAKE_CENTRE = (29.2, -2.0)
LAKE_SEMI_AXES = (0.15, 0.25)

_ELEV_MIN, _ELEV_MAX = 950.0, 4500.0
_NOISE_AMPLITUDE_M = 1.5
_VOIDS_PER_TILE = 3
# The lake's outline wobbles by at most this factor around the ellipse (see _lake_mask).
_LAKE_MAX_RADIUS = 1.0 + 0.08 + 0.05
# Bounds the float64/uint64 temporaries of one strip (~8 MB each) whatever the tile size.
_STRIP_PIXELS = 1_000_000
# Bump when the synthetic terrain changes, so tiles cached by an older version get rewritten.
_GENERATOR_VERSION = "1"
_TAG_VERSION = "H3PIPE_DEMO_VERSION"
_TAG_SEED = "H3PIPE_DEMO_SEED"

_U64 = (1 << 64) - 1
_TWO_PI = 2.0 * math.pi

# East-west profile (amplitude m, centre lon, sigma deg) on top of a plateau rising gently
# west from the Akagera plains: the Congo-Nile ridge and the Mitumba mountains beyond Kivu.
_MAIN_RIDGE = (1100.0, 29.55, 0.22)
_WEST_MOUNTAINS = (500.0, 28.45, 0.30)
# Rolling hills as separable sine products: (amplitude m, lon wavelength, lon phase,
# lat wavelength, lat phase); wavelengths in degrees, from ~45 km down to ~1.3 km.
_HILLS = (
    (150.0, 0.41, 0.3, 0.33, 0.8),
    (80.0, 0.13, 1.7, 0.17, 0.4),
    (35.0, 0.043, 0.7, 0.051, 2.1),
    (12.0, 0.011, 0.0, 0.013, 1.0),
)
# Gaussian bumps (amplitude m, lon, lat, sigma lon, sigma lat): the Virunga volcanoes in the
# north-west (Karisimbi tops out near the real 4507 m) and a basin around the lake so the
# shore sits low, as Lake Kivu's does (~1460 m).
_BUMPS = (
    (1920.0, 29.45, -1.51, 0.045, 0.045),
    (1100.0, 29.49, -1.46, 0.030, 0.030),
    (1200.0, 29.59, -1.39, 0.035, 0.035),
    (600.0, 29.64, -1.38, 0.030, 0.030),
    (1300.0, 29.68, -1.37, 0.040, 0.040),
    (-350.0, 29.20, -2.00, 0.16, 0.26),
)
# Beyond this many sigmas a Gaussian contributes < 1e-3 m, so those rows/columns are skipped.
_GAUSS_CUTOFF_SIGMAS = 8.0


def tile_name(lon_sw: int, lat_sw: int) -> str:
    """File name of the real cop-dem-glo-30 tile whose south-west corner is (lon_sw, lat_sw)."""
    _check_cell(lon_sw, lat_sw)
    ns = "N" if lat_sw >= 0 else "S"
    ew = "E" if lon_sw >= 0 else "W"
    return f"Copernicus_DSM_COG_10_{ns}{abs(lat_sw):02d}_00_{ew}{abs(lon_sw):03d}_00_DEM.tif"


def tiles_for_bbox(bbox: Sequence[float]) -> list[tuple[int, int]]:
    """South-west corners ``(lon, lat)`` of the 1-degree cells a bbox touches, north to south,
    then west to east.

    A bbox edge lying exactly on a whole degree does not pull in the neighbouring cell, and a
    degenerate (zero-width or zero-height) bbox selects the cell containing it. Raises
    ``ValueError`` for a malformed bbox; bboxes crossing the antimeridian are not supported.
    """
    minx, miny, maxx, maxy = _check_bbox(bbox)
    lon0 = min(math.floor(minx), 179)
    lon1 = max(lon0, min(math.ceil(maxx) - 1, 179))
    lat0 = min(math.floor(miny), 89)
    lat1 = max(lat0, min(math.ceil(maxy) - 1, 89))
    return [(lon, lat) for lat in range(lat1, lat0 - 1, -1) for lon in range(lon0, lon1 + 1)]


def tile_transform(lon_sw: int, lat_sw: int, size: int) -> Affine:
    """Corner-based geotransform of a point-registered tile, as GDAL/rasterio report it.

    Pixel centres lie on multiples of ``1/size``, so the outer corner is half a pixel
    north-west of the cell corner.
    """
    _check_cell(lon_sw, lat_sw)
    res = 1.0 / size
    return Affine(res, 0.0, lon_sw - 0.5 / size, 0.0, -res, lat_sw + 1 + 0.5 / size)


def generate_tiles(
    out_dir: Path,
    bbox: tuple[float, float, float, float],
    *,
    size: int = 3600,
    seed: int = 0,
    overwrite: bool = False,
    on_tile: Callable[[Path, bool], None] | None = None,
) -> list[Path]:
    """Write the synthetic DEM tiles covering ``bbox`` into ``out_dir``; return their paths.

    Paths come back in :func:`tiles_for_bbox` order, whether written now or already present.
    Unless ``overwrite`` is set, a tile that already exists with the expected size (and was made
    by this generator with the same seed) is left alone. ``on_tile(path, written)`` is called
    after each tile so callers can report progress.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    cells = tiles_for_bbox(bbox)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    paths: list[Path] = []
    for lon_sw, lat_sw in cells:
        path = out_dir / tile_name(lon_sw, lat_sw)
        written = overwrite or not _is_complete(path, size, seed)
        if written:
            _write_tile(path, lon_sw, lat_sw, size, seed)
        paths.append(path)
        if on_tile is not None:
            on_tile(path, written)
    return paths


# --- validation ----------------------------------------------------------------------------


def _check_cell(lon_sw: int, lat_sw: int) -> None:
    for name, value, lo, hi in (("lon_sw", lon_sw, -180, 179), ("lat_sw", lat_sw, -90, 89)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be within [{lo}, {hi}], got {value}")


def _check_bbox(bbox: Sequence[float]) -> Bbox:
    try:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(
            f"bbox must be four numbers (minx, miny, maxx, maxy), got {bbox!r}"
        ) from None
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise ValueError(f"bbox values must be finite, got {bbox!r}")
    if not (-180.0 <= minx <= 180.0 and -180.0 <= maxx <= 180.0):
        raise ValueError(f"bbox longitudes must be within [-180, 180], got {bbox!r}")
    if not (-90.0 <= miny <= 90.0 and -90.0 <= maxy <= 90.0):
        raise ValueError(f"bbox latitudes must be within [-90, 90], got {bbox!r}")
    if minx > maxx or miny > maxy:
        raise ValueError(
            f"bbox must be (minx, miny, maxx, maxy) with min <= max, got {bbox!r} "
            "(bboxes crossing the antimeridian are not supported)"
        )
    return minx, miny, maxx, maxy


# --- writing -------------------------------------------------------------------------------


def _is_complete(path: Path, size: int, seed: int) -> bool:
    """True if ``path`` is a readable tile this generator made with the same parameters."""
    if not path.is_file():
        return False
    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
            return (
                ds.width == size
                and ds.height == size
                and ds.count == 1
                and ds.dtypes[0] == "float32"
                and tags.get(_TAG_VERSION) == _GENERATOR_VERSION
                and tags.get(_TAG_SEED) == str(seed)
            )
    except RasterioError:
        # A corrupt or foreign file is simply regenerated.
        return False


def _write_tile(path: Path, lon_sw: int, lat_sw: int, size: int, seed: int) -> None:
    transform = tile_transform(lon_sw, lat_sw, size)
    # Same folder so os.replace() is an atomic rename; the pid keeps concurrent runs apart.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    profile = {
        "driver": "COG",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:4326",
        "transform": transform,
        # The real tiles declare no nodata (water is NaN); setting one would hide the
        # -32767 voids that consumers have to learn to handle.
        "nodata": None,
        "compress": "DEFLATE",
        # The bundled GDAL's COG driver accepts the floating-point predictor (read back as
        # PREDICTOR=3); it shrinks smooth float rasters noticeably.
        "predictor": 3,
        "blocksize": 512,
        # Nearest keeps overview values honest: averaging or cubic would smear -32767 voids
        # and NaN into plausible-looking elevations.
        "overview_resampling": "NEAREST",
        "num_threads": "ALL_CPUS",
        "bigtiff": "IF_SAFER",
    }
    strip_rows = max(1, min(size, _STRIP_PIXELS // size))
    try:
        with rasterio.open(tmp, "w", **profile) as ds:
            # Marking the raster as point-registered makes GDAL store the tiepoint at the first
            # pixel's centre (lon_sw, lat_sw + 1), exactly as the real tiles do.
            ds.update_tags(
                AREA_OR_POINT="Point", **{_TAG_VERSION: _GENERATOR_VERSION, _TAG_SEED: str(seed)}
            )
            for r0 in range(0, size, strip_rows):
                r1 = min(size, r0 + strip_rows)
                strip = _render_rows(lon_sw, lat_sw, size, seed, r0, r1)
                ds.write(strip, 1, window=((r0, r1), (0, size)))
        _verify(tmp, transform, size)
        os.replace(tmp, path)
    finally:
        # Only still present if something failed before the rename.
        tmp.unlink(missing_ok=True)


def _verify(path: Path, transform: Affine, size: int) -> None:
    """Fail loudly if GDAL's PixelIsPoint handling moved the grid.

    Finding (GDAL 3.10.3 bundled with rasterio 1.4.4, GTiff and COG drivers): with
    AREA_OR_POINT=Point, GDAL writes the tiepoint at the first pixel's centre (corner + half a
    pixel) and, on reading, subtracts the half pixel again, so rasterio reports the same
    corner-based transform we wrote, bit for bit (checked for every whole-degree origin at sizes
    120 and 3600). Only with GTIFF_POINT_GEO_IGNORE=TRUE does GDAL report the raw, centre-based
    tiepoint instead, i.e. a grid shifted half a pixel south-east.
    """
    with rasterio.open(path) as ds:
        problems = []
        if tuple(ds.transform)[:6] != tuple(transform)[:6]:
            problems.append(f"transform read back as {tuple(ds.transform)[:6]}")
        if ds.tags().get("AREA_OR_POINT") != "Point":
            problems.append(f"AREA_OR_POINT is {ds.tags().get('AREA_OR_POINT')!r}")
        if (ds.width, ds.height, ds.count, ds.dtypes[0]) != (size, size, 1, "float32"):
            problems.append(f"shape/dtype {ds.width}x{ds.height}x{ds.count} {ds.dtypes[0]}")
        if ds.nodata is not None:
            problems.append(f"nodata declared as {ds.nodata}")
    if problems:
        raise RuntimeError(
            f"{path.name}: written tile does not match the intended grid "
            f"{tuple(transform)[:6]}: " + "; ".join(problems)
        )


# --- synthetic terrain ---------------------------------------------------------------------


def _render_rows(lon_sw: int, lat_sw: int, size: int, seed: int, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of a tile as float32 metres, with voids and lake applied."""
    # Global pixel indices: a pixel centre is at (col_g / size, row_g / size) degrees, so every
    # tile samples the same functions on one shared grid and seams are continuous.
    col_g = lon_sw * size + np.arange(size, dtype=np.int64)
    row_g = (lat_sw + 1) * size - np.arange(r0, r1, dtype=np.int64)
    lon = col_g / size
    lat = row_g / size

    z = _smooth_elevation(lon, lat)
    z += _noise(row_g, col_g, seed)
    np.clip(z, _ELEV_MIN, _ELEV_MAX, out=z)
    out = z.astype(np.float32)

    for vr0, vc0, side in _void_squares(lon_sw, lat_sw, size, seed):
        lo, hi = max(vr0, r0), min(vr0 + side, r1)
        if lo < hi:
            out[lo - r0 : hi - r0, vc0 : vc0 + side] = VOID_VALUE

    # Only evaluate the lake outline inside its bounding box; it is tiny next to a tile.
    (clon, clat), (alon, alat) = LAKE_CENTRE, LAKE_SEMI_AXES
    cols = np.flatnonzero(np.abs(lon - clon) <= alon * _LAKE_MAX_RADIUS)
    rows = np.flatnonzero(np.abs(lat - clat) <= alat * _LAKE_MAX_RADIUS)
    if cols.size and rows.size:
        c0, c1, q0, q1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
        sub = out[q0:q1, c0:c1]
        sub[_lake_mask(lon[c0:c1], lat[q0:q1])] = np.nan
    return out


def _smooth_elevation(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Terrain in metres on the grid ``lat x lon`` (1-D inputs, 2-D float64 result).

    Every term is a product of a function of lon and a function of lat, so the expensive
    transcendental work is 1-D and the 2-D work is a handful of outer products.
    """
    amp, centre, sigma = _WEST_MOUNTAINS
    profile = 1250.0 + 140.0 * (30.9 - lon) + amp * _gauss(lon, centre, sigma)
    z = np.empty((lat.size, lon.size), dtype=np.float64)
    z[:] = profile
    # The main ridge swells and dips along its length rather than being a uniform wall.
    amp, centre, sigma = _MAIN_RIDGE
    along = 1.0 + 0.2 * np.cos(_TWO_PI * (lat + 2.0) / 0.9)
    z += np.multiply.outer(along, amp * _gauss(lon, centre, sigma))
    for amp, wl_lon, ph_lon, wl_lat, ph_lat in _HILLS:
        z += np.multiply.outer(
            np.cos(_TWO_PI * lat / wl_lat + ph_lat), amp * np.sin(_TWO_PI * lon / wl_lon + ph_lon)
        )
    for amp, blon, blat, slon, slat in _BUMPS:
        cols = np.flatnonzero(np.abs(lon - blon) <= _GAUSS_CUTOFF_SIGMAS * slon)
        rows = np.flatnonzero(np.abs(lat - blat) <= _GAUSS_CUTOFF_SIGMAS * slat)
        if cols.size and rows.size:
            cs = slice(cols[0], cols[-1] + 1)
            rs = slice(rows[0], rows[-1] + 1)
            gy, gx = _gauss(lat[rs], blat, slat), _gauss(lon[cs], blon, slon)
            z[rs, cs] += np.multiply.outer(gy, amp * gx)
    return z


def _gauss(x: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def _noise(row_g: np.ndarray, col_g: np.ndarray, seed: int) -> np.ndarray:
    """Uniform noise in +-_NOISE_AMPLITUDE_M, a hash of (global row, global col, seed).

    A hash rather than an RNG stream, so a pixel's noise does not depend on which tile or strip
    it is generated in.
    """
    seed_mix = np.uint64(_splitmix64(seed & _U64))
    # Two's-complement view: negative indices (south/west hemispheres) hash fine as uint64.
    hr = row_g.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    hc = (col_g.view(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)) ^ seed_mix
    x = np.add.outer(hr, hc)
    # splitmix64 finaliser; uint64 array arithmetic wraps modulo 2**64 without warnings.
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    unit = (x >> np.uint64(40)).astype(np.float64) * (1.0 / (1 << 24))
    return (unit - 0.5) * (2.0 * _NOISE_AMPLITUDE_M)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return x ^ (x >> 31)


def _void_squares(lon_sw: int, lat_sw: int, size: int, seed: int) -> list[tuple[int, int, int]]:
    """(row, col, side) of the tile's void squares, a pure function of tile, size and seed.

    Positions are per tile rather than per bbox so a cached tile never depends on the bbox that
    happened to create it. Squares landing on the lake are re-drawn, otherwise the NaN would
    hide them.
    """
    side = max(2, round(size * 0.0045))  # 16 px = 256 pixels at the real 3600
    margin = size // 20
    span = size - 2 * margin - side
    if span <= 0:
        return []
    voids = []
    for i in range(_VOIDS_PER_TILE):
        for attempt in range(16):
            h = _splitmix64(
                _splitmix64(_splitmix64(seed & _U64) ^ ((lon_sw + 360) << 20) ^ (lat_sw + 180))
                ^ (i << 8)
                ^ attempt
            )
            row = margin + (h & 0xFFFFFFFF) % span
            col = margin + (h >> 32) % span
            void_lon = (lon_sw * size + col + np.arange(side)) / size
            void_lat = ((lat_sw + 1) * size - row - np.arange(side)) / size
            if not _lake_mask(void_lon, void_lat).any():
                voids.append((row, col, side))
                break
    return voids


def _lake_mask(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Boolean grid ``lat x lon``: inside the lake, an ellipse with a wavy shore."""
    (clon, clat), (alon, alat) = LAKE_CENTRE, LAKE_SEMI_AXES
    u = ((lon - clon) / alon)[np.newaxis, :]
    v = ((lat - clat) / alat)[:, np.newaxis]
    theta = np.arctan2(v, u)
    shore = 1.0 + 0.08 * np.sin(3.0 * theta + 0.4) + 0.05 * np.cos(5.0 * theta + 1.3)
    return np.hypot(u, v) < shore
