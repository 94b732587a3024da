"""STAC sources from static catalogs and stac-geoparquet: tiles found per run, mosaicked,
and checked cell by cell against exactextract on the unsplit raster."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from tests.conftest import write_project, write_raster, zonal_pipeline
from tests.zonal_reference import assert_same, reference

STATS = ["count", "sum", "mean", "min", "max", "stdev"]
WEST, NORTH, PX = 29.0, -1.9, 0.001
BBOX = "29.03,-2.17,29.17,-2.03"  # straddles the seams between the four tiles


def _split(big, out_dir, parts=2):
    """The big raster cut into parts x parts tiles on the same grid."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tiles = []
    with rasterio.open(big) as ds:
        h, w = ds.height // parts, ds.width // parts
        for i in range(parts):
            for j in range(parts):
                win = Window(j * w, i * h, w, h)
                path = out_dir / f"t{i}{j}.tif"
                prof = ds.profile | {"width": w, "height": h,
                                     "transform": ds.window_transform(win)}
                with rasterio.open(path, "w", **prof) as dst:
                    dst.write(ds.read(1, window=win), 1)
                tiles.append(path)
    return tiles


def _item(path, *, with_proj=True, href=None):
    with rasterio.open(path) as ds:
        b = ds.bounds
        props = {"datetime": "2021-04-22T00:00:00Z"}
        asset = {"href": href or path.name, "type": "image/tiff", "roles": ["data"]}
        if with_proj:
            props |= {"proj:code": "EPSG:4326", "proj:shape": [ds.height, ds.width],
                      "proj:transform": list(ds.transform)[:6]}
            asset["raster:bands"] = [{"data_type": ds.dtypes[0]}]
    return {"type": "Feature", "stac_version": "1.0.0", "id": path.stem,
            "collection": "dem", "bbox": [b.left, b.bottom, b.right, b.top],
            "geometry": shapely.geometry.mapping(shapely.box(*b)), "properties": props,
            "links": [], "assets": {"data": asset}}


def _static(dir_, tiles, **kw):
    """collection.json beside the tiles, items in items/, hrefs relative to each item."""
    (dir_ / "items").mkdir(parents=True, exist_ok=True)
    links = [{"rel": "root", "href": "./collection.json"},
             {"rel": "self", "href": "./collection.json"}]
    for t in tiles:
        item = _item(t, href=f"../{t.name}", **kw)
        item["links"] = [{"rel": "collection", "href": "../collection.json"},
                         {"rel": "root", "href": "../collection.json"},
                         {"rel": "parent", "href": "../collection.json"}]
        (dir_ / "items" / f"{t.stem}.json").write_text(json.dumps(item))
        links.append({"rel": "item", "href": f"./items/{t.stem}.json"})
    coll = {"type": "Collection", "stac_version": "1.0.0", "id": "dem", "description": "d",
            "license": "proprietary", "links": links,
            "extent": {"spatial": {"bbox": [[29.0, -2.2, 29.2, -1.9]]},
                       "temporal": {"interval": [["2021-04-22T00:00:00Z", None]]}}}
    path = dir_ / "collection.json"
    path.write_text(json.dumps(coll))
    return path


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(11)
    data = (rng.normal(1500, 80, (300, 300))).astype("float32")
    data[140:170, 100:200] = np.nan
    big = write_raster(tmp_path / "big.tif", data, west=WEST, north=NORTH, res=PX)
    tiles = _split(big, tmp_path / "tiles")
    return big, tiles


def _stac_source(url, **extra):
    lines = ["id: dem", "kind: stac", "theme: terrain", "stac:", f"  url: '{url}'",
             "  collection: dem", "  signer: none"]
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def _run(cli, proj, tmp_path, bbox=BBOX):
    r = cli("--project", proj, "run", "p", "--bbox", bbox, "--workers", "2",
            "--batch-size", "40")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "o.parquet"
    assert cli("--project", proj, "export", "ds", "-o", out).exit_code == 0
    return {row["h3_index"]: row for row in pq.read_table(out).to_pylist()}


