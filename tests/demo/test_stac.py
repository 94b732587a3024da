"""Tests for the STAC metadata of the synthetic cop-dem-glo-30 tiles (h3pipe.demo.stac).

Expectations come from the tiles themselves (read with rasterio), from the tile grid written
out by hand, or from the conventions of the real cop-dem-glo-30 items; pystac reads the
written catalog back to check its structure (schema validation needs the network, so no).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pystac
import pytest
import rasterio

from h3pipe.demo.copdem import generate_tiles, tile_name, tiles_for_bbox
from h3pipe.demo.stac import collection_dict, item_dict, write_static_catalog
from tests.conftest import write_raster

SIZE = 360
BBOX = (28.9, -2.6, 30.4, -1.2)  # S02/S03 x E028/E029/E030
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
E029_S02 = "Copernicus_DSM_COG_10_S02_00_E029_00_DEM"


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_tiles(tmp_path_factory.mktemp("tiles"), BBOX, size=SIZE)


@pytest.fixture
def catalog(tmp_path: Path, tiles: list[Path]) -> Path:
    return write_static_catalog(tmp_path / "catalog", tiles)


def _tile(tiles: list[Path], item_id: str) -> Path:
    return next(p for p in tiles if p.stem == item_id)


# --- item_dict ------------------------------------------------------------------------------


def test_item_id_geometry_and_projection_come_from_the_tile(tiles: list[Path]) -> None:
    path = _tile(tiles, E029_S02)
    item = item_dict(path, "https://example.test/x.tif")
    with rasterio.open(path) as ds:
        transform = list(ds.transform)[:6]
        west, south, east, north = ds.bounds
        shape = [ds.height, ds.width]

    assert item["id"] == E029_S02 == path.stem
    assert item["type"] == "Feature"
    assert item["collection"] == "cop-dem-glo-30"
    props = item["properties"]
    assert props["proj:transform"] == transform
    # Written out by hand: pixel centres on multiples of 1/360 starting at the cell's NW
    # corner (29, -1), so the outer corner is half a pixel further north-west.
    assert props["proj:transform"] == pytest.approx(
        [1 / SIZE, 0.0, 29 - 0.5 / SIZE, 0.0, -1 / SIZE, -1 + 0.5 / SIZE], abs=1e-12
    )
    assert props["proj:shape"] == shape == [SIZE, SIZE]
    assert props["proj:epsg"] == 4326
    assert props["proj:code"] == "EPSG:4326"
    assert props["gsd"] == 30
    assert props["datetime"] == "2021-04-22T00:00:00Z"
    assert props["grid:code"] == "CDEM-S02E029"
    assert props["proj:centroid"] == {"lat": -1.5, "lon": 29.5}

    assert item["bbox"] == [west, south, east, north]
    ring = item["geometry"]["coordinates"][0]
    assert item["geometry"]["type"] == "Polygon"
    assert ring[0] == ring[-1]
    assert {tuple(p) for p in ring} == {(west, south), (west, north), (east, north),
                                        (east, south)}


def test_item_data_asset_is_shaped_like_the_real_one(tiles: list[Path]) -> None:
    item = item_dict(tiles[0], "https://example.test/a.tif")
    assert list(item["assets"]) == ["data"]
    asset = item["assets"]["data"]
    assert asset["href"] == "https://example.test/a.tif"
    assert asset["type"] == COG_TYPE
    assert asset["roles"] == ["data"]
    assert asset["raster:bands"] == [
        {"sampling": "point", "data_type": "float32", "spatial_resolution": 30, "unit": "meter"}
    ]
    assert any("/projection/" in uri for uri in item["stac_extensions"])
    assert any("/raster/" in uri for uri in item["stac_extensions"])


def test_item_rejects_files_not_named_like_tiles(tmp_path: Path) -> None:
    import numpy as np

    path = write_raster(tmp_path / "dem.tif", np.zeros((4, 4), "float32"), west=29, north=-1,
                        res=0.25)
    with pytest.raises(ValueError, match="not a cop-dem-glo-30 tile name"):
        item_dict(path, "dem.tif")


def test_item_rejects_other_crs(tmp_path: Path) -> None:
    import numpy as np

    path = write_raster(tmp_path / f"{E029_S02}.tif", np.zeros((4, 4), "float32"),
                        west=500000, north=9800000, res=30, crs="EPSG:32735")
    with pytest.raises(ValueError, match="EPSG:4326"):
        item_dict(path, "x.tif")


# --- collection_dict ------------------------------------------------------------------------


def test_collection_extent_is_the_union_of_the_items(tiles: list[Path]) -> None:
    items = [item_dict(p, p.name) for p in tiles]
    coll = collection_dict(items)
    half = 0.5 / SIZE
    assert coll["id"] == "cop-dem-glo-30"
    assert coll["type"] == "Collection"
    # Cells E028..E030 x S03..S02, each footprint shifted half a pixel north-west.
    assert coll["extent"]["spatial"]["bbox"] == [
        pytest.approx([28 - half, -3 + half, 31 - half, -1 + half], abs=1e-12)
    ]
    assert coll["extent"]["temporal"]["interval"] == [
        ["2021-04-22T00:00:00Z", "2021-04-22T00:00:00Z"]
    ]
    assert coll["item_assets"]["data"] == {"type": COG_TYPE, "roles": ["data"]}


def test_empty_collection_has_the_real_global_extent() -> None:
    coll = collection_dict([], collection_id="other", title="Other")
    assert (coll["id"], coll["title"]) == ("other", "Other")
    assert coll["extent"]["spatial"]["bbox"] == [[-180.0, -90.0, 180.0, 90.0]]


# --- write_static_catalog -------------------------------------------------------------------


def test_pystac_reads_every_item_back(catalog: Path, tiles: list[Path]) -> None:
    expected = {tile_name(lon, lat).removesuffix(".tif") for lon, lat in tiles_for_bbox(BBOX)}
    assert len(expected) == 6

    coll = pystac.Collection.from_file(str(catalog))
    assert coll.id == "cop-dem-glo-30"
    assert {item.id for item in coll.get_items()} == expected
    # get_all_items() is deprecated in pystac for exactly this call.
    assert {item.id for item in coll.get_items(recursive=True)} == expected

    for item in coll.get_items():
        assert item.get_collection() is not None
        assert item.get_collection().id == coll.id
        assert Path(item.assets["data"].get_absolute_href()) == _tile(tiles, item.id).resolve()
        with rasterio.open(_tile(tiles, item.id)) as ds:
            assert item.properties["proj:transform"] == list(ds.transform)[:6]
            assert item.properties["proj:shape"] == [ds.height, ds.width]
        # pystac migrates the projection extension to v2.0.0 on read: proj:epsg -> proj:code.
        assert item.properties["proj:code"] == "EPSG:4326"


def test_files_are_laid_out_with_relative_links(catalog: Path, tiles: list[Path]) -> None:
    assert catalog.name == "collection.json"
    coll = json.loads(catalog.read_text())
    links = {(link["rel"], link["href"]) for link in coll["links"]}
    assert ("root", "./collection.json") in links
    assert {href for rel, href in links if rel == "item"} == {
        f"./items/{p.stem}.json" for p in tiles
    }

    item = json.loads((catalog.parent / "items" / f"{E029_S02}.json").read_text())
    assert {(link["rel"], link["href"]) for link in item["links"]} >= {
        ("root", "../collection.json"),
        ("collection", "../collection.json"),
        ("parent", "../collection.json"),
    }
    # The raw file keeps the real items' proj:epsg next to proj:code.
    assert item["properties"]["proj:epsg"] == 4326
    href = item["assets"]["data"]["href"]
    assert not href.startswith("/")
    assert (catalog.parent / "items" / href).resolve() == _tile(tiles, E029_S02).resolve()


def test_catalog_still_resolves_after_moving_everything(tmp_path: Path) -> None:
    src = tmp_path / "a"
    tiles = generate_tiles(src / "tiles", (29.5, -1.5, 29.6, -1.4), size=60)
    write_static_catalog(src / "catalog", tiles)
    dst = tmp_path / "b"
    shutil.move(src, dst)

    coll = pystac.Collection.from_file(str(dst / "catalog" / "collection.json"))
    (item,) = coll.get_items()
    assert item.id == E029_S02
    href = Path(item.assets["data"].get_absolute_href())
    assert href == (dst / "tiles" / f"{E029_S02}.tif").resolve()
    with rasterio.open(href) as ds:
        assert ds.width == 60


def test_href_for_overrides_asset_hrefs(tmp_path: Path, tiles: list[Path]) -> None:
    path = write_static_catalog(tmp_path / "cat", tiles,
                                href_for=lambda p: f"http://127.0.0.1:9/{p.name}")
    coll = pystac.Collection.from_file(str(path))
    hrefs = {item.id: item.assets["data"].href for item in coll.get_items()}
    assert hrefs == {p.stem: f"http://127.0.0.1:9/{p.name}" for p in tiles}
