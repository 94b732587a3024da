"""STAC sources against a real STAC API: items found by search per run, read over HTTP
range requests, and checked cell by cell against exactextract on a mosaic of the tiles."""

from __future__ import annotations

import h3
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from exactextract.raster import NumPyRasterSource
from rasterio.merge import merge

from h3pipe.demo.copdem import tiles_for_bbox
from tests.conftest import write_project, zonal_pipeline
from tests.stac_server import empty_collection
from tests.zonal_reference import assert_same, reference

STATS = ["count", "sum", "mean", "min", "max", "stdev"]
# Straddles the corner where four of the fixture's 1-degree tiles meet (lon 29/30, lat -2).
BBOX = (29.85, -2.12, 30.12, -1.88)


def _source(url, collection):
    return (f"id: dem\nkind: stac\ntheme: terrain\nnodata: -32767\n"
            f"stac: {{url: '{url}', collection: {collection}, asset: data, signer: none}}\n")


def test_api_source_equals_exactextract_on_a_mosaic(stac_api, tmp_path, cli):
    proj = write_project(tmp_path / "p", sources={"dem": _source(stac_api.url,
                                                                 stac_api.collection)},
                         pipelines={"p": zonal_pipeline("p", "dem", STATS, resolution=7)})
    bbox = ",".join(map(str, BBOX))
    r = cli("--project", proj, "run", "p", "--bbox", bbox, "--workers", "2",
            "--batch-size", "30")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "o.parquet"
    assert cli("--project", proj, "export", "ds", "-o", out).exit_code == 0
    actual = {row["h3_index"]: row for row in pq.read_table(out).to_pylist()}

    # Independently: the four tiles the bbox touches, merged by rasterio, voids masked.
    wanted = {f"Copernicus_DSM_COG_10_{'S' if lat < 0 else 'N'}{abs(lat):02d}_00_"
              f"{'E' if lon >= 0 else 'W'}{abs(lon):03d}_00_DEM" for lon, lat in
              tiles_for_bbox(BBOX)}
    assert len(wanted) == 4
    arr, tr = merge([str(stac_api.tiles[i]) for i in sorted(wanted)])
    values = arr[0].astype("float64")
    values[values == -32767] = float("nan")
    h, w = values.shape
    src = NumPyRasterSource(values, tr.c, tr.f + h * tr.e, tr.c + w * tr.a, tr.f)
    assert_same(actual, reference(src, list(actual), STATS), STATS)

    # Cells on the tile edges exist, and the run recorded exactly the four items.
    edges = [c for c in actual if shapely.Polygon(
        [(lo, la) for la, lo in h3.cell_to_boundary(c)]).intersects(
        shapely.LineString([(30.0, -3), (30.0, -1)]))]
    assert len(edges) >= 3
    shown = cli("--project", proj, "runs", "show", "latest").stdout
    for item in wanted:
        assert item in shown


def test_empty_collection_and_unknown_collection(stac_api, tmp_path, cli):
    coll = empty_collection(stac_api, "nothing-here")
    for collection, message in ((coll, "no item intersects bbox"),
                                ("no-such-collection", "has no collection")):
        proj = write_project(tmp_path / collection,
                             sources={"dem": _source(stac_api.url, collection)},
                             pipelines={"p": zonal_pipeline("p", "dem", STATS)})
        r = cli("--project", proj, "run", "p", "--bbox", ",".join(map(str, BBOX)))
        assert r.exit_code == 2, r.stderr
        assert message in r.stderr and collection in r.stderr
        assert r.stderr.count("\n") == 1


def test_items_are_read_through_http_ranges(stac_api):
    with rasterio.open(f"{stac_api.cog_url}/{stac_api.items[0]}.tif") as ds:
        assert ds.read(1, window=((0, 8), (0, 8))).shape == (8, 8)


