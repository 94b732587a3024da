"""``h3pipe.authoring.inspect``: what a raster or STAC collection holds, and its source YAML.

Every raster here is built in code, so the expected values come from how it was built;
pixel sizes in metres come from the WGS84 ellipsoid formulas written out below.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import math
import os
import re
import socket
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from jsonschema import Draft202012Validator
from rasterio.transform import from_origin

from h3pipe.authoring.drafting import suggest_source_id, to_source_yaml
from h3pipe.authoring.inspect import Inspection, inspect_location
from h3pipe.authoring.sampling import choose_asset
from h3pipe.config.schemas import SCHEMA_DIR
from h3pipe.errors import H3PipeError, MissingExtra, SourceError
from tests.conftest import SHARED_DATA, write_raster

SCHEMA = json.loads((SCHEMA_DIR / "source.v1.json").read_text())

# WGS84
A = 6378137.0
E2 = 0.00669437999014


def deg_lon_m(lat: float) -> float:
    """Metres in one degree of longitude at ``lat`` (radius of the parallel)."""
    phi = math.radians(lat)
    return math.pi / 180 * A * math.cos(phi) / math.sqrt(1 - E2 * math.sin(phi) ** 2)


def deg_lat_m(lat: float) -> float:
    """Metres in one degree of latitude at ``lat`` (meridional radius of curvature)."""
    phi = math.radians(lat)
    return math.pi / 180 * A * (1 - E2) / (1 - E2 * math.sin(phi) ** 2) ** 1.5


# -- rasters made in code -------------------------------------------------------------------

def gaussian_hills(n: int = 300) -> np.ndarray:
    """Smooth float32 terrain: three hills on a plain, exactly 800..3000 m."""
    y, x = np.mgrid[0:n, 0:n] / n
    z = np.zeros((n, n))
    for cx, cy, h in ((0.3, 0.3, 1.0), (0.7, 0.6, 0.7), (0.4, 0.8, 0.5)):
        z += h * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.12 ** 2))
    z = (z - z.min()) / (z.max() - z.min())
    return (800 + 2200 * z).astype("float32")


def int16_dem(n: int = 240) -> np.ndarray:
    """A sloping int16 surface 200..1499 m with waves, and a block of nodata."""
    y, x = np.mgrid[0:n, 0:n] / n
    z = 200 + 1000 * x + 150 * np.sin(4 * y) * np.cos(3 * x)
    z = np.clip(z, 200, 1499).astype("int16")
    z[:30, :40] = -32768
    return z


CLASSES = (10, 20, 30, 40, 50, 60, 80)


def categorical(n_blocks: int = 12, block: int = 20) -> np.ndarray:
    """uint8 patches of 7 class codes, every class present."""
    rng = np.random.default_rng(7)
    grid = rng.choice(CLASSES, size=(n_blocks, n_blocks))
    grid.flat[: len(CLASSES)] = CLASSES
    return np.kron(grid, np.ones((block, block))).astype("uint8")


def population(n: int = 200) -> np.ndarray:
    """Mostly empty land, scattered villages (1..20 people) and four towns up to 300."""
    rng = np.random.default_rng(3)
    pop = np.zeros((n, n), dtype="float32")
    villages = rng.random((n, n)) < 0.05
    pop[villages] = rng.uniform(1, 20, villages.sum())
    for r, c in ((30, 40), (120, 60), (80, 150), (170, 170)):
        pop[r:r + 5, c:c + 5] = rng.uniform(150, 300, (5, 5))
    pop[30, 40] = 300
    return pop


def write_rgb(path: Path, *, bands: int = 3) -> Path:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (bands, 64, 80), dtype="uint8")
    with rasterio.open(path, "w", driver="GTiff", width=80, height=64, count=bands,
                       dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(30.0, -1.0, 0.0001, 0.0001)) as ds:
        ds.write(data)
    return path


def validate_source(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    Draft202012Validator(SCHEMA).validate(doc)
    return doc


# -- rasters ------------------------------------------------------------------------------

def test_smooth_float_dem(tmp_path: Path) -> None:
    write_raster(tmp_path / "hills.tif", gaussian_hills(), west=29.0, north=-2.0, res=0.001)

    insp = inspect_location("hills.tif", tmp_path)

    assert insp.kind == "raster"
    assert insp.guess == "dem"
    assert "elevation" in insp.reason and "smooth" in insp.reason
    assert insp.theme == "terrain"
    assert insp.stats == ("mean", "min", "max", "stdev")
    assert insp.units == "m"
    assert (insp.dtype, insp.nodata, insp.band_count, insp.crs) == ("float32", None, 1,
                                                                    "EPSG:4326")
    assert insp.tile_count == 1
    assert insp.extent == pytest.approx((29.0, -2.3, 29.3, -2.0))
    assert insp.sample is not None
    assert insp.sample.pixels == 300 * 300
    assert insp.sample.min == pytest.approx(800) and insp.sample.max == pytest.approx(3000)


def test_geographic_resolution_is_metres_at_the_centre_latitude(tmp_path: Path) -> None:
    write_raster(tmp_path / "hills.tif", gaussian_hills(), west=10.0, north=60.3, res=0.001)

    insp = inspect_location(str(tmp_path / "hills.tif"), Path("/nonexistent"))

    assert insp.resolution_m is not None
    x, y = insp.resolution_m
    assert x == pytest.approx(0.001 * deg_lon_m(60.15), rel=1e-4)  # ~55.7 m
    assert y == pytest.approx(0.001 * deg_lat_m(60.15), rel=1e-4)  # ~111.4 m
    # 3 x 111 m = 334 m: res 8 (edge 531 m) is the finest; res 9 (201 m) is too small.
    assert insp.resolutions == (3, 8)


def test_int16_dem_with_nodata(tmp_path: Path) -> None:
    write_raster(tmp_path / "dem16.tif", int16_dem(), west=-97.5, north=32.8, res=1 / 1200,
                 nodata=-32768)

    insp = inspect_location("dem16.tif", tmp_path)

    assert insp.guess == "dem"
    assert (insp.dtype, insp.nodata) == ("int16", -32768)
    assert insp.sample is not None
    assert insp.sample.pixels == 240 * 240 - 30 * 40  # the nodata block is not a value
    assert insp.sample.min >= 200


def test_categorical_uint8_is_landcover(tmp_path: Path) -> None:
    write_raster(tmp_path / "lc.tif", categorical(), west=30.0, north=-1.0, res=0.0001,
                 nodata=0)

    insp = inspect_location("lc.tif", tmp_path)

    assert insp.guess == "landcover"
    assert "7 distinct values" in insp.reason
    assert insp.theme == "landcover"
    assert insp.stats == ("majority", "minority", "variety")
    assert insp.sample is not None and insp.sample.distinct == 7


def test_flat_int16_dem_with_few_values_is_not_mistaken_for_classes(tmp_path: Path) -> None:
    # A gentle slope in whole metres: 40 consecutive values, every one present.
    ramp = np.repeat((100 + np.arange(200) // 5)[None, :], 100, axis=0).astype("int16")
    write_raster(tmp_path / "flat.tif", ramp, west=0.0, north=1.0, res=0.001)

    insp = inspect_location("flat.tif", tmp_path)

    assert insp.sample is not None and insp.sample.distinct == 40
    assert insp.guess == "dem"


@pytest.mark.parametrize("bands", [3, 4])
def test_uint8_colour_image_is_rgb(tmp_path: Path, bands: int) -> None:
    write_rgb(tmp_path / "photo.tif", bands=bands)

    insp = inspect_location("photo.tif", tmp_path)

    assert insp.guess == "rgb"
    assert insp.band_count == bands
    assert insp.theme == "other"


def test_zero_inflated_skewed_raster_is_population(tmp_path: Path) -> None:
    pop = population()
    write_raster(tmp_path / "pop.tif", pop, west=29.0, north=-2.0, res=1 / 120)

    insp = inspect_location("pop.tif", tmp_path)

    assert insp.guess == "population"
    assert insp.theme == "demographics"
    assert insp.stats == ("sum",)
    assert insp.sample is not None
    assert insp.sample.zero_fraction == pytest.approx(np.mean(pop == 0))
    assert insp.sample.max == pytest.approx(300)


def test_projected_dem_resolution_is_the_pixel_size(tmp_path: Path) -> None:
    from pyproj import Transformer

    write_raster(tmp_path / "utm.tif", gaussian_hills(200), west=500000.0, north=9000000.0,
                 res=30.0, crs="EPSG:32735")

    insp = inspect_location("utm.tif", tmp_path)

    assert insp.crs == "EPSG:32735"
    assert insp.resolution_m == (30.0, 30.0)
    assert insp.guess == "dem"
    # 3 x 30 m = 90 m: res 9 (edge 201 m) is the finest, res 10 (76 m) is too small.
    assert insp.resolutions == (4, 9)
    to_lonlat = Transformer.from_crs("EPSG:32735", "EPSG:4326", always_xy=True)
    xs, ys = to_lonlat.transform([500000, 506000, 500000, 506000],
                                 [9000000, 9000000, 8994000, 8994000])
    assert insp.extent == pytest.approx((min(xs), min(ys), max(xs), max(ys)), abs=1e-4)


def test_feet_crs_resolution_is_converted_to_metres(tmp_path: Path) -> None:
    # EPSG:3089 (Kentucky single zone) is in US survey feet: 1200/3937 m each.
    write_raster(tmp_path / "ky.tif", gaussian_hills(100), west=5_000_000.0, north=3_800_000.0,
                 res=100.0, crs="EPSG:3089")

    insp = inspect_location("ky.tif", tmp_path)

    assert insp.resolution_m == pytest.approx((100 * 1200 / 3937, 100 * 1200 / 3937))


def test_glob_of_two_tiles(tmp_path: Path) -> None:
    hills = gaussian_hills(100)
    write_raster(tmp_path / "tiles" / "t_a.tif", hills, west=10.0, north=1.0, res=0.01)
    write_raster(tmp_path / "tiles" / "t_b.tif", hills, west=11.0, north=1.0, res=0.01)

    insp = inspect_location("tiles/*.tif", tmp_path)

    assert insp.tile_count == 2
    assert insp.extent == pytest.approx((10.0, 0.0, 12.0, 1.0))
    assert insp.guess == "dem"
    assert insp.notes == ()
    assert insp.sample is not None and insp.sample.pixels == 2 * 100 * 100


def test_glob_of_tiles_on_different_grids_is_flagged(tmp_path: Path) -> None:
    hills = gaussian_hills(100)
    write_raster(tmp_path / "t_a.tif", hills, west=10.0, north=1.0, res=0.01)
    write_raster(tmp_path / "t_b.tif", hills, west=11.0, north=1.0, res=0.02)

    insp = inspect_location("t_*.tif", tmp_path)

    assert any("pixel size" in n for n in insp.notes)


def test_vrt_counts_its_source_tiles(tmp_path: Path) -> None:
    hills = gaussian_hills(100)
    write_raster(tmp_path / "a.tif", hills, west=10.0, north=1.0, res=0.01)
    write_raster(tmp_path / "b.tif", hills, west=11.0, north=1.0, res=0.01)
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">{name}</SourceFilename>'
        f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="100" ySize="100"/>'
        f'<DstRect xOff="{off}" yOff="0" xSize="100" ySize="100"/></SimpleSource>'
        for name, off in (("a.tif", 0), ("b.tif", 100)))
    (tmp_path / "m.vrt").write_text(
        '<VRTDataset rasterXSize="200" rasterYSize="100"><SRS>EPSG:4326</SRS>'
        '<GeoTransform>10, 0.01, 0, 1, 0, -0.01</GeoTransform>'
        f'<VRTRasterBand dataType="Float32" band="1">{sources}</VRTRasterBand></VRTDataset>')

    insp = inspect_location("m.vrt", tmp_path)

    assert insp.tile_count == 2
    assert insp.extent == pytest.approx((10.0, 0.0, 12.0, 1.0))
    assert insp.guess == "dem"


def test_large_raster_is_read_decimated(tmp_path: Path) -> None:
    big = np.tile(gaussian_hills(300), (5, 5))  # 1500 x 1500 = 2.25 M pixels
    write_raster(tmp_path / "big.tif", big, west=0.0, north=1.0, res=0.0001)

    insp = inspect_location("big.tif", tmp_path)

    assert insp.sample is not None
    assert insp.sample.pixels <= 1_000_000
    assert insp.guess == "dem"


def test_constant_and_empty_rasters_are_unknown(tmp_path: Path) -> None:
    write_raster(tmp_path / "const.tif", np.full((50, 50), 800, "float32"), west=0.0,
                 north=1.0, res=0.01)
    write_raster(tmp_path / "empty.tif", np.full((50, 50), -9999, "float32"), west=0.0,
                 north=1.0, res=0.01, nodata=-9999)

    const = inspect_location("const.tif", tmp_path)
    empty = inspect_location("empty.tif", tmp_path)

    assert (const.guess, empty.guess) == ("unknown", "unknown")
    assert "800" in const.reason
    assert empty.sample is None and "no valid pixel" in empty.reason
    assert const.stats == ("count", "mean")


def test_white_noise_is_unknown(tmp_path: Path) -> None:
    noise = np.random.default_rng(5).uniform(-1000, 20000, (100, 100)).astype("float32")
    write_raster(tmp_path / "noise.tif", noise, west=0.0, north=1.0, res=0.01)

    assert inspect_location("noise.tif", tmp_path).guess == "unknown"


# -- http ---------------------------------------------------------------------------------

class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support, which GDAL's /vsicurl/ needs."""

    def log_message(self, *args: Any) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        path = self.translate_path(self.path)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("Range") or "").strip())
        if match is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start, end = int(match[1]), min(int(match[2] or size - 1), size - 1)
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(body)


