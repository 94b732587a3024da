"""Remote tiles as a run reads them: each tile's header fetched once per run, a batch's blocks
fetched ahead (before the batch starts) and never again, and a server that dies while blocks
are being fetched ahead gives the usual one-line error, not a hang."""

from __future__ import annotations

import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from h3pipe.errors import RemoteReadError
from h3pipe.grid import CellBlock
from h3pipe.sources import raster, remote
from h3pipe.sources.raster import MosaicReader, describe_raster, fetch_ahead
from tests.conftest import write_project, zonal_pipeline
from tests.tileserver import TileServer
from tests.waiting import wait_until

RES = 0.001  # degrees per pixel
SIDE = 256  # pixels per tile side, 64-pixel blocks
WEST, NORTH = 29.0, -1.0


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")
    monkeypatch.setenv("H3PIPE_REMOTE_BACKOFF", "0.01")


def _tiles(root: Path) -> list[Path]:
    """2 x 2 tiled, compressed GeoTIFFs side by side on one grid (as a COG's blocks)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    paths = []
    for i in range(2):
        for j in range(2):
            path = root / f"t{i}{j}.tif"
            with rasterio.open(path, "w", driver="GTiff", width=SIDE, height=SIDE, count=1,
                               dtype="float32", crs="EPSG:4326", tiled=True, blockxsize=64,
                               blockysize=64, compress="deflate",
                               transform=from_origin(WEST + j * SIDE * RES,
                                                     NORTH - i * SIDE * RES, RES, RES)) as ds:
                ds.write(rng.normal(800, 40, (SIDE, SIDE)).astype("float32"), 1)
            paths.append(path)
    return paths


def _catalog(root: Path, paths: list[Path], server: TileServer) -> Path:
    """A static STAC collection of the served tiles; its items do not state their grid, so
    describing the source opens every tile's header (in the run's process, before its
    batches)."""
    (root / "items").mkdir(parents=True)
    links = [{"rel": "root", "href": "./collection.json"}]
    for p in paths:
        with rasterio.open(p) as ds:
            west, south, east, north = ds.bounds
        item = {"type": "Feature", "stac_version": "1.0.0", "id": p.stem, "collection": "dem",
                "bbox": [west, south, east, north],
                "geometry": {"type": "Polygon", "coordinates": [[
                    [west, south], [east, south], [east, north], [west, north],
                    [west, south]]]},
                "properties": {"datetime": "2021-04-22T00:00:00Z"}, "links": [],
                "assets": {"data": {"href": server.url_of(p.name), "type": "image/tiff"}}}
        (root / "items" / f"{p.stem}.json").write_text(json.dumps(item))
        links.append({"rel": "item", "href": f"./items/{p.stem}.json"})
    (root / "collection.json").write_text(json.dumps({
        "type": "Collection", "stac_version": "1.0.0", "id": "dem", "description": "d",
        "license": "proprietary", "links": links,
        "extent": {"spatial": {"bbox": [[WEST, NORTH - 2 * SIDE * RES,
                                         WEST + 2 * SIDE * RES, NORTH]]},
                   "temporal": {"interval": [[None, None]]}}}))
    return root / "collection.json"


def _forget(server: TileServer) -> None:
    """This process knows nothing of the server's files: no open tile, no cached byte."""
    raster.close_tiles()
    remote.clear_gdal_cache(f"/vsicurl/{server.url}")


@pytest.fixture
def served(tmp_path):
    paths = _tiles(tmp_path / "srv")
    with TileServer(tmp_path / "srv", latency=0.02, keep_log=True) as server:
        _forget(server)
        yield server, paths
        _forget(server)


