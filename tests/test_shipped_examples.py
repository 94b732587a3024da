"""The examples the repository ships, run on small stand-ins: ``pipelines/`` and ``sources/``
files copied verbatim into a project, their sources pointed at data that ``h3pipe.demo``
generates here, through the variables their paths read (``FATHOM``, ``BUILDINGS``,
``WORLDPOP``), as ``make demo-fathom`` and ``make demo-flood`` do. Every published value
is recomputed in the test without h3pipe: rasterio for the pixel under each building and
for the raster's totals, shapely for pixel coverage, h3-py for cells, and exactextract
called directly on h3-py's cell polygons (tests/zonal_reference.py).

- building_flood_exposure_fathom: the whole 39 x 8 sweep over a 0.3 x 0.2 degree box
  (2,000 buildings, two 1-degree tiles per scenario, a lake of nodata in its west).
- population at resolutions 5-7 over a box inside a stand-in WorldPop raster: each cell's
  sum, density and coverage, and the conservation of people over the cells.
"""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
import yaml
from rasterio.transform import rowcol

import h3pipe
from h3pipe.cli import main
from h3pipe.demo import fathom, flood
from tests.zonal_reference import assert_same, reference

REPO = Path(__file__).resolve().parents[1]
FLOOD_BOX = (29.15, -2.1, 29.45, -1.9)  # across the S02/S03 tile edge; Kivu's nodata west
FLOOD_SCOPE = "bbox:" + ",".join(map(str, FLOOD_BOX))
POP_RASTER = (29.05, -2.4, 29.65, -1.9)  # res-5 cells reach past it
POP_BOX = (29.1, -2.35, 29.6, -1.95)
POP_SCOPE = "bbox:" + ",".join(map(str, POP_BOX))


def _project(root: Path, *files: str) -> Path:
    """A project of the repository's own files, copied byte for byte."""
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, root / name)
        assert (root / name).read_bytes() == (REPO / name).read_bytes()
    return root


def _shipped(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / name).read_text())


def _polyfill(box: tuple[float, float, float, float], resolution: int) -> set[str]:
    west, south, east, north = box
    shape = h3.LatLngPoly([(south, west), (south, east), (north, east), (north, west)])
    return set(h3.h3shape_to_cells(shape, resolution))


# -- building_flood_exposure_fathom ------------------------------------------------------