@pytest.mark.parametrize("with_proj", [True, False])
def test_static_collection_equals_exactextract_on_the_unsplit_raster(tmp_path, cli, scene,
                                                                     with_proj):
    big, tiles = scene
    coll = _static(tmp_path / "tiles", tiles, with_proj=with_proj)
    proj = write_project(tmp_path / "proj", sources={"dem": _stac_source(coll)},
                         pipelines={"p": zonal_pipeline("p", "dem", STATS)})
    actual = _run(cli, proj, tmp_path)
    with rasterio.open(big) as ds:
        expected = reference(ds, list(actual), STATS)
    assert_same(actual, expected, STATS)
    # Cells on the seams saw both sides: a one-tile computation would differ.
    seam = [c for c in actual if shapely.Polygon(
        [(lo, la) for la, lo in __import__("h3").cell_to_boundary(c)]).intersects(
        shapely.LineString([(WEST + 0.15, NORTH), (WEST + 0.15, NORTH - 0.3)]))]
    assert len(seam) >= 3
    with rasterio.open(tiles[0]) as ds:
        one = reference(ds, seam, ["count"])
    assert any(one[c]["count"] < actual[c]["count"] - 1 for c in seam)
    # The run recorded the four items it used.
    shown = cli("--project", proj, "runs", "show", "latest").stdout
    assert "items:      dem: t00, t01, t10, t11" in shown


def test_stac_geoparquet_gives_the_same_numbers(tmp_path, cli, scene):
    big, tiles = scene
    rows = []
    for t in tiles:
        item = _item(t, href=str(t))
        b = item["bbox"]
        rows.append({"id": item["id"], "collection": "dem",
                     "bbox": {"xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]},
                     "proj:code": "EPSG:4326", "proj:shape": item["properties"]["proj:shape"],
                     "proj:transform": item["properties"]["proj:transform"],
                     "assets": {"data": {"href": str(t),
                                         "raster:bands": [{"data_type": "float32"}]}}})
    gpq = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pylist(rows), gpq)
    proj = write_project(tmp_path / "proj", sources={"dem": _stac_source(gpq)},
                         pipelines={"p": zonal_pipeline("p", "dem", STATS)})
    actual = _run(cli, proj, tmp_path)
    with rasterio.open(big) as ds:
        assert_same(actual, reference(ds, list(actual), STATS), STATS)


def test_wrong_item_metadata_is_caught_when_reading(tmp_path, cli, scene):
    _, tiles = scene
    coll = _static(tmp_path / "tiles", tiles)
    item_file = tmp_path / "tiles" / "items" / "t00.json"
    item = json.loads(item_file.read_text())
    item["properties"]["proj:transform"][2] += 0.05  # claims to lie 50 pixels east
    item_file.write_text(json.dumps(item))
    proj = write_project(tmp_path / "proj", sources={"dem": _stac_source(coll)},
                         pipelines={"p": zonal_pipeline("p", "dem", STATS)})
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code in (1, 2)
    last = r.stderr.strip().splitlines()[-1]
    assert "not where its metadata puts it" in last or "not aligned" in last


@pytest.mark.parametrize("url, collection, bbox, message, code", [
    ("{coll}", "dem", "10,10,10.1,10.1", "no item intersects bbox", 2),
    ("{coll}", "other", BBOX, "has no collection 'other'", 2),
    ("{tmp}/missing.json", "dem", BBOX, "cannot be read", 2),
    # A server that is not there is a failure of the moment (exit 1), named as such.
    ("http://127.0.0.1:9/api", "dem", BBOX, "connection refused from 127.0.0.1:9 after", 1),
])
def test_search_failures_are_one_line_errors(tmp_path, cli, scene, url, collection, bbox,
                                              message, code):
    _, tiles = scene
    coll = _static(tmp_path / "tiles", tiles)
    src = _stac_source(url.format(coll=coll, tmp=tmp_path)).replace(
        "collection: dem", f"collection: {collection}")
    proj = write_project(tmp_path / "proj", sources={"dem": src},
                         pipelines={"p": zonal_pipeline("p", "dem", STATS)})
    r = cli("--project", proj, "run", "p", "--bbox", bbox, "--workers", "1")
    assert r.exit_code == code, r.stderr
    assert message in r.stderr and "source 'dem'" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_plan_sums_the_sizes_the_items_state(tmp_path, cli, scene):
    _, tiles = scene
    coll = _static(tmp_path / "tiles", tiles)
    # Each item states a size of its own, unlike the file's: the plan must use the item's.
    for i, t in enumerate(tiles):
        path = tmp_path / "tiles" / "items" / f"{t.stem}.json"
        item = json.loads(path.read_text())
        item["assets"]["data"]["file:size"] = 1000 + i
        path.write_text(json.dumps(item))
    proj = write_project(tmp_path / "proj", sources={"dem": _stac_source(coll)},
                         pipelines={"p": zonal_pipeline("p", "dem", STATS)})
    # A box in the north-western tile only.
    r = cli("--project", proj, "plan", "p", "--bbox", "29.01,-2.04,29.14,-1.91", "--format",
            "json")
    assert r.exit_code == 0, r.stderr
    [src] = json.loads(r.stdout)["sources"]
    assert src["kind"] == "stac" and src["files"] == 1
    assert src["bytes"] == 1000 and src["bytes_how"] == "STAC asset sizes (file:size)"