def test_a_run_fetches_each_header_once_and_each_byte_once(tmp_path, cli, served):
    server, paths = served
    catalog = _catalog(tmp_path / "catalog", paths, server)
    stac = write_project(tmp_path / "remote", sources={"dem": (
        f"id: dem\nkind: stac\ntheme: terrain\n"
        f"stac: {{url: '{catalog}', collection: dem, asset: data}}\n")},
        pipelines={"p": zonal_pipeline("p", "dem", ["mean", "count", "max"], resolution=8,
                                       batch_size=100)})
    local = write_project(tmp_path / "local", sources={"dem": (
        f"id: dem\nkind: raster\ntheme: terrain\npath: '{tmp_path / 'srv'}/*.tif'\n")},
        pipelines={"p": zonal_pipeline("p", "dem", ["mean", "count", "max"], resolution=8,
                                       batch_size=100)})
    bbox = "29.05,-1.45,29.45,-1.05"  # across all four tiles, many batches
    server.reset_stats()
    r = cli("--project", stac, "run", "p", "--bbox", bbox, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    stats, log = server.stats, list(server.log or [])
    # Each tile's header once for the run (HEAD, then one GET from byte 0), whatever
    # number of worker threads and batches read it; and no byte of any tile twice.
    assert stats.heads == 4, stats
    assert sorted(name for name, start, _ in log if start == 0) == [p.name for p in paths]
    assert stats.duplicate_bytes == 0, stats
    # The same numbers as from the files on disk.
    assert cli("--project", local, "run", "p", "--bbox", bbox, "--workers", "2").exit_code == 0
    rows = {}
    for name, proj in (("remote", stac), ("local", local)):
        out = tmp_path / f"{name}.parquet"
        assert cli("--project", proj, "export", "ds", "-o", out).exit_code == 0
        rows[name] = pq.read_table(out).sort_by("h3_index").to_pylist()
    assert rows["remote"] == rows["local"] and len(rows["local"]) > 500


def _block(cells: list[str]) -> CellBlock:
    ids = np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64)
    return CellBlock(9, np.array([ids[0]], np.uint64), np.array([False]), np.array([0]),
                     np.array([len(ids)]), ids)


def _cells() -> list[str]:
    """Cells well inside tile t00, near its middle (blocks of one tile only)."""
    centre = h3.latlng_to_cell(NORTH - 0.128, WEST + 0.128, 9)
    return sorted(h3.grid_disk(centre, 6))


def _boxes(cells: list[str]) -> list[tuple[float, float, float, float]]:
    out = []
    for c in cells:
        lat, lng = zip(*h3.cell_to_boundary(c), strict=True)
        out.append((min(lng), min(lat), max(lng), max(lat)))
    return out


def _block_bytes(path: Path, boxes: list[tuple[float, float, float, float]]) -> int:
    """Bytes of the file's blocks under the boxes (each padded by a pixel), from its tags."""
    seen = set()
    with rasterio.open(path) as ds:
        for west, south, east, north in boxes:
            c0 = math.floor((west - WEST) / RES) - 1
            c1 = math.ceil((east - WEST) / RES) + 1
            r0 = math.floor((NORTH - north) / RES) - 1
            r1 = math.ceil((NORTH - south) / RES) + 1
            for i in range(r0 // 64, (r1 - 1) // 64 + 1):
                for j in range(c0 // 64, (c1 - 1) // 64 + 1):
                    seen.add((int(ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=1)),
                              int(ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=1))))
    return sum(size for _, size in seen)


def test_blocks_fetched_ahead_are_not_fetched_again(tmp_path, served):
    server, paths = served
    cells = _cells()
    boxes = _boxes(cells)
    here = describe_raster("s", str(paths[0]), tmp_path)
    expected = [MosaicReader(here).read(b)[0] for b in boxes]
    info = describe_raster("s", server.url_of(paths[0].name), tmp_path)
    _forget(server)
    server.reset_stats()
    fetch_ahead(info, _block(cells))  # returns at once: the fetching is in the background
    wanted = _block_bytes(paths[0], boxes)
    wait_until(lambda: server.stats.bytes_sent >= wanted, 30, "the blocks under the cells")
    fetched = server.reset_stats()
    assert fetched.heads == 1 and fetched.duplicate_bytes == 0
    reader = MosaicReader(info)
    reader.prefetch(boxes)
    got = [reader.read(b)[0] for b in boxes]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    # Every window's bytes were there already: not one request more.
    assert server.stats.requests == 0, server.stats


def test_a_server_that_dies_while_blocks_are_fetched_ahead_is_a_clear_error(tmp_path):
    paths = _tiles(tmp_path / "srv")
    server = TileServer(tmp_path / "srv", latency=0.3).start()
    try:
        _forget(server)
        info = describe_raster("s", server.url_of(paths[0].name), tmp_path)
        _forget(server)
        server.reset_stats()
        cells = _cells()
        fetch_ahead(info, _block(cells))
        # The header came, the blocks are asked for: the server dies now, answering none.
        wait_until(lambda: server.stats.gets >= 2, 30, "block requests in flight")
        server.fail_share, server.fail_status = 1.0, "reset"
        server.stop()
        with ThreadPoolExecutor(1) as pool:
            read = pool.submit(lambda: MosaicReader(info).read(_boxes(cells)[0]))
            with pytest.raises(RemoteReadError) as err:
                read.result(timeout=120)  # a hang would fail here, not block the suite
        text = str(err.value)
        assert f"from {server.url.removeprefix('http://')} after 3 attempts" in text
        assert "connection refused" in text and "\n" not in text
    finally:
        server.stop()
        _forget(server)
        shutil.rmtree(tmp_path / "srv", ignore_errors=True)