FATHOM_PIPELINE = "pipelines/building_flood_exposure_fathom.yaml"
FATHOM_SOURCE = "sources/fathom-flood.yaml"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The sweep run once over the stand-in (in this process: the pool a default run starts
    costs more than these 2,000 buildings)."""
    tmp = tmp_path_factory.mktemp("fathom")
    buildings = flood.generate(tmp / "flood", FLOOD_BOX, count=2000)[2]
    fathom.generate(tmp / "fathom", FLOOD_BOX)
    root = _project(tmp / "proj", FATHOM_SOURCE, "sources/buildings.yaml", FATHOM_PIPELINE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FATHOM", str(tmp / "fathom"))
        mp.setenv("BUILDINGS", str(buildings))
        project = h3pipe.Project(root)
        result = project.run("building_flood_exposure_fathom", FLOOD_SCOPE, workers=1)
        yield {"project": project, "root": root, "result": result,
               "expected": _exposure(buildings, tmp / "fathom")}


def _exposure(buildings: Path, folder: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(scenario, return period, cell) -> buildings, flooded, share and mean depth, from the
    files alone: each building's centroid, the pixel under it in its scenario's tile
    (rasterio), the pipeline's own threshold and cell resolution, cells by h3-py."""
    pipeline, source = _shipped(FATHOM_PIPELINE), _shipped(FATHOM_SOURCE)
    resolution = pipeline["defaults"]["resolution"]
    flooded = next(a for a in pipeline["steps"][1]["params"]["aggregations"]
                   if a["name"] == "flooded_buildings")
    variable = pipeline["steps"][0]["params"]["name"]
    m = re.fullmatch(rf"\s*{variable}\s*>\s*([0-9.]+)\s*", flooded["where"])
    assert m, f"the test reads a threshold 'depth_m > X'; the pipeline says {flooded['where']}"
    threshold = float(m.group(1))

    geoms = shapely.from_wkb(pq.read_table(buildings, columns=["geometry"])
                             .column("geometry").to_numpy(zero_copy_only=False))
    x, y = shapely.get_coordinates(shapely.centroid(geoms)).T
    cells = np.array([h3.latlng_to_cell(lat, lng, resolution) for lng, lat in zip(x, y,
                                                                                  strict=True)])
    inside = np.isin(cells, list(_polyfill(FLOOD_BOX, resolution)))
    x, y, cells = x[inside], y[inside], cells[inside]
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for kind, year, ssp in fathom.scenarios():
        scenario = fathom.scenario_id(kind, year, ssp)
        depth = np.full((len(source["bands"]), len(x)), np.nan)
        found = np.zeros(len(x), bool)
        tiles = sorted((folder / kind / scenario).glob("*.tif"))
        assert len(tiles) == 2
        for tif in tiles:
            with rasterio.open(tif) as ds:
                b = ds.bounds
                here = (x >= b.left) & (x < b.right) & (y > b.bottom) & (y <= b.top)
                rows, cols = rowcol(ds.transform, x[here], y[here])
                values = ds.read()[:, rows, cols].astype(np.float64)
                depth[:, here] = np.where(values == ds.nodata, np.nan, values)
                found |= here
        assert found.all()  # every building over one of the scenario's tiles
        for k, band in enumerate(source["bands"]):
            for cell in np.unique(cells):
                d = depth[k, cells == cell]
                wet = d[d > threshold]  # NaN (nodata) is never wet, but is a building
                out[scenario, band, cell] = {
                    "buildings": len(d), "flooded_buildings": len(wet),
                    "share_flooded": len(wet) / len(d),
                    "mean_depth_when_flooded_m": float(wet.mean()) if len(wet) else None,
                    "nodata": int(np.isnan(d).sum())}
    return out


def _same(got: dict[str, Any], want: dict[str, Any], where: Any) -> None:
    for key in ("buildings", "flooded_buildings"):
        assert got[key] == want[key], (where, key, got[key], want[key])
    assert got["share_flooded"] == pytest.approx(want["share_flooded"], rel=1e-12), where
    if want["mean_depth_when_flooded_m"] is None:
        assert got["mean_depth_when_flooded_m"] is None, where
    else:  # float32 depths averaged in float64 both sides
        assert got["mean_depth_when_flooded_m"] == pytest.approx(
            want["mean_depth_when_flooded_m"], rel=1e-9), where


def test_the_sweep_publishes_every_scenario_and_return_period(sweep):
    source = _shipped(FATHOM_SOURCE)
    table = sweep["project"].dataset("building_flood_exposure_fathom", scope=FLOOD_SCOPE,
                                     resolution=7, layout="long")
    rows = table.to_pylist()
    pairs = {(r["scenario"], r["return_period"]) for r in rows}
    wanted = {(fathom.scenario_id(*s), band) for s in fathom.scenarios()
              for band in source["bands"]}
    assert len(wanted) == 39 * 8 == 312
    assert pairs == wanted
    cells = {c for _, _, c in sweep["expected"]}
    assert len(rows) == 312 * len(cells)  # one row per pair and cell with a building
    assert sweep["result"].cells == len(_polyfill(FLOOD_BOX, 7))
    for r in rows:  # each row's keys are its scenario's
        assert r["scenario"] == fathom.scenario_id(r["flood_type"], r["year"], r["ssp"])
    wide = sweep["project"].dataset("building_flood_exposure_fathom", scope=FLOOD_SCOPE,
                                    resolution=7)
    assert wide.num_rows == 39 * len(cells)
    for band in source["bands"]:
        for name in ("flooded_buildings", "share_flooded", "mean_depth_when_flooded_m"):
            assert f"{band}_{name}" in wide.column_names


