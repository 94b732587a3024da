"""Raster access for operations: :class:`RasterInfo` describes a source's tiles on one pixel
grid, and :func:`read_mosaic` reads any window of that grid across every tile it touches.

Reading through a mosaic is what lets a cell that straddles two tiles see both: the
predecessor computed each tile separately and kept whichever answer came first.
"""

from __future__ import annotations

import functools
import glob
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe import extras, grid
from h3pipe.errors import RemoteReadError, SourceError
from h3pipe.grid import CellBlock
from h3pipe.sources import remote
from h3pipe.sources.fetch import FetchAhead, Header, Headers, wait

# GDAL would otherwise list remote "folders" looking for sidecar files on every open.
os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
# Decoded blocks kept per process (MB): enough for the blocks neighbouring batches share
# (eight 1024 x 1024 float32 blocks), small enough that the run's processes stay under a
# gigabyte together. 32 instead of 64 took 50-65 MB off Rwanda at res 9 (RSS summed over
# the processes 950-968 -> 898-902 MB) at the same speed (9.8 -> 9.2-9.5 s).
os.environ.setdefault("GDAL_CACHEMAX", "32")

_REMOTE_PREFIXES = {
    "http://": "/vsicurl/",
    "https://": "/vsicurl/",
    "s3://": "/vsis3/",
    "gs://": "/vsigs/",
    "az://": "/vsiaz/",
}
# float32 holds every integer of these types exactly; wider types need float64.
_FLOAT32_SAFE = {"float32", "uint8", "int8", "uint16", "int16"}


@dataclass(frozen=True)
class TileInfo:
    """One file of a source, placed on the source's common pixel grid."""

    path: str
    col_off: int
    row_off: int
    width: int
    height: int
    nodata: float | None


@dataclass(frozen=True)
class RasterInfo:
    """A raster source as one virtual grid made of ``tiles``. Pickles to workers."""

    source_id: str
    crs_wkt: str
    crs_is_wgs84: bool
    x0: float
    y0: float
    xres: float
    yres: float
    band: int
    dtype: str
    nodata: float | None
    nodata_override: bool
    tiles: tuple[TileInfo, ...]
    signer: str = "none"  # how tile hrefs are signed before opening (STAC sources)
    # Several bands read together (a source's ``bands:``), and their names; () for one.
    bands: tuple[int, ...] = ()
    band_names: tuple[str, ...] = ()

    @property
    def indexes(self) -> tuple[int, ...]:
        """The bands every read returns, in order."""
        return self.bands or (self.band,)

    def column(self, k: int, name: str) -> str:
        """The column of output ``name`` for the ``k``-th band read (``rp100_mean``); with
        one band, ``name`` itself."""
        return band_column(self.band_names[k], name) if self.band_names else name

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        c0 = min(t.col_off for t in self.tiles)
        c1 = max(t.col_off + t.width for t in self.tiles)
        r0 = min(t.row_off for t in self.tiles)
        r1 = max(t.row_off + t.height for t in self.tiles)
        return (self.x0 + c0 * self.xres, self.y0 - r1 * self.yres,
                self.x0 + c1 * self.xres, self.y0 - r0 * self.yres)

    def pixel_window(self, bounds: tuple[float, float, float, float], pad: int = 1
                     ) -> tuple[int, int, int, int]:
        """Grid (col0, row0, col1, row1) covering ``bounds``, padded by ``pad`` pixels."""
        minx, miny, maxx, maxy = bounds
        c0 = math.floor((minx - self.x0) / self.xres) - pad
        c1 = math.ceil((maxx - self.x0) / self.xres) + pad
        r0 = math.floor((self.y0 - maxy) / self.yres) - pad
        r1 = math.ceil((self.y0 - miny) / self.yres) + pad
        return c0, r0, c1, r1

    def subset(self, bounds: tuple[float, float, float, float]) -> RasterInfo:
        """The same grid with only the tiles that ``bounds`` touches (what a batch ships)."""
        keep = {t: None for t, _ in self.placed(*self.pixel_window(bounds))}
        return replace(self, tiles=tuple(keep))

    @property
    def period(self) -> int | None:
        """Columns in 360 degrees, for a lon/lat grid with a whole number of them: such a
        grid wraps at the antimeridian (column ``c + period`` is column ``c``), so a window
        reaching past ±180 reads the other side. None for other grids."""
        if not self.crs_is_wgs84:
            return None
        n = 360.0 / self.xres
        return round(n) if abs(n - round(n)) < 1e-3 else None

    def placed(self, c0: int, r0: int, c1: int, r1: int) -> list[tuple[TileInfo, int]]:
        """The tiles a grid window touches, each with the column shift (0, or ± a
        :attr:`period` across the antimeridian) at which it does."""
        shifts = (0,) if self.period is None else (0, -self.period, self.period)
        return [(t, k) for k in shifts for t in self.tiles
                if _overlaps(t, c0 - k, r0, c1 - k, r1)]

    @property
    def value_dtype(self) -> np.dtype[Any]:
        return np.dtype("float32" if self.dtype in _FLOAT32_SAFE else "float64")


