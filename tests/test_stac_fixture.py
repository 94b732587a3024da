"""The ``stac_api`` fixture (tests/stac_server.py) is a real STAC API over real HTTP COGs.

Expected ids come from the tile grid (copdem.tiles_for_bbox), expected pixels from reading
the local tile files directly, never from the fixture's own bookkeeping alone.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import rasterio
from rasterio.windows import Window

from h3pipe.demo.copdem import tile_name, tiles_for_bbox
from tests.stac_server import StacApi, empty_collection

# Inside the 1-degree cells S02/E029 and S02/E030 and away from their edges, so it also
# stays clear of the half-pixel margins by which each item's footprint overhangs its cell.
TWO_TILES_BBOX = (29.2, -1.8, 30.6, -1.4)


def _no_proxy() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def test_search_by_bbox_finds_exactly_the_tiles_it_touches(stac_api: StacApi) -> None:
    from pystac_client import Client

    expected = {tile_name(lon, lat).removesuffix(".tif") for lon, lat in tiles_for_bbox(
        TWO_TILES_BBOX)}
    assert len(expected) == 2

    search = Client.open(stac_api.url).search(collections=[stac_api.collection],
                                              bbox=TWO_TILES_BBOX)
    ids = {item.id for item in search.items()}

    assert ids == expected
    assert search.matched() == 2


def test_whole_collection_is_searchable(stac_api: StacApi) -> None:
    from pystac_client import Client

    search = Client.open(stac_api.url).search(collections=[stac_api.collection], limit=2)
    # limit=2 forces pystac-client through the API's paging links.
    assert sorted(item.id for item in search.items()) == sorted(stac_api.items)
    assert search.matched() == len(stac_api.items) == 6


def test_empty_collection_gives_empty_results(stac_api: StacApi) -> None:
    from pystac_client import Client

    collection_id = empty_collection(stac_api, "h3pipe-empty")
    client = Client.open(stac_api.url)
    assert client.get_collection(collection_id).id == collection_id

    search = client.search(collections=[collection_id], bbox=TWO_TILES_BBOX)
    assert list(search.items()) == []
    assert search.matched() == 0


def test_asset_window_over_http_equals_local_read(stac_api: StacApi) -> None:
    from pystac_client import Client

    item_id = tile_name(29, -2).removesuffix(".tif")
    item = Client.open(stac_api.url).get_collection(stac_api.collection).get_item(item_id)
    assert item is not None
    href = item.assets["data"].href
    assert href.startswith(f"{stac_api.cog_url}/")

    window = Window(col_off=150, row_off=40, width=70, height=33)
    with rasterio.open(href) as remote:
        assert list(remote.transform)[:6] == item.properties["proj:transform"]
        assert [remote.height, remote.width] == item.properties["proj:shape"]
        got = remote.read(1, window=window)
    with rasterio.open(stac_api.tiles[item_id]) as local:
        want = local.read(1, window=window)

    assert got.shape == (33, 70)
    assert np.isfinite(got).any()
    np.testing.assert_array_equal(got, want)


def test_cog_server_answers_range_requests(stac_api: StacApi) -> None:
    path = next(iter(stac_api.tiles.values()))
    url = f"{stac_api.cog_url}/{path.name}"
    data = path.read_bytes()

    req = urllib.request.Request(url, headers={"Range": "bytes=8-23"})
    with _no_proxy().open(req, timeout=5) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 8-23/{len(data)}"
        assert resp.read() == data[8:24]

    with _no_proxy().open(urllib.request.Request(url, method="HEAD"), timeout=5) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(data)
        assert resp.headers.get("Accept-Ranges") == "bytes"