def test_a_sweep_fills_the_stac_search_per_scenario(stac_api, tmp_path, cli):
    """A dimension in the STAC datetime: each scenario is its own search. 2021 finds the
    items and equals the plain source; 1999 finds none, so it is skipped and said."""
    sweep = (f"id: sweep\nkind: stac\ntheme: terrain\nnodata: -32767\n"
             f"dimensions: {{epoch: [2021, 1999]}}\n"
             f"stac: {{url: '{stac_api.url}', collection: {stac_api.collection}, "
             "asset: data, signer: none, "
             "datetime: '{epoch}-01-01T00:00:00Z/{epoch}-12-31T23:59:59Z'}\n")
    proj = write_project(tmp_path / "p", sources={
        "dem": _source(stac_api.url, stac_api.collection), "sweep": sweep},
        pipelines={"p": zonal_pipeline("p", "dem", STATS, resolution=7),
                   "s": zonal_pipeline("s", "sweep", STATS, resolution=7, dataset="sw")})
    bbox = ",".join(map(str, BBOX))
    plain = cli("--project", proj, "run", "p", "--bbox", bbox)
    swept = cli("--project", proj, "run", "s", "--bbox", bbox)
    assert plain.exit_code == 0 and swept.exit_code == 0, swept.stderr
    assert f"skipped: 1 scenario(s) of sweep with no data in bbox {bbox}: 1999" in swept.stderr
    rows = {}
    for ds in ("ds", "sw"):
        out = tmp_path / f"{ds}.parquet"
        assert cli("--project", proj, "export", ds, "-o", out).exit_code == 0
        rows[ds] = pq.read_table(out).to_pylist()
    assert {r["scenario"] for r in rows["sw"]} == {"2021"}
    assert [{k: r[k] for k in ("h3_index", *STATS)} for r in rows["sw"]] == \
        [{k: r[k] for k in ("h3_index", *STATS)} for r in rows["ds"]]


def test_more_bands_than_the_items_have_fails_naming_the_file(stac_api, tmp_path, cli):
    two = (f"id: two\nkind: stac\ntheme: terrain\nbands: [first, second]\n"
           f"stac: {{url: '{stac_api.url}', collection: {stac_api.collection}, "
           "asset: data, signer: none}\n")
    proj = write_project(tmp_path / "p", sources={"two": two},
                         pipelines={"p": zonal_pipeline("p", "two", ["mean"], resolution=6)})
    r = cli("--project", proj, "run", "p", "--bbox", ",".join(map(str, BBOX)))
    assert r.exit_code == 1, r.stderr
    assert "has 1 band(s), the source asks for band 2" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def test_a_scope_across_the_antimeridian_finds_and_reads_the_items_on_both_sides(
        stac_api, tmp_path, cli):
    """Two tiles at either end of the world, E179 and W180, in a collection of their own;
    a scope across 180 finds both by two searches and reads them as one strip."""
    import numpy as np

    from h3pipe.demo.copdem import generate_tiles
    from h3pipe.demo.stac import collection_dict, item_dict
    from tests.stac_server import TILE_SIZE, _load

    served = next(iter(stac_api.tiles.values())).parent  # the COG server's folder
    east, = generate_tiles(served, (179.2, -0.8, 179.8, -0.2), size=TILE_SIZE)
    west, = generate_tiles(served, (-179.8, -0.8, -179.2, -0.2), size=TILE_SIZE)
    items = [item_dict(p, f"{stac_api.cog_url}/{p.name}", collection_id="dem-am")
             for p in (east, west)]
    _load(stac_api.dsn, [collection_dict(items, collection_id="dem-am")], items, migrate=False)
    proj = write_project(tmp_path / "p", sources={"dem": _source(stac_api.url, "dem-am")},
                         pipelines={"p": zonal_pipeline("p", "dem", STATS, resolution=7)})
    r = cli("--project", proj, "run", "p", "--bbox", "179.85,-0.6,-179.85,-0.4")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "o.parquet"
    assert cli("--project", proj, "export", "ds", "-o", out).exit_code == 0
    actual = {row["h3_index"]: row for row in pq.read_table(out).to_pylist()}
    lngs = [h3.cell_to_latlng(c)[1] for c in actual]
    assert min(lngs) < -179.9 and max(lngs) > 179.9

    # Independently: the two tiles side by side, W180 moved to 180..181, and the cells'
    # western vertices moved by +360 to match.
    with rasterio.open(east) as e, rasterio.open(west) as w:
        values = np.hstack([e.read(1), w.read(1)]).astype("float64")
        left, top = e.transform.c, e.transform.f
        assert w.transform.c + 360 == pytest.approx(left + e.width * e.transform.a)
    values[values == -32767] = float("nan")
    h, wd = values.shape
    src = NumPyRasterSource(values, left, top - h / TILE_SIZE, left + wd / TILE_SIZE, top)
    features = [{"type": "Feature", "properties": {"cell": c}, "geometry": {
        "type": "Polygon", "coordinates": [[[lo + 360 if lo < 0 else lo, la] for la, lo in
                                            [*h3.cell_to_boundary(c),
                                             h3.cell_to_boundary(c)[0]]]]}}
                for c in actual]
    assert_same(actual, reference(src, list(actual), STATS, features=features), STATS)
    shown = cli("--project", proj, "runs", "show", "latest").stdout
    assert east.stem in shown and west.stem in shown
