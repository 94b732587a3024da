"""Remote tiles are read through a fetch-ahead: a batch's blocks are asked for all at once,
each block is downloaded once however many windows share it, and the pixels are those of
the same windows read from local disk."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from h3pipe.sources import raster
from h3pipe.sources.raster import MosaicReader, describe_raster
from tests.tileserver import TileServer

LATENCY = 0.2


@pytest.fixture
def served(tmp_path):
    """A COG-like 1024 x 1024 tiled, compressed GeoTIFF (64 blocks of 128 px) and its
    server, which adds LATENCY to every request and logs every range it serves."""
    data = np.random.default_rng(5).normal(500, 50, (1024, 1024)).astype("float32")
    path = tmp_path / "srv" / "t.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=1,
                       dtype="float32", crs="EPSG:4326", tiled=True, blockxsize=128,
                       blockysize=128, compress="deflate",
                       transform=from_origin(29.0, -1.0, 0.001, 0.001)) as ds:
        ds.write(data, 1)
    raster.close_tiles()
    with TileServer(path.parent, latency=LATENCY, keep_log=True) as server:
        yield server, path
    raster.close_tiles()


def _windows():
    # Overlapping windows over most of the raster, as a batch's cell groups are.
    out = []
    for i in range(3):
        for j in range(3):
            west, north = 29.0 + 0.25 * j, -1.0 - 0.25 * i
            out.append((west, north - 0.3, west + 0.3, north))
    return out


def test_a_batch_of_windows_reads_each_block_once_and_in_parallel(tmp_path, served):
    server, local = served
    here = describe_raster("s", str(local), tmp_path)
    expected = [MosaicReader(here).read(b)[0] for b in _windows()]
    info = describe_raster("s", server.url_of("t.tif"), tmp_path)
    server.reset_stats()
    start = time.perf_counter()
    reader = MosaicReader(info)
    reader.prefetch(_windows())
    got = [reader.read(b)[0] for b in _windows()]
    seconds = time.perf_counter() - start
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    stats = server.stats
    assert stats.duplicate_bytes == 0
    with rasterio.open(local) as ds:
        blocks = sum(ds.block_size(1, i, j) for i in range(8) for j in range(8))
    assert stats.bytes_sent <= 1.2 * blocks
    # Neighbouring blocks come as one range, and the ranges all at once. GDAL alone reads
    # window after window (in parallel only within one): at least a round trip each.
    assert stats.ranges <= 16
    baseline = _gdal_alone(server.url_of("t.tif"), info)
    assert baseline >= len(_windows()) * LATENCY
    assert seconds < 0.5 * baseline, (seconds, baseline, stats)


def _gdal_alone(url, info):
    from rasterio.windows import Window

    start = time.perf_counter()
    with rasterio.open(f"/vsicurl/{url}?fresh") as ds:
        for bounds in _windows():
            c0, r0, c1, r1 = info.pixel_window(bounds)
            ds.read(1, window=Window(max(c0, 0), max(r0, 0), min(c1, 1024) - max(c0, 0),
                                     min(r1, 1024) - max(r0, 0)))
    return time.perf_counter() - start


def test_a_read_without_prefetch_fetches_its_blocks_as_few_ranges(tmp_path, served):
    server, local = served
    info = describe_raster("s", server.url_of("t.tif"), tmp_path)
    server.reset_stats()
    values, _ = MosaicReader(info).read((29.0, -2.024, 30.024, -1.0))  # the whole raster
    with rasterio.open(local) as ds:
        np.testing.assert_array_equal(values[1:1025, 1:1025], ds.read(1))
    # 64 blocks, neighbours in the file: one range (4 MB at most each), not one per block.
    assert server.stats.duplicate_bytes == 0 and server.stats.ranges <= 2
