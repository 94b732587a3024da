"""STAC catalogs and items, tile headers and vector files over a server that fails a share of
its GETs: read as if the server were sound; a server that stays down is a RemoteReadError
(exit 1) naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from h3pipe.errors import RemoteReadError
from h3pipe.sources import raster, remote
from h3pipe.sources.stac import describe_stac
from h3pipe.sources.vector import read_features, vector_info
from h3pipe.spec import StacSpec
from tests.conftest import write_raster
from tests.tileserver import TileServer

BOX = (29.0, -2.3, 29.4, -1.9)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")
    monkeypatch.setenv("H3PIPE_REMOTE_BACKOFF", "0.01")


def _catalog(root, url):
    """Four tiles and a static catalog whose items do not state their grid (no
    raster:bands), so that describing the source opens every tile's header over HTTP."""
    rng = np.random.default_rng(1)
    links = [{"rel": "root", "href": "./collection.json"}]
    for i in range(2):
        for j in range(2):
            west, north = 29.0 + 0.2 * j, -1.9 - 0.2 * i
            name = f"t{i}{j}.tif"
            write_raster(root / name, rng.normal(100, 5, (200, 200)).astype("float32"),
                         west=west, north=north, res=0.001)
            item = {"type": "Feature", "stac_version": "1.0.0", "id": f"t{i}{j}",
                    "collection": "dem", "bbox": [west, north - 0.2, west + 0.2, north],
                    "geometry": shapely.geometry.mapping(
                        shapely.box(west, north - 0.2, west + 0.2, north)),
                    "properties": {"datetime": "2021-04-22T00:00:00Z"}, "links": [],
                    "assets": {"data": {"href": f"{url}/{name}", "type": "image/tiff"}}}
            (root / "items").mkdir(exist_ok=True)
            (root / "items" / f"t{i}{j}.json").write_text(json.dumps(item))
            links.append({"rel": "item", "href": f"./items/t{i}{j}.json"})
    collection = {"type": "Collection", "stac_version": "1.0.0", "id": "dem",
                  "description": "d", "license": "proprietary", "links": links,
                  "extent": {"spatial": {"bbox": [[29.0, -2.3, 29.4, -1.9]]},
                             "temporal": {"interval": [[None, None]]}}}
    (root / "collection.json").write_text(json.dumps(collection))


def _forget(server):
    raster.close_tiles()
    remote.clear_gdal_cache(f"/vsicurl/{server.url}")


@pytest.mark.parametrize("share", [0.10, 0.25])
def test_stac_catalog_items_and_headers_over_a_flaky_server(tmp_path, share):
    with TileServer(tmp_path) as server:
        _catalog(tmp_path, server.url)
        spec = StacSpec(url=server.url_of("collection.json"), collection="dem", asset="data")
        expected, _ = describe_stac("dem", spec, [BOX], tmp_path)
        assert len(expected.tiles) == 4
        server.fail_share = share
        spoiled = 0
        for seed in range(10):
            _forget(server)
            server.reseed(seed)
            server.reset_stats()
            info, items = describe_stac("dem", spec, [BOX], tmp_path)
            assert info == expected and len(items) == 4
            spoiled += server.stats.failures
        assert spoiled >= 5


def test_stac_catalog_on_a_server_that_is_down(tmp_path):
    server = TileServer(tmp_path).start()
    spec = StacSpec(url=server.url_of("collection.json"), collection="dem", asset="data")
    server.stop()
    with pytest.raises(RemoteReadError) as err:
        describe_stac("dem", spec, [BOX], tmp_path)
    assert err.value.exit_code == 1
    assert f"from {server.url.removeprefix('http://')} after 5 attempts" in str(err.value)


def test_stac_item_header_that_keeps_failing_names_the_status(tmp_path):
    with TileServer(tmp_path, fail_match="*.tif") as server:
        _catalog(tmp_path, server.url)
        spec = StacSpec(url=server.url_of("collection.json"), collection="dem", asset="data")
        server.fail_share = 1.0
        with pytest.raises(RemoteReadError) as err:
            describe_stac("dem", spec, [BOX], tmp_path)
        text = str(err.value)
        assert "item 't00'" in text and "HTTP 503 Service Unavailable" in text
        assert "supported file format" not in text


def test_vector_file_over_a_flaky_server(tmp_path):
    rng = np.random.default_rng(2)
    feats = [{"type": "Feature", "properties": {"name": f"b{i}"},
              "geometry": shapely.geometry.mapping(shapely.Point(x, y).buffer(0.001))}
             for i, (x, y) in enumerate(zip(rng.uniform(29, 29.4, 200),
                                            rng.uniform(-2.3, -1.9, 200), strict=True))]
    path = tmp_path / "b.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    local = vector_info("b", str(path), tmp_path, attributes=("name",))
    expected = read_features(local, BOX)
    assert expected.num_rows == 200
    with TileServer(tmp_path, fail_share=0.25) as server:
        for seed in range(10):
            server.reseed(seed)
            import pyogrio

            pyogrio.vsi_curl_clear_cache()
            info = vector_info("b", server.url_of("b.geojson"), tmp_path, attributes=("name",))
            got = read_features(info, BOX)
            assert got.sort_by("feature_id").equals(expected.sort_by("feature_id"))
        assert server.stats.failures >= 3