def test_every_published_value_is_the_pixel_under_each_building(sweep):
    table = sweep["project"].dataset("building_flood_exposure_fathom", scope=FLOOD_SCOPE,
                                     resolution=7, layout="long")
    got = {(r["scenario"], r["return_period"], r["h3_index"]): r for r in table.to_pylist()}
    want = sweep["expected"]
    assert set(got) == set(want)
    for key, w in want.items():
        _same(got[key], w, key)
    # What was compared is not trivial: dry, wet and nodata buildings in one scope; the
    # defences hold the 1-in-5 flood that they do not hold undefended.
    assert sum(w["nodata"] for w in want.values()) > 0
    assert 0 < sum(w["flooded_buildings"] for w in want.values()) < sum(
        w["buildings"] for w in want.values())

    def flooded(scenario: str, band: str) -> int:
        return sum(w["flooded_buildings"] for (s, b, _), w in want.items()
                   if (s, b) == (scenario, band))

    assert flooded("fluvial_defended-2050-ssp245", "rp5") < flooded(
        "fluvial_undefended-2050-ssp245", "rp5")
    assert flooded("pluvial_defended-2080-ssp585", "rp1000") > 0


def test_export_where_gives_exactly_one_scenario_and_return_period(sweep, cli, tmp_path):
    """As 'make demo-fathom' exports it (--bbox for --iso3)."""
    out = tmp_path / "fluvial_undefended_2050_ssp245_rp100.csv"
    r = cli("--project", sweep["root"], "export", "building_flood_exposure_fathom", "--bbox",
            ",".join(map(str, FLOOD_BOX)), "--resolution", "7",
            "--where", "flood_type=fluvial_undefended", "--where", "year=2050",
            "--where", "ssp=ssp245", "--where", "return_period=rp100", "-o", out)
    assert r.exit_code == 0, r.stderr
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    want = {c: w for (s, b, c), w in sweep["expected"].items()
            if (s, b) == ("fluvial_undefended-2050-ssp245", "rp100")}
    assert sorted(r["h3_index"] for r in rows) == sorted(want)
    assert not [c for c in rows[0] if c.startswith("rp") and not c.startswith("rp100_")]
    for row in rows:
        assert (row["scenario"], row["flood_type"], row["year"], row["ssp"]) == (
            "fluvial_undefended-2050-ssp245", "fluvial_undefended", "2050", "ssp245")
        mean = row["rp100_mean_depth_when_flooded_m"]
        _same({"buildings": int(row["buildings"]),
               "flooded_buildings": int(row["rp100_flooded_buildings"]),
               "share_flooded": float(row["rp100_share_flooded"]),
               "mean_depth_when_flooded_m": float(mean) if mean else None},
              want[row["h3_index"]], row["h3_index"])
    assert any(w["flooded_buildings"] for w in want.values())


# -- population, resolutions 5-7 ---------------------------------------------------------

@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """population run as 'make demo-flood' runs it (--resolution 5-7), over a box inside
    the stand-in raster."""
    tmp = tmp_path_factory.mktemp("population")
    raster = flood.generate(tmp / "flood", POP_RASTER, count=10)[1]
    root = _project(tmp / "proj", "sources/worldpop.yaml", "pipelines/population.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORLDPOP", str(raster))
        assert main(["--project", str(root), "-q", "run", "population", "--bbox",
                     ",".join(map(str, POP_BOX)), "--resolution", "5-7"]) == 0
        yield {"project": h3pipe.Project(root), "raster": raster}


