"""Fetch-ahead for remote tiles, :class:`FetchAhead`: the compressed bytes of the blocks a
batch will read, fetched by a small thread pool, many ranges in flight, into GDAL's own
cache of downloaded bytes, before and while the batch's windows are decoded.

Over HTTP a window's blocks otherwise come one request after another (GDAL sends the
ranges of one window in parallel, but the windows of a batch one at a time), and GDAL's
parallel multi-range reads bypass its cache of downloaded bytes, so a block two windows
share, or that a later batch needs again, is downloaded again. Here the bytes go through
``VSIFReadL`` (which fills the cache, ``CPL_VSIL_CURL_CACHE_SIZE``, shared by every tile
and batch of the process), and the dataset's own reads are made serial
(``GDAL_HTTP_MULTIRANGE=SERIAL``, for the reading thread only) so that they are served
from it. Nothing is decoded twice; a fetch that fails is left to the read, which retries.

:class:`Headers` opens each remote tile once per process, whichever thread asks first, and
keeps where its blocks are; :meth:`FetchAhead.later` runs such work (opening a tile,
fetching the next batch's blocks) on the same threads, so that no batch waits for a
header or its first window while another computes.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

# Downloaded (compressed) bytes kept per process, shared across batches: about the blocks
# of the scope a worker reads (Copernicus DEM blocks are ~0.5 MB).
CACHE_MB = 96
os.environ.setdefault("CPL_VSIL_CURL_CACHE_SIZE", str(CACHE_MB << 20))
THREADS = 8
# Neighbouring blocks are fetched as one range, up to this many bytes (a COG puts a few
# bytes, size leader and trailer, between consecutive blocks: they share a chunk).
MAX_RANGE = 4 << 20
# GDAL's unit of download and cache for /vsicurl/ (its default, 16 KB).
CHUNK = int(os.environ.get("CPL_VSIL_CURL_CHUNK_SIZE", 16384))


def _libgdal() -> Any:
    import rasterio

    libs = os.path.dirname(rasterio.__file__) + ".libs"
    found = sorted(glob.glob(os.path.join(libs, "libgdal*.so*")))
    lib = ctypes.CDLL(found[0] if found else "libgdal.so")
    lib.VSIFOpenL.restype = ctypes.c_void_p
    lib.VSIFOpenL.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.VSIFSeekL.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
    lib.VSIFReadL.restype = ctypes.c_size_t
    lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                              ctypes.c_void_p]
    lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
    lib.CPLSetThreadLocalConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib


class FetchAhead:
    """Per process: which blocks (dataset name, offset) are fetched or on their way."""

    def __init__(self, threads: int = THREADS, budget: int = CACHE_MB << 20) -> None:
        self.threads = threads
        self.budget = budget
        self._pool: ThreadPoolExecutor | None = None
        self._lib: Any = None
        self._lock = threading.Lock()
        # (name, chunk) -> (size, future), oldest first; bounded by the cache's size, so a
        # chunk counted as fetched is still likely to be in GDAL's cache.
        self._blocks: OrderedDict[tuple[str, int], tuple[int, Future[None]]] = OrderedDict()
        self._bytes = 0

    def _start(self) -> bool:
        if self._pool is not None:
            return True
        with self._lock:  # worker threads may ask first at the same moment: one pool
            if self._lib is None:
                try:
                    self._lib = _libgdal()
                except (OSError, AttributeError):
                    self._lib = False
            if self._lib and self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads,
                                                thread_name_prefix="h3pipe-fetch")
            return bool(self._lib)

    def later(self, job: Callable[[], object]) -> None:
        """Run ``job`` on one of the threads, now or soon; it must not raise (what it was
        for, a read does again and says why it fails)."""
        if self._start():
            assert self._pool is not None
            self._pool.submit(job)

    def fetch(self, name: str, ranges: list[tuple[int, int]]) -> list[Future[None]]:
        """Start fetching the bytes of ``ranges`` not already fetched or on their way; the
        futures of every one of them.

        Counted in GDAL's own units, its chunks (``CPL_VSIL_CURL_CHUNK_SIZE``): GDAL downloads
        and caches whole chunks, so two blocks that share one, fetched at once by two
        threads, would each download it."""
        if not ranges or not self._start():
            return []
        assert self._pool is not None
        chunk = CHUNK
        wanted = sorted({k for off, size in ranges
                         for k in range(off // chunk, (off + size - 1) // chunk + 1)})
        with self._lock:
            runs: list[list[int]] = []
            for k in wanted:
                if (name, k) in self._blocks:
                    continue
                if runs and k == runs[-1][-1] + 1 and (k - runs[-1][0] + 1) * chunk <= MAX_RANGE:
                    runs[-1].append(k)
                else:
                    runs.append([k])
            for run in runs:
                future = self._pool.submit(self._download, name, run[0] * chunk,
                                           len(run) * chunk)
                for k in run:
                    self._blocks[(name, k)] = (chunk, future)
                    self._bytes += chunk
            while self._bytes > self.budget and len(self._blocks) > 1:
                size, _ = self._blocks.popitem(last=False)[1]
                self._bytes -= size
            return list({id(f): f for f in (self._blocks[(name, k)][1] for k in wanted
                                             if (name, k) in self._blocks)}.values())

    def _download(self, name: str, offset: int, size: int) -> None:
        lib = self._lib
        fp = lib.VSIFOpenL(name.encode(), b"rb")
        if not fp:
            return
        try:
            buffer = ctypes.create_string_buffer(size)
            lib.VSIFSeekL(fp, offset, 0)
            lib.VSIFReadL(buffer, 1, size, fp)  # fewer bytes on failure: the read retries
        finally:
            lib.VSIFCloseL(fp)

    @contextmanager
    def from_cache(self) -> Iterator[None]:
        """GDAL's reads in this thread take the blocks from its cache of downloaded bytes
        (its parallel multi-range reads would download them again)."""
        if not self._start():
            yield
            return
        self._lib.CPLSetThreadLocalConfigOption(b"GDAL_HTTP_MULTIRANGE", b"SERIAL")
        try:
            yield
        finally:
            self._lib.CPLSetThreadLocalConfigOption(b"GDAL_HTTP_MULTIRANGE", None)

    def forget(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._bytes = 0


class Header:
    """A remote tile opened once for the process: its name for GDAL (what the blocks are
    cached under), bands, block shape, and the byte ranges of its blocks, read from the
    TIFF tags as they are asked for. Any thread may ask; one at a time."""

    def __init__(self, ds: Any) -> None:
        self._ds = ds
        self._lock = threading.Lock()
        self.name: str = ds.name
        self.count: int = ds.count
        self._shapes = ds.block_shapes
        self._offsets: dict[tuple[int, int, int], tuple[int, int] | None] = {}

    def block_ranges(self, bands: tuple[int, ...], col0: int, row0: int, col1: int,
                     row1: int) -> list[tuple[int, int]] | None:
        """(offset, size) of every band's blocks a tile window touches; None when the file
        does not say (not a tiled GeoTIFF) or lacks a band (the read says why)."""
        return self.ranges_under(bands, np.array([[col0, row0, col1, row1]]))

    def ranges_under(self, bands: tuple[int, ...], windows: np.ndarray
                     ) -> list[tuple[int, int]] | None:
        """:meth:`block_ranges` of many tile windows at once (rows of col0, row0, col1,
        row1), each block once: the blocks under a batch's cells, in array operations."""
        if max(bands) > self.count or not len(windows):
            return None if len(windows) else []
        out = []
        for band in bands:
            bh, bw = self._shapes[band - 1]
            i0, i1 = windows[:, 1] // bh, (windows[:, 3] - 1) // bh
            j0, j1 = windows[:, 0] // bw, (windows[:, 2] - 1) // bw
            keys: set[tuple[int, int]] = set()
            for di in range(int((i1 - i0).max()) + 1):
                for dj in range(int((j1 - j0).max()) + 1):
                    ok = (i0 + di <= i1) & (j0 + dj <= j1)
                    keys.update(zip((i0 + di)[ok].tolist(), (j0 + dj)[ok].tolist(),
                                    strict=True))
            with self._lock:
                for i, j in sorted(keys):
                    found = self._block(band, i, j)
                    if found is None:
                        return None
                    if found[1] > 0:
                        out.append(found)
        return out

    def _block(self, band: int, i: int, j: int) -> tuple[int, int] | None:
        key = (band, i, j)
        if key not in self._offsets:
            off = self._ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=band)
            size = self._ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=band)
            self._offsets[key] = (int(off), int(size)) if off and size else None
        return self._offsets[key]

    def close(self) -> None:
        with self._lock:
            self._ds.close()