def band_column(band_name: str, name: str) -> str:
    """How a multi-band source names an output per band: ``<band>_<name>``."""
    return f"{band_name}_{name}"


def _in_tile(t: TileInfo, c0: int, r0: int, c1: int, r1: int) -> tuple[int, int, int, int]:
    """The part of a grid window inside tile ``t``, in the tile's own pixels."""
    return (max(c0, t.col_off) - t.col_off, max(r0, t.row_off) - t.row_off,
            min(c1, t.col_off + t.width) - t.col_off, min(r1, t.row_off + t.height) - t.row_off)


def _overlaps(t: TileInfo, c0: int, r0: int, c1: int, r1: int) -> bool:
    return (t.col_off < c1 and t.col_off + t.width > c0
            and t.row_off < r1 and t.row_off + t.height > r0)


def gdal_reason(exc: BaseException) -> str:
    """GDAL's own words: rasterio often says only 'See previous exception for details'."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return " ".join(str(exc).split())


def gdal_path(location: str) -> str:
    for prefix, vsi in _REMOTE_PREFIXES.items():
        if location.startswith(prefix):
            return vsi + (location if vsi == "/vsicurl/" else location[len(prefix):])
    return location


def expand_location(location: str, base_dir: Path, source_id: str | None = None, *,
                    who: str | None = None) -> list[str]:
    """Turn a ``path`` into GDAL paths: one file, a VRT, a glob of tiles, or a URL.
    Errors start with ``who`` (default: the source's id)."""
    who = who or f"source '{source_id}'"
    if "://" in location or location.startswith("/vsi"):
        if any(ch in location for ch in "*?["):
            raise SourceError(f"{who}: globs work on local folders only, not '{location}'",
                              hint="list the tiles in a VRT, or use a STAC source")
        return [gdal_path(location)]
    path = Path(location).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if any(ch in location for ch in "*?["):
        matches = sorted(p for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
        if not matches:
            raise SourceError(f"{who}: no file matches '{location}' ({path})",
                              hint="check the pattern and the folder it is relative to (the "
                              "project), or run 'make demo' to generate the demo tiles")
        return matches
    if not path.exists():
        raise SourceError(f"{who}: file not found: {path}",
                          hint="check the path; relative paths start at the project folder")
    if path.is_dir():
        raise SourceError(f"{who}: {path} is a folder",
                          hint=f"give a file or a glob such as '{location.rstrip('/')}/*.tif'")
    return [str(path)]


def describe_raster(source_id: str, location: str, base_dir: Path, *, band: int = 1,
                    nodata: float | None = None, nodata_override: bool = False,
                    bands: tuple[int, ...] = (), band_names: tuple[str, ...] = ()
                    ) -> RasterInfo:
    """Open every file of a source once, check they share one grid (and hold every band
    asked for), and describe it."""
    from rasterio.errors import RasterioError

    paths = expand_location(location, base_dir, source_id)
    top = max(bands or (band,))
    first: dict[str, Any] | None = None
    tiles: list[TileInfo] = []
    for p in paths:
        try:
            meta = remote.retrying(
                functools.partial(_header, p, top), href=p, who=f"source '{source_id}'",
                action="open", errors=(RasterioError,), reason=gdal_reason)
        except RasterioError as exc:
            raise SourceError(f"source '{source_id}': cannot open raster '{p}': "
                              f"{gdal_reason(exc)}",
                              hint="check the file is a readable GeoTIFF/VRT") from exc
        t = meta["transform"]
        if meta["count"] < top:
            raise SourceError(f"source '{source_id}': '{p}' has {meta['count']} band(s), "
                              f"the source asks for band {top}",
                              hint="check the source's band or bands")
        if meta["crs"] is None:
            raise SourceError(f"source '{source_id}': '{p}' has no coordinate reference system",
                              hint="assign one with 'gdal_edit.py -a_srs EPSG:4326'")
        if t.b != 0 or t.d != 0 or t.e >= 0:
            raise SourceError(f"source '{source_id}': '{p}' is rotated or not north-up",
                              hint="warp it to a north-up grid with gdalwarp")
        if first is None:
            first = meta
        else:
            _check_same_grid(source_id, paths[0], first, p, meta)
        col = (t.c - first["transform"].c) / first["transform"].a
        row = (first["transform"].f - t.f) / -first["transform"].e
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise SourceError(f"source '{source_id}': '{p}' is not aligned to the pixel grid of "
                              f"'{paths[0]}' (offset {col:.4f}, {row:.4f} pixels)",
                              hint="resample the tiles onto one grid")
        tiles.append(TileInfo(p, round(col), round(row), meta["width"], meta["height"],
                              meta["nodata"]))
    assert first is not None
    ft = first["transform"]
    crs = first["crs"]
    return RasterInfo(
        source_id=source_id, crs_wkt=crs.to_wkt(), crs_is_wgs84=crs.to_epsg() == 4326,
        x0=ft.c, y0=ft.f, xres=ft.a, yres=-ft.e, band=band, dtype=str(first["dtype"]),
        nodata=nodata if nodata_override else first["nodata"],
        nodata_override=nodata_override, tiles=tuple(tiles), bands=bands,
        band_names=band_names,
    )


def _header(path: str, band: int) -> dict[str, Any]:
    import rasterio

    with rasterio.open(path) as ds:
        return {
            "crs": ds.crs, "transform": ds.transform, "count": ds.count,
            "dtype": ds.dtypes[min(band, ds.count) - 1], "width": ds.width,
            "height": ds.height,
            # Each band of a VRT may declare its own nodata value.
            "nodata": ds.nodatavals[band - 1] if band <= ds.count else None,
        }


def _check_same_grid(source_id: str, p0: str, m0: dict[str, Any], p: str,
                     m: dict[str, Any]) -> None:
    if m["crs"] != m0["crs"]:
        raise SourceError(f"source '{source_id}': '{p}' has CRS {m['crs']} but '{p0}' has "
                          f"{m0['crs']}", hint="split them into separate sources")
    t0, t = m0["transform"], m["transform"]
    if not (math.isclose(t.a, t0.a, rel_tol=1e-9) and math.isclose(t.e, t0.e, rel_tol=1e-9)):
        raise SourceError(f"source '{source_id}': '{p}' has pixel size {t.a:g} x {-t.e:g} but "
                          f"'{p0}' has {t0.a:g} x {-t0.e:g}",
                          hint="tiles of one source must share a pixel size")
    if m["dtype"] != m0["dtype"]:
        raise SourceError(f"source '{source_id}': '{p}' is {m['dtype']} but '{p0}' is "
                          f"{m0['dtype']}", hint="tiles of one source must share a data type")


class _OpenTiles:
    """Tiles kept open across batches of one process, least recently used closed first.

    Keeping a tile open keeps GDAL's cache of its decoded blocks, so neighbouring batches
    handled by the same worker do not decompress the same blocks again. A local file that
    changed since it was opened (inode, size or modification time) is opened anew, so a
    long-lived process never reads stale pixels.
    """

    # 8, not 16: a worker's batches are spatially ordered and touch a few tiles at a time;
    # DR Congo at res 9 peaked at 1,005 MiB summed RSS instead of 1,059 (and ran in 117 s
    # instead of 132).
    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._open: OrderedDict[str, tuple[Any, Any]] = OrderedDict()

    @staticmethod
    def _identity(path: str) -> Any:
        if path.startswith("/vsi"):
            return None
        st = os.stat(path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, path: str, signer: str = "none") -> Any:
        import rasterio

        try:
            identity = self._identity(path)
        except OSError:
            identity = "missing"  # let rasterio raise its own error below
        entry = self._open.pop(path, None)
        if entry is not None and entry[0] != identity:
            entry[1].close()
            entry = None
        if entry is None:
            entry = (identity, rasterio.open(gdal_path(sign(path, signer))))
        self._open[path] = entry
        while len(self._open) > self.capacity:
            self._open.popitem(last=False)[1][1].close()
        return entry[1]

    def forget(self, path: str) -> None:
        entry = self._open.pop(path, None)
        if entry is not None:
            entry[1].close()

    def close_all(self) -> None:
        while self._open:
            self._open.popitem()[1][1].close()


class _ThreadTiles(threading.local):
    """Each thread's own open tiles: a GDAL dataset is used by one thread at a time, and
    worker threads (a thread executor) each read their own batches."""

    def __init__(self) -> None:
        self.tiles = _OpenTiles()
        with _EVERY_LOCK:
            _EVERY.add(self.tiles)


# Weakly: a thread's tiles are closed when it ends (their datasets with them), not kept
# open by a long-lived process that ran many thread pools.
_EVERY: weakref.WeakSet[_OpenTiles] = weakref.WeakSet()
_EVERY_LOCK = threading.Lock()
_PER_THREAD = _ThreadTiles()


def _tiles() -> _OpenTiles:
    return _PER_THREAD.tiles


class _Seconds(threading.local):
    def __init__(self) -> None:
        self.by_tile: dict[str, float] = {}


_SECONDS = _Seconds()


def tile_seconds() -> dict[str, float]:
    """Seconds this thread spent opening, reading and decoding each tile since the last
    reset: what 'runs show' ranks the slowest tiles by (see operations.run_batch). Per
    thread, as worker threads compute batches side by side."""
    return _SECONDS.by_tile


_FETCH = FetchAhead()
_HEADERS = Headers()


def close_tiles() -> None:
    """Close every tile this process keeps open and forget what was fetched ahead and
    which headers are known (a test that wants the next read to go to the server
    again)."""
    with _EVERY_LOCK:
        every = list(_EVERY)
    for tiles in every:
        tiles.close_all()
    _FETCH.forget()
    _HEADERS.forget()


def _opened(name: str) -> Any:
    import rasterio

    return rasterio.open(name)


def _remote_header(info: RasterInfo, t: TileInfo) -> Header:
    """The tile's header, opened once for the process (whatever thread asks first)."""
    return _HEADERS.get(gdal_path(sign(t.path, info.signer)), _opened)


def _remote_parts(info: RasterInfo, windows: list[tuple[float, float, float, float]]
                  ) -> dict[TileInfo, list[tuple[int, int, int, int]]]:
    """The remote tiles that reads of ``windows`` touch, each with those windows in its own
    pixels."""
    wanted: dict[TileInfo, list[tuple[int, int, int, int]]] = {}
    for bounds in windows:
        c0, r0, c1, r1 = info.pixel_window(bounds)
        check_window(info, c0, r0, c1, r1)
        for t, k in info.placed(c0, r0, c1, r1):
            if remote.is_http(t.path):
                wanted.setdefault(t, []).append(_in_tile(t, c0 - k, r0, c1 - k, r1))
    return wanted


def _fetch_tile(info: RasterInfo, t: TileInfo, parts: list[tuple[int, int, int, int]]
                ) -> None:
    """Open the tile's header (if this process has not) and start fetching the blocks of
    ``parts``. Run on the fetch threads: what it raises is dropped, since the read does
    the same again, retries, and says why it fails."""
    header = _remote_header(info, t)
    ranges: list[tuple[int, int]] = []
    for part in parts:
        found = header.block_ranges(info.indexes, *part)
        if found is None:  # not a tiled GeoTIFF (a VRT): GDAL fetches as it reads
            return
        ranges += found
    _FETCH.fetch(header.name, ranges)


def fetch_ahead(info: RasterInfo | None, cells: CellBlock | None) -> None:
    """Start fetching, in the background, the blocks of remote tiles under ``cells`` (a
    batch's, before it starts: the next one of a worker), opening the tiles' headers if
    this process has not; returns at once. The batch's reads then find their blocks
    fetched, or on their way, and each byte is fetched once. A grid other than lon/lat,
    or no remote tile, is left alone."""
    if (info is None or cells is None or not info.crs_is_wgs84
            or not any(remote.is_http(t.path) for t in info.tiles)):
        return
    _FETCH.later(functools.partial(_fetch_cells, info, cells))


def fetch_ahead_of(batches: Any) -> None:
    """A worker's thread: :func:`fetch_ahead` of each ``(raster, cells)`` its queue
    ``batches`` brings (the batches sent to it, as they are sent), until the queue closes."""
    if batches is None:
        return
    while True:
        try:
            info, cells = batches.get()
        except (EOFError, OSError):  # the pool is closing
            return
        fetch_ahead(info, cells)


def _fetch_cells(info: RasterInfo, cells: CellBlock) -> None:
    # Each cell's own box, not the batch's: a batch's cells may leave blocks of their box
    # untouched, and those another worker would fetch too. In array operations: this runs
    # beside the worker threads, and a batch has hundreds of cells.
    xy, starts = grid.plane_rings(cells.cells())
    if len(starts) < 2:
        return
    lo = np.minimum.reduceat(xy, starts[:-1], axis=0)
    hi = np.maximum.reduceat(xy, starts[:-1], axis=0)
    # Padded by a pixel, as RasterInfo.pixel_window pads the windows read.
    c0 = np.floor((lo[:, 0] - info.x0) / info.xres).astype(np.int64) - 1
    c1 = np.ceil((hi[:, 0] - info.x0) / info.xres).astype(np.int64) + 1
    r0 = np.floor((info.y0 - hi[:, 1]) / info.yres).astype(np.int64) - 1
    r1 = np.ceil((info.y0 - lo[:, 1]) / info.yres).astype(np.int64) + 1
    shifts = (0,) if info.period is None else (0, -info.period, info.period)
    for t in info.tiles:
        if not remote.is_http(t.path):
            continue
        parts = []
        for k in shifts:  # as RasterInfo.placed: across the antimeridian
            a0 = np.maximum(c0 - k, t.col_off) - t.col_off
            a1 = np.minimum(c1 - k, t.col_off + t.width) - t.col_off
            b0 = np.maximum(r0, t.row_off) - t.row_off
            b1 = np.minimum(r1, t.row_off + t.height) - t.row_off
            inside = (a0 < a1) & (b0 < b1)
            parts.append(np.column_stack([a0, b0, a1, b1])[inside])
        windows = np.vstack(parts)
        if len(windows):
            _FETCH.later(functools.partial(_fetch_windows, info, t, windows))


def _fetch_windows(info: RasterInfo, t: TileInfo, windows: np.ndarray) -> None:
    """:func:`_fetch_tile` for many windows (an array of col0, row0, col1, row1)."""
    header = _remote_header(info, t)
    ranges = header.ranges_under(info.indexes, windows)
    if ranges:
        _FETCH.fetch(header.name, ranges)


def _check_placement(info: RasterInfo, t: TileInfo, ds: Any) -> None:
    """A tile placed from metadata (a STAC item's proj:transform) must really lie there, and
    hold the bands asked for."""
    tr = ds.transform
    x = info.x0 + t.col_off * info.xres
    y = info.y0 - t.row_off * info.yres
    tol = 1e-3
    if (abs(tr.c - x) > tol * info.xres or abs(tr.f - y) > tol * info.yres
            or abs(tr.a - info.xres) > 1e-9 * info.xres or ds.width != t.width
            or ds.height != t.height):
        raise SourceError(f"source '{info.source_id}': '{t.path}' is not where its metadata "
                          f"puts it (file origin {tr.c:.6f}, {tr.f:.6f}, {ds.width} x "
                          f"{ds.height}; expected {x:.6f}, {y:.6f}, {t.width} x {t.height})",
                          hint="fix the item's proj:transform/proj:shape")
    if max(info.indexes) > ds.count:  # a STAC item's file is only known once opened
        raise SourceError(f"source '{info.source_id}': '{t.path}' has {ds.count} band(s), the "
                          f"source asks for band {max(info.indexes)}",
                          hint="check the source's band or bands")


# The most pixels (times bands) one window read may hold: 256 M float32 values are 1 GB in
# memory; a source declaring more (a VRT of 1e8 x 5e7 pixels) is refused, not allocated.
MAX_WINDOW_PIXELS = 256_000_000


def window_budget() -> int:
    """The pixel budget of one window read: ``$H3PIPE_MAX_WINDOW_PIXELS``, else
    :data:`MAX_WINDOW_PIXELS`."""
    text = os.environ.get("H3PIPE_MAX_WINDOW_PIXELS", "").replace("_", "")
    try:
        return int(float(text)) if text else MAX_WINDOW_PIXELS
    except ValueError:
        raise SourceError(f"H3PIPE_MAX_WINDOW_PIXELS='{text}' is not a number",
                          hint="give a pixel count, e.g. 512000000 or 5e8") from None


def check_window(info: RasterInfo, c0: int, r0: int, c1: int, r1: int) -> None:
    """Refuse a window over the budget before allocating anything for it."""
    pixels = (c1 - c0) * (r1 - r0) * len(info.indexes)
    budget = window_budget()
    if pixels > budget:
        bands = f" x {len(info.indexes)} bands" if len(info.indexes) > 1 else ""
        raise SourceError(f"source '{info.source_id}': a window of {c1 - c0:,} x {r1 - r0:,} "
                          f"pixels{bands} ({pixels / 1e6:,.0f} M) is over the budget of "
                          f"{budget / 1e6:,.0f} M pixels per read",
                          hint="read a coarser version of the source (an overview or a "
                          "resampled copy), use smaller batches (--batch-size) if a batch "
                          "spans more than a quarter degree, or raise the budget with "
                          "H3PIPE_MAX_WINDOW_PIXELS if the memory is there")


class MosaicReader:
    """Reads windows of a :class:`RasterInfo` grid across its tiles, NaN where no data."""

    def __init__(self, info: RasterInfo) -> None:
        self.info = info

    def prefetch(self, windows: list[tuple[float, float, float, float]]) -> None:
        """Start fetching the blocks of remote tiles that reads of ``windows`` (bounds, as
        :meth:`read` takes them) will need, all at once and in the background (tiles'
        headers opened in parallel), so that a batch's reads wait for the network once
        rather than once per window. Local tiles are left alone."""
        for t, parts in _remote_parts(self.info, windows).items():
            _FETCH.later(functools.partial(_fetch_tile, self.info, t, parts))

    def __enter__(self) -> MosaicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _read(self, t: TileInfo, window: Any) -> tuple[Any, np.ndarray]:
        from rasterio.errors import RasterioError

        info = self.info

        def attempt() -> tuple[Any, np.ndarray]:
            # A remote tile's header first: opened once for the process, perhaps by a fetch
            # thread at this moment; the dataset opened next then asks the server nothing.
            header = _remote_header(info, t) if remote.is_http(t.path) else None
            ds = _tiles().get(t.path, info.signer)
            _check_placement(info, t, ds)
            bands = list(info.indexes)
            if header is None:
                return ds, ds.read(bands, window=window)
            ranges = header.block_ranges(info.indexes, int(window.col_off),
                                         int(window.row_off),
                                         int(window.col_off + window.width),
                                         int(window.row_off + window.height))
            if ranges is None:  # not a tiled GeoTIFF: GDAL fetches as it reads
                return ds, ds.read(bands, window=window)
            # This window's blocks, fetched ahead or now, all ranges at once.
            wait(_FETCH.fetch(ds.name, ranges))
            with _FETCH.from_cache():
                return ds, ds.read(bands, window=window)

        start = time.perf_counter()
        try:
            # A remote tile is opened anew, and so signed anew, on each attempt: a signed
            # URL may have expired while the tile stayed open.
            return remote.retrying(
                attempt, href=t.path, who=f"source '{info.source_id}'", action="read",
                errors=(RasterioError,), reason=gdal_reason,
                url=lambda: gdal_path(sign(t.path, info.signer)),
                forget=lambda: _tiles().forget(t.path))
        except RasterioError as exc:
            _tiles().forget(t.path)
            cls = RemoteReadError if gdal_path(t.path).startswith("/vsi") else SourceError
            raise cls(f"source '{info.source_id}': cannot read '{t.path}': "
                      f"{gdal_reason(exc)}",
                      hint="the file may be corrupt, truncated or unreachable") from exc
        finally:
            seconds = tile_seconds()
            seconds[t.path] = seconds.get(t.path, 0.0) + time.perf_counter() - start

    def read(self, bounds: tuple[float, float, float, float]
             ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """Pixels of the first band covering ``bounds`` (see :meth:`read_bands`)."""
        values, extent = self.read_bands(bounds)
        return values[0], extent

    def read_bands(self, bounds: tuple[float, float, float, float]
                   ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """Pixels covering ``bounds`` from every tile, one plane per band read (every band
        from one read of the window), nodata and gaps as NaN, and their extent."""
        from rasterio.windows import Window

        info = self.info
        c0, r0, c1, r1 = info.pixel_window(bounds)
        check_window(info, c0, r0, c1, r1)
        out = np.full((len(info.indexes), r1 - r0, c1 - c0), np.nan, dtype=info.value_dtype)
        for t, shift in info.placed(c0, r0, c1, r1):
            col_off = t.col_off + shift  # where the tile lies in this window's frame
            a0, a1 = max(c0, col_off), min(c1, col_off + t.width)
            b0, b1 = max(r0, t.row_off), min(r1, t.row_off + t.height)
            window = Window(a0 - col_off, b0 - t.row_off, a1 - a0, b1 - b0)
            ds, data = self._read(t, window)
            for k, band in enumerate(info.indexes):
                values = data[k].astype(out.dtype, copy=False)
                # The file's own nodata, unless the source overrides it (a STAC item may not
                # say what its file declares, so ask the file).
                nodata = info.nodata if info.nodata_override else ds.nodatavals[band - 1]
                if nodata is not None and not math.isnan(nodata):
                    values = np.where(data[k] == nodata, np.nan, values)
                # Where tiles overlap, a tile's nodata never hides another's valid pixel.
                dest = out[k, b0 - r0:b1 - r0, a0 - c0:a1 - c0]
                np.copyto(dest, values, where=~np.isnan(values))
        extent = (info.x0 + c0 * info.xres, info.y0 - r1 * info.yres,
                  info.x0 + c1 * info.xres, info.y0 - r0 * info.yres)
        return out, extent


def sign(href: str, signer: str) -> str:
    """The href to open: signed for Planetary Computer's blob storage, else unchanged."""
    if signer != "planetary_computer" or not href.startswith(("http://", "https://")):
        return href
    extras.require("stac", "signer 'planetary_computer'")
    import planetary_computer

    try:
        return str(planetary_computer.sign(href))
    except Exception as exc:  # the signing service is remote; say so in one line
        raise SourceError(f"cannot sign '{href}' with Planetary Computer: {exc}",
                          hint="check the network, or set the source's signer to none "
                          "for a mirror") from exc


def read_mosaic(info: RasterInfo, bounds: tuple[float, float, float, float]
                ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """One window of ``info`` (see :class:`MosaicReader`), opening and closing its tiles."""
    with MosaicReader(info) as reader:
        return reader.read(bounds)