def _pixel_fractions(ds: Any, polygon: Any) -> np.ndarray:
    """The share of each pixel inside ``polygon`` on the lon/lat plane, by shapely: 1 for
    pixels within it, the intersection's area for those its outline crosses."""
    t = ds.transform
    rows, cols = np.indices(ds.shape)
    x0, y1 = t.c + cols * t.a, t.f + rows * t.e
    boxes = shapely.box(x0, y1 + t.e, x0 + t.a, y1)
    shapely.prepare(polygon)
    frac = shapely.contains(polygon, boxes).astype(np.float64)
    edge = shapely.intersects(polygon.boundary, boxes)
    frac[edge] = shapely.area(shapely.intersection(boxes[edge], polygon)) / abs(t.a * t.e)
    return frac


def _box_fractions(ds: Any, box: tuple[float, float, float, float]) -> np.ndarray:
    """The share of each pixel inside a lon/lat box, one axis at a time (numpy)."""
    t = ds.transform
    x0 = t.c + np.arange(ds.width) * t.a
    y1 = t.f + np.arange(ds.height) * t.e
    fx = np.clip(np.minimum(x0 + t.a, box[2]) - np.maximum(x0, box[0]), 0, None) / t.a
    fy = np.clip(np.minimum(y1, box[3]) - np.maximum(y1 + t.e, box[1]), 0, None) / -t.e
    return np.outer(fy, fx)


@pytest.mark.parametrize("resolution", [5, 6, 7])
def test_population_cells_hold_what_exactextract_and_the_raster_say(people, resolution):
    table = people["project"].dataset("population_worldpop", scope=POP_SCOPE,
                                      resolution=resolution)
    rows = {r["h3_index"]: r for r in table.to_pylist()}
    cells = _polyfill(POP_BOX, resolution)
    assert set(rows) == cells and len(cells) >= 5
    with rasterio.open(people["raster"]) as ds:
        expected = reference(ds, cells, ["count", "sum"])
        pixel_area = abs(ds.transform.a * ds.transform.e)
        values = ds.read(1).astype(np.float64)
        union = shapely.union_all([shapely.Polygon([(lng, lat) for lat, lng in
                                                    h3.cell_to_boundary(c)]) for c in cells])
        over_cells = float((values * _pixel_fractions(ds, union)).sum())
        in_box = float((values * _box_fractions(ds, POP_BOX)).sum())
        bounds = shapely.box(*ds.bounds)
    assert_same(rows, expected, ["sum"])
    partial = 0
    for cell, row in rows.items():
        polygon = shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])
        assert row["cell_area_km2"] == pytest.approx(h3.cell_area(cell, "km^2"), rel=1e-12)
        assert row["density"] == pytest.approx(row["sum"] / h3.cell_area(cell, "km^2"),
                                               rel=1e-9)
        assert row["coverage"] == pytest.approx(min(1.0, expected[cell]["count"]
                                                    / (polygon.area / pixel_area)), rel=1e-6)
        partial += not bounds.contains(polygon)
    # Conservation: no person lost or counted twice over the cells, against the raster's
    # own total over their union; the run's recorded figures are those totals too.
    total = sum(r["sum"] for r in rows.values())
    assert total == pytest.approx(over_cells, rel=1e-9)
    assert over_cells > 0.5 * in_box
    # One run computed the three resolutions (one read of the pixels), checked at each.
    run = next(r for r in people["project"].runs(pipeline="population")
               if resolution in (r.params.resolutions or [r.resolution]))
    (figures,) = [c for c in people["project"].run_results(run.run_id)["checks"]
                  ["conservation"] if c.get("resolution", resolution) == resolution]
    assert figures["cells_sum"] == pytest.approx(total, rel=1e-9)
    assert figures["union_sum"] == pytest.approx(over_cells, rel=1e-9)
    assert figures["scope_sum"] == pytest.approx(in_box, rel=1e-9)
    if resolution == 5:  # cells by centre reach past the raster: partly covered ones exist
        assert partial > 0 and min(r["coverage"] for r in rows.values()) < 0.99