class Headers:
    """Remote tiles' headers, each opened once per process (HEAD and one GET; GDAL keeps the
    bytes, so the dataset a read opens later asks nothing), the least recently used closed
    past ``capacity``. Two threads asking for one tile wait for one open."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._open: OrderedDict[str, Header] = OrderedDict()
        self._opening: dict[str, threading.Lock] = {}

    def get(self, name: str, opener: Callable[[str], Any]) -> Header:
        """The header of GDAL path ``name``, opened by ``opener(name)`` if not yet; its
        errors (GDAL's) are raised, and nothing of a failed open is kept."""
        with self._lock:
            if name in self._open:
                self._open.move_to_end(name)
                return self._open[name]
            gate = self._opening.setdefault(name, threading.Lock())
        with gate:
            with self._lock:
                if name in self._open:
                    return self._open[name]
            header = Header(opener(name))
            with self._lock:
                self._open[name] = header
                self._opening.pop(name, None)
                while len(self._open) > self.capacity:
                    self._open.popitem(last=False)[1].close()
            return header

    def forget(self, name: str | None = None) -> None:
        """Close one tile's header (it may have changed), or every one."""
        with self._lock:
            gone = list(self._open) if name is None else [name] if name in self._open else []
            closing = [self._open.pop(n) for n in gone]
        for header in closing:
            header.close()


def wait(futures: list[Future[None]]) -> None:
    for future in futures:
        try:
            future.result()
        except Exception:  # a failed fetch: the read itself will ask again, and retry
            pass


__all__ = ["FetchAhead", "Header", "Headers", "wait"]