@pytest.fixture
def http_dir(tmp_path: Path):
    """(folder, base URL) of a local HTTP server for files put in the folder."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_raster_over_http(http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    write_raster(root / "pop.tif", population(), west=29.0, north=-2.0, res=1 / 120)

    insp = inspect_location(f"{base}/pop.tif", Path("/nonexistent"))

    assert insp.kind == "raster"
    assert insp.guess == "population"
    assert insp.extent == pytest.approx((29.0, -2.0 - 200 / 120, 29.0 + 200 / 120, -2.0))


# -- STAC -------------------------------------------------------------------------------------

def write_stac(root: Path, *, item_assets: dict[str, Any], item_asset_hrefs: dict[str, str],
               keywords: list[str], title: str = "Test collection") -> Path:
    """A static collection.json with one item, written by hand."""
    collection = {
        "type": "Collection", "stac_version": "1.0.0", "id": "test-coll",
        "title": title, "description": "A collection for tests.\nSecond line.",
        "license": "CC-BY-4.0", "keywords": keywords,
        "providers": [{"name": "Test Agency", "roles": ["licensor", "producer"],
                       "url": "https://example.org/agency"},
                      {"name": "Host", "roles": ["host"]}],
        "extent": {"spatial": {"bbox": [[29.0, -2.3, 29.3, -2.0]]},
                   "temporal": {"interval": [["2021-04-22T00:00:00Z", None]]}},
        "item_assets": item_assets,
        "links": [{"rel": "self", "href": "./collection.json"},
                  {"rel": "item", "href": "./item-1/item-1.json"}],
    }
    assets = {key: {**item_assets.get(key, {}), "href": href}
              for key, href in item_asset_hrefs.items()}
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "item-1", "collection": "test-coll",
        "geometry": None, "bbox": [29.0, -2.3, 29.3, -2.0],
        "properties": {"datetime": "2021-04-22T00:00:00Z", "proj:epsg": 4326},
        "links": [], "assets": assets,
    }
    (root / "item-1").mkdir(parents=True, exist_ok=True)
    (root / "item-1" / "item-1.json").write_text(json.dumps(item))
    (root / "collection.json").write_text(json.dumps(collection))
    return root / "collection.json"


GEOTIFF = "image/tiff; application=geotiff; profile=cloud-optimized"


def test_static_stac_collection(tmp_path: Path) -> None:
    write_raster(tmp_path / "stac" / "item-1" / "dem.tif", gaussian_hills(), west=29.0,
                 north=-2.0, res=0.001)
    write_stac(tmp_path / "stac",
               item_assets={"data": {"type": GEOTIFF, "roles": ["data"],
                                     "raster:bands": [{"data_type": "float32",
                                                       "unit": "metre"}]},
                            "thumbnail": {"type": "image/png", "roles": ["thumbnail"]}},
               item_asset_hrefs={"data": "./dem.tif", "thumbnail": "./dem.png"},
               keywords=["Elevation", "DEM"])

    insp = inspect_location("stac/collection.json", tmp_path)

    assert insp.kind == "stac"
    assert insp.collection == "test-coll"
    assert insp.asset == "data"
    assert insp.temporal_extent == ("2021-04-22T00:00:00Z", None)
    assert insp.license == "CC-BY-4.0"
    assert insp.providers == ("Test Agency", "Host")
    assert insp.extent == (29.0, -2.3, 29.3, -2.0)
    assert insp.tile_count == 1
    assert insp.guess == "dem"
    assert "keywords" in insp.reason and "pixels agree" in insp.reason
    assert insp.units == "m"
    # Read from the first item's raster, not only from the metadata.
    assert (insp.dtype, insp.crs) == ("float32", "EPSG:4326")
    assert insp.sample is not None and insp.sample.pixels == 300 * 300
    assert insp.resolution_m == pytest.approx(
        (0.001 * deg_lon_m(-2.15), 0.001 * deg_lat_m(-2.15)), rel=1e-4)


def test_stac_asset_chosen_by_role_and_type_when_there_is_no_data_key(tmp_path: Path) -> None:
    write_raster(tmp_path / "item-1" / "pop.tif", population(), west=29.0, north=-2.0,
                 res=1 / 120)
    write_stac(tmp_path,
               item_assets={"preview": {"type": "image/png", "roles": ["data"]},
                            "people": {"type": "image/tiff; application=geotiff",
                                       "roles": ["data"]}},
               item_asset_hrefs={"preview": "./pop.png", "people": "./pop.tif"},
               keywords=[], title="Untitled")

    insp = inspect_location(str(tmp_path / "collection.json"), Path("/nonexistent"))

    assert insp.asset == "people"
    assert insp.guess == "population"
    assert insp.reason.startswith("the first item's pixels")


def test_choose_asset_reads_item_assets_and_the_role_misspelling() -> None:
    assert choose_asset({"x": {"type": GEOTIFF, "roles": ["data"]}, "data": {}}) == "data"
    assert choose_asset({"mask": {"type": GEOTIFF, "role": ["mask"]},
                         "dem": {"type": GEOTIFF, "role": ["data"]}}) == "dem"
    assert choose_asset({"kml": {"type": "application/vnd.google-earth.kml+xml",
                                 "roles": ["data"]}}) is None


def test_stac_metadata_alone_when_the_asset_is_not_reachable(tmp_path: Path) -> None:
    write_stac(tmp_path,
               item_assets={"data": {"type": GEOTIFF, "roles": ["data"], "gsd": 100,
                                     "raster:bands": [{"data_type": "float32",
                                                       "nodata": -9999}]}},
               item_asset_hrefs={"data": "./missing.tif"},
               keywords=["Population", "people"])

    insp = inspect_location("collection.json", tmp_path)

    assert insp.guess == "population"
    assert insp.sample is None
    assert (insp.dtype, insp.nodata, insp.crs) == ("float32", -9999, "EPSG:4326")
    assert insp.resolution_m == (100.0, 100.0)
    assert any("missing.tif" in n for n in insp.notes)


def test_stac_collection_over_http(http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    write_raster(root / "c" / "item-1" / "dem.tif", gaussian_hills(), west=29.0, north=-2.0,
                 res=0.001)
    write_stac(root / "c", item_assets={"data": {"type": GEOTIFF, "roles": ["data"]}},
               item_asset_hrefs={"data": "./dem.tif"}, keywords=[])

    insp = inspect_location(f"{base}/c/collection.json", Path("/nonexistent"))

    assert (insp.kind, insp.collection, insp.asset) == ("stac", "test-coll", "data")
    assert insp.guess == "dem"  # from the pixels read through /vsicurl/
    assert insp.sample is not None


# -- STAC API through pystac-client (a stand-in module: no network, no dependency) ---------

class _FakeStacObject:
    def __init__(self, d: dict[str, Any]) -> None:
        self._d = d

    def to_dict(self) -> dict[str, Any]:
        return self._d


def fake_pystac_client(collections: dict[str, dict[str, Any]],
                       items: list[dict[str, Any]]) -> types.ModuleType:
    opened: list[str] = []

    class Search:
        def items(self):  # type: ignore[no-untyped-def]
            return iter([_FakeStacObject(i) for i in items[:1]])

        def matched(self) -> int:
            return len(items)

    class Client:
        def __init__(self, url: str) -> None:
            self.url = url

        @classmethod
        def open(cls, url: str) -> Client:
            if "unreachable" in url:
                raise ConnectionError(f"cannot connect to {url}")
            opened.append(url)
            return cls(url)

        def get_collection(self, cid: str) -> _FakeStacObject | None:
            if cid == "boom":
                raise RuntimeError("404 Not Found: collection boom")
            return _FakeStacObject(collections[cid]) if cid in collections else None

        def search(self, *, collections: list[str], max_items: int) -> Search:
            assert max_items == 1
            return Search()

    module = types.ModuleType("pystac_client")
    module.Client = Client  # type: ignore[attr-defined]
    module.opened = opened  # type: ignore[attr-defined]
    return module


def test_stac_api_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dem = write_raster(tmp_path / "dem.tif", gaussian_hills(), west=29.0, north=-2.0,
                       res=0.001)
    coll = {"type": "Collection", "id": "cop-dem-glo-30", "title": "Copernicus DEM GLO-30",
            "license": "proprietary", "keywords": ["DEM"],
            "providers": [{"name": "ESA", "roles": ["licensor"]}],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [["2021-04-22T00:00:00Z",
                                                  "2021-04-22T00:00:00Z"]]}},
            "item_assets": {"data": {"type": GEOTIFF, "roles": ["data"]}}, "links": []}
    item = {"type": "Feature", "id": "i1", "properties": {},
            "assets": {"data": {"href": str(dem), "type": GEOTIFF, "roles": ["data"]}}}
    module = fake_pystac_client({"cop-dem-glo-30": coll}, [item, item, item])
    monkeypatch.setitem(sys.modules, "pystac_client", module)

    location = "https://example.test/api/v1#collection=cop-dem-glo-30"
    insp = inspect_location(location, tmp_path)

    assert module.opened == ["https://example.test/api/v1"]  # type: ignore[attr-defined]
    assert (insp.kind, insp.collection, insp.asset) == ("stac", "cop-dem-glo-30", "data")
    assert insp.tile_count == 3
    assert insp.temporal_extent == ("2021-04-22T00:00:00Z", "2021-04-22T00:00:00Z")
    assert insp.guess == "dem"
    assert insp.sample is not None

    doc = yaml.safe_load(to_source_yaml(insp, source_id="cop-dem-glo-30", location=location))
    assert doc["stac"] == {"url": "https://example.test/api/v1",
                           "collection": "cop-dem-glo-30", "asset": "data", "signer": "none"}


def test_stac_api_collection_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pystac_client", fake_pystac_client({}, []))

    with pytest.raises(SourceError, match="'nope' not found at 'https://example.test/api'"):
        inspect_location("https://example.test/api#collection=nope", Path("."))
    with pytest.raises(SourceError, match="cannot get STAC collection 'boom'.*404") as err:
        inspect_location("https://example.test/api#collection=boom", Path("."))
    assert err.value.hint and "collections" in err.value.hint
    with pytest.raises(SourceError, match="cannot open STAC API"):
        inspect_location("https://unreachable.test/api#collection=x", Path("."))


def test_stac_api_without_pystac_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pystac_client", None)  # import now fails

    with pytest.raises(MissingExtra) as err:
        inspect_location("https://example.test/api#collection=x", Path("."))
    assert (err.value.extra, err.value.exit_code) == ("stac", 78)
    assert str(err.value) == ("h3pipe needs the 'stac' extra for a STAC API: "
                              "pip install 'h3pipe[stac]'")


# -- source YAML --------------------------------------------------------------------------

@pytest.mark.parametrize("maker, name, guess, theme", [
    (lambda p: write_raster(p, gaussian_hills(), west=29.0, north=-2.0, res=0.001),
     "hills.tif", "dem", "terrain"),
    (lambda p: write_raster(p, int16_dem(), west=29.0, north=-2.0, res=0.001, nodata=-32768),
     "dem16.tif", "dem", "terrain"),
    (lambda p: write_raster(p, categorical(), west=29.0, north=-2.0, res=0.0001),
     "lc.tif", "landcover", "landcover"),
    (lambda p: write_rgb(p), "rgb.tif", "rgb", "other"),
    (lambda p: write_raster(p, population(), west=29.0, north=-2.0, res=1 / 120),
     "pop.tif", "population", "demographics"),
    (lambda p: write_raster(p, np.full((9, 9), 5, "float32"), west=0, north=1, res=0.1),
     "const.tif", "unknown", "other"),
])
def test_raster_yaml_validates_against_the_source_schema(
        tmp_path: Path, maker: Any, name: str, guess: str, theme: str) -> None:
    maker(tmp_path / name)
    insp = inspect_location(name, tmp_path)
    assert insp.guess == guess

    text = to_source_yaml(insp, source_id=suggest_source_id(insp), location=name)
    doc = validate_source(text)

    assert doc["kind"] == "raster"
    assert doc["path"] == name
    assert doc["theme"] == theme
    assert doc["recommended"]["stats"] == list(insp.stats)
    assert "# inferred:" in text
    assert "nodata" not in doc  # the file's own value applies; written as a comment only


def test_raster_yaml_details(tmp_path: Path) -> None:
    write_raster(tmp_path / "utm.tif", gaussian_hills(200), west=500000.0, north=9000000.0,
                 res=30.0, crs="EPSG:32735", nodata=-9999)
    insp = inspect_location("utm.tif", tmp_path)

    text = to_source_yaml(insp, source_id="my-dem", location="*.tif")
    doc = validate_source(text)

    assert doc["id"] == "my-dem"
    assert doc["path"] == "*.tif"  # quoted in the YAML: a bare '*' starts an alias
    assert doc["units"] == "m"
    assert doc["band"] == 1
    assert doc["recommended"]["resolutions"] == [4, 9]
    assert "3 x 30 m" in text  # the rule behind the resolutions is explained
    assert "-9999 is declared" in text


def test_stac_yaml_has_the_stac_mapping(tmp_path: Path) -> None:
    write_stac(tmp_path,
               item_assets={"data": {"type": GEOTIFF, "roles": ["data"], "gsd": 30}},
               item_asset_hrefs={"data": "./missing.tif"}, keywords=["elevation"])
    insp = inspect_location("collection.json", tmp_path)

    text = to_source_yaml(insp, source_id="test-coll", location="stac/collection.json")
    doc = yaml.safe_load(text)

    assert doc["kind"] == "stac"
    assert doc["stac"] == {"url": "stac/collection.json", "collection": "test-coll",
                           "asset": "data", "signer": "none"}
    assert "path" not in doc
    assert doc["theme"] == "terrain"
    assert doc["title"] == "Test collection"
    assert doc["description"] == "A collection for tests. Second line."
    assert doc["license"] == "CC-BY-4.0"
    assert doc["provenance"] == {"provider": "Test Agency, Host",
                                 "url": "https://example.org/agency"}
    assert doc["recommended"] == {"stats": ["mean", "min", "max", "stdev"],
                                  "resolutions": [4, 9]}
    # Everything but the STAC part is what a raster source allows.
    raster_like = {k: v for k, v in doc.items() if k != "stac"}
    Draft202012Validator(SCHEMA).validate({**raster_like, "kind": "raster", "path": "x.tif"})


def test_planetary_computer_yaml_asks_for_signing() -> None:
    insp = Inspection(location="x", kind="stac", collection="cop-dem-glo-30", asset="data")
    location = "https://planetarycomputer.microsoft.com/api/stac/v1#collection=cop-dem-glo-30"

    doc = yaml.safe_load(to_source_yaml(insp, source_id="cop-dem-glo-30", location=location))

    assert doc["stac"]["signer"] == "planetary_computer"
    assert doc["stac"]["url"] == "https://planetarycomputer.microsoft.com/api/stac/v1"


@pytest.mark.parametrize("location, expected", [
    ("tiles/*.tif", "tiles"), ("tiles/dem_*.tif", "dem"), ("https://x.org/a/Pop_2020.tif",
                                                          "pop_2020"),
    ("*.tif", "source"), ("My File.TIF", "my-file"),
])
def test_suggest_source_id(location: str, expected: str) -> None:
    assert suggest_source_id(Inspection(location=location, kind="raster")) == expected


# -- errors -------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot inspect 'nope.tif': file not found") as err:
        inspect_location("nope.tif", tmp_path)
    assert err.value.hint
    assert isinstance(err.value, (H3PipeError, OSError))


def test_glob_without_matches(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"'tiles/\*.tif': no file matches"):
        inspect_location("tiles/*.tif", tmp_path)


def test_folder_is_not_a_raster(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a folder") as err:
        inspect_location(str(tmp_path), Path("."))
    assert err.value.hint and "*.tif" in err.value.hint


def test_corrupt_raster(tmp_path: Path) -> None:
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + b"not a tiff" * 20)

    with pytest.raises(SourceError, match=r"cannot open 'bad.tif' as a raster") as err:
        inspect_location("bad.tif", tmp_path)
    assert "\n" not in str(err.value)
    assert err.value.hint and "corrupt" in err.value.hint


def test_unreachable_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}/dem.tif"

    with pytest.raises(SourceError, match=re.escape(f"cannot open '{url}'")) as err:
        inspect_location(url, Path("."))
    assert err.value.hint and "reachable" in err.value.hint


def test_missing_url(http_dir: tuple[Path, str]) -> None:
    _, base = http_dir
    with pytest.raises(SourceError, match="404"):
        inspect_location(f"{base}/nope.tif", Path("."))
    with pytest.raises(SourceError, match=r"cannot fetch .*collection.json.*404"):
        inspect_location(f"{base}/nope/collection.json", Path("."))


def test_unreachable_stac_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}/collection.json"

    with pytest.raises(SourceError, match=re.escape(f"cannot fetch '{url}'")):
        inspect_location(url, Path("."))


def test_stac_file_errors(tmp_path: Path) -> None:
    (tmp_path / "item.json").write_text(json.dumps({"type": "Feature", "id": "x"}))
    (tmp_path / "broken.json").write_text("{not json")

    with pytest.raises(SourceError, match="STAC Feature, not a Collection"):
        inspect_location("item.json", tmp_path)
    with pytest.raises(SourceError, match="not valid JSON"):
        inspect_location("broken.json", tmp_path)
    with pytest.raises(SourceError, match="file not found"):
        inspect_location("nope/collection.json", tmp_path)
    with pytest.raises(SourceError, match="no collection id"):
        inspect_location("https://example.test/api#collection=", tmp_path)


# -- real third-party files (skipped without ../shared/data) --------------------------------

realdata = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")


@realdata
@pytest.mark.realdata
def test_real_pysheds_int16_dem() -> None:
    insp = inspect_location(str(SHARED_DATA / "dem/pysheds/dem.tif"), Path("."))

    assert insp.guess == "dem"
    assert (insp.dtype, insp.nodata, insp.crs) == ("int16", -32768, "EPSG:4326")
    assert insp.resolution_m is not None
    lat = (insp.extent[1] + insp.extent[3]) / 2  # type: ignore[index]
    assert insp.resolution_m[1] == pytest.approx(deg_lat_m(lat) / 1200, rel=1e-3)  # 3"


@realdata
@pytest.mark.realdata
def test_real_worldpop_burundi_is_population() -> None:
    insp = inspect_location(str(SHARED_DATA / "population/burundi_worldpop.tif"), Path("."))

    assert insp.guess == "population"
    assert (insp.dtype, insp.nodata) == ("uint16", 65535)
    assert insp.stats == ("sum",)
    validate_source(to_source_yaml(insp, source_id="burundi", location="burundi.tif"))


@realdata
@pytest.mark.realdata
@pytest.mark.parametrize("name", [
    "golden_datasets/los_angeles_tiles/los_angeles_tile_0.tif",
    "golden_datasets/fairbanks_tiles/fairbanks_tile_0.tif",
    "golden_datasets/los_angeles_dem_geoid.tif",
    "missing/glo_30_left.tif",
    "missing/glo_90_right.tif",
])
def test_real_copernicus_float_dems(name: str) -> None:
    insp = inspect_location(str(SHARED_DATA / "dem/dem-stitcher" / name), Path("."))

    assert insp.guess == "dem"
    assert insp.dtype == "float32"


@realdata
@pytest.mark.realdata
def test_real_fairbanks_pixels_are_twice_as_wide_as_tall_in_degrees() -> None:
    path = SHARED_DATA / "dem/dem-stitcher/golden_datasets/fairbanks_tiles/fairbanks_tile_0.tif"
    insp = inspect_location(str(path), Path("."))

    lat = (insp.extent[1] + insp.extent[3]) / 2  # type: ignore[index]
    assert insp.resolution_m == pytest.approx((deg_lon_m(lat) * 2 / 3600,
                                               deg_lat_m(lat) / 3600), rel=1e-3)


@realdata
@pytest.mark.realdata
def test_real_rgb_cog() -> None:
    assert inspect_location(str(SHARED_DATA / "dem/pysheds/cogeo.tiff"), Path(".")).guess \
        == "rgb"


@realdata
@pytest.mark.realdata
def test_real_copernicus_stac_collection() -> None:
    path = SHARED_DATA / "stac/stactools-cop-dem/examples/cop-dem-glo-30/collection.json"

    insp = inspect_location(str(path), Path("."))

    assert (insp.kind, insp.collection, insp.asset) == ("stac", "cop-dem-glo-30", "data")
    assert insp.guess == "dem"
    assert insp.resolution_m == (30.0, 30.0)  # gsd
    assert insp.resolutions == (4, 9)  # what the predecessor catalog chose by hand
    assert insp.units == "m"  # raster:bands unit "meter"
    assert insp.license == "proprietary"
    assert "European Space Agency" in insp.providers
    assert insp.temporal_extent == ("2021-04-22T00:00:00Z", "2021-04-22T00:00:00Z")
    doc = yaml.safe_load(to_source_yaml(insp, source_id="cop-dem-glo-30",
                                        location=str(path)))
    assert doc["stac"]["asset"] == "data"
