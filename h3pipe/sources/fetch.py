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
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

# Downloaded (compressed) bytes kept per process, shared across batches: about the blocks
# of the scope a worker reads (Copernicus DEM blocks are ~0.5 MB).
CACHE_MB = 96
os.environ.setdefault("CPL_VSIL_CURL_CACHE_SIZE", str(CACHE_MB << 20))
THREADS = 8
# Neighbouring blocks are fetched as one range, up to this many bytes; a COG puts a few
# bytes (size leader, trailer) between consecutive blocks, hence the gap allowed.
MAX_RANGE = 4 << 20
MAX_GAP = 1024


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
        # (name, offset) -> (size, future), oldest first; bounded by the cache's size, so a
        # block counted as fetched is still likely to be in GDAL's cache.
        self._blocks: OrderedDict[tuple[str, int], tuple[int, Future[None]]] = OrderedDict()
        self._bytes = 0
        self._offsets: dict[tuple[str, int, int], tuple[int, int] | None] = {}

    def _start(self) -> bool:
        if self._lib is None:
            try:
                self._lib = _libgdal()
            except (OSError, AttributeError):
                self._lib = False
        if self._lib and self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="h3pipe-fetch")
        return bool(self._lib)

    def block_ranges(self, ds: Any, band: int, col0: int, row0: int, col1: int, row1: int
                     ) -> list[tuple[int, int]] | None:
        """(offset, size) of the blocks of ``ds`` a pixel window touches; None when the
        file does not say (not a tiled GeoTIFF)."""
        bh, bw = ds.block_shapes[band - 1]
        out = []
        for i in range(row0 // bh, (row1 - 1) // bh + 1):
            for j in range(col0 // bw, (col1 - 1) // bw + 1):
                key = (ds.name, i, j)
                if key not in self._offsets:
                    off = ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=band)
                    size = ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=band)
                    self._offsets[key] = (int(off), int(size)) if off and size else None
                found = self._offsets[key]
                if found is None:
                    return None
                if found[1] > 0:
                    out.append(found)
        return out

    def fetch(self, name: str, ranges: list[tuple[int, int]]) -> list[Future[None]]:
        """Start fetching the blocks not already fetched or on their way; the futures of
        every one of ``ranges``."""
        if not ranges or not self._start():
            return []
        assert self._pool is not None
        with self._lock:
            todo = sorted({r for r in ranges if (name, r[0]) not in self._blocks})
            merged: list[list[tuple[int, int]]] = []
            for off, size in todo:
                last = merged[-1][-1] if merged else None
                if (last is not None and 0 <= off - (last[0] + last[1]) <= MAX_GAP
                        and off + size - merged[-1][0][0] <= MAX_RANGE):
                    merged[-1].append((off, size))
                else:
                    merged.append([(off, size)])
            for run in merged:
                start, end = run[0][0], run[-1][0] + run[-1][1]
                future = self._pool.submit(self._download, name, start, end - start)
                for off, size in run:
                    self._blocks[(name, off)] = (size, future)
                    self._bytes += size
            while self._bytes > self.budget and len(self._blocks) > 1:
                size, _ = self._blocks.popitem(last=False)[1]
                self._bytes -= size
            return [self._blocks[(name, off)][1] for off, _ in ranges
                    if (name, off) in self._blocks]

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
            self._offsets.clear()


def wait(futures: list[Future[None]]) -> None:
    for future in futures:
        try:
            future.result()
        except Exception:  # a failed fetch: the read itself will ask again, and retry
            pass


__all__ = ["FetchAhead", "wait"]
