"""The flood stand-in data and the two example pipelines end to end on it (a small area,
few buildings): the project's own pipelines, sources and demo, as 'make demo' runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely

from h3pipe.demo.flood import PIXEL, generate

REPO = Path(__file__).resolve().parents[2]
BBOX = (29.9, -2.05, 30.2, -1.85)  # around the stand-in Kigali


def test_stand_in_files_are_plausible(tmp_path):
    paths = generate(tmp_path, BBOX, count=3000)
    with rasterio.open(paths[0]) as ds:
        depth = ds.read(1)
        assert ds.crs.to_epsg() == 4326 and ds.nodata == -9999
        assert ds.res == (PIXEL, PIXEL) and ds.bounds.left == BBOX[0]
    valid = depth[depth != -9999]
    assert 0 < (valid > 0).mean() < 0.5 and valid.max() < 6  # rivers, not a sea
    with rasterio.open(paths[1]) as ds:
        people = ds.read(1)
    assert people.min() >= 0 and people.max() > 3 * np.median(people)  # a town
    table = pq.read_table(paths[2])
    assert json.loads(table.schema.metadata[b"geo"])["primary_column"] == "geometry"
    assert table.num_rows == 3000 and len(set(table.column("building_id").to_pylist())) == 3000
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    assert BBOX[0] <= x0 and x1 <= BBOX[2] and BBOX[1] <= y0 and y1 <= BBOX[3]
    # Same seed, same files.
    again = generate(tmp_path / "again", BBOX, count=3000)
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(paths[2:], again[2:],
                                                                strict=True))


def test_the_example_pipelines_run_on_the_stand_in(tmp_path, cli, monkeypatch):
    proj = tmp_path / "proj"
    for folder in ("sources", "pipelines"):
        shutil.copytree(REPO / folder, proj / folder)
    paths = generate(tmp_path / "flood", BBOX, count=4000)
    monkeypatch.setenv("FLOOD_DEPTH_100Y", str(paths[0]))
    monkeypatch.setenv("WORLDPOP", str(paths[1]))
    monkeypatch.setenv("BUILDINGS", str(paths[2]))
    assert cli("--project", proj, "validate").exit_code == 0
    bbox = ",".join(map(str, BBOX))
    for pipeline, dataset in (("building_flood_exposure", "building_flood_exposure"),
                              ("flood_risk_weighted", "flood_risk_pop_weighted")):
        r = cli("--project", proj, "run", pipeline, "--bbox", bbox)
        assert r.exit_code == 0, r.stderr
        assert cli("--project", proj, "export", dataset, "-o", tmp_path / f"{dataset}.parquet"
                   ).exit_code == 0
    rows = pq.read_table(tmp_path / "building_flood_exposure.parquet").to_pylist()
    assert any(r["share_flooded"] > 0 for r in rows)
    # Recomputed from the files: rasterio for the pixel under each centroid, h3 for cells.
    import h3

    table = pq.read_table(paths[2])
    centres = shapely.centroid(shapely.from_wkb(table.column("geometry").to_numpy(
        zero_copy_only=False)))
    scope = set(h3.geo_to_cells(shapely.box(*BBOX).__geo_interface__, 7))
    want: dict[str, list[float | None]] = {}
    with rasterio.open(paths[0]) as ds:
        depth = ds.read(1)
        for c in centres:
            cell = h3.latlng_to_cell(c.y, c.x, 7)
            if cell not in scope:
                continue
            r, col = ds.index(c.x, c.y)
            d = float(depth[r, col])
            want.setdefault(cell, []).append(None if d == ds.nodata else d)
    got = {r["h3_index"]: r for r in rows}
    assert set(got) == set(want)
    for cell, depths in want.items():
        wet = [d for d in depths if d is not None and d > 0]
        assert got[cell]["buildings"] == len(depths)
        assert got[cell]["flooded_buildings"] == len(wet)
        assert got[cell]["share_flooded"] == pytest.approx(len(wet) / len(depths))
        if wet:
            assert got[cell]["mean_depth_when_flooded_m"] == pytest.approx(np.mean(wet),
                                                                           rel=1e-6)
    risk = pq.read_table(tmp_path / "flood_risk_pop_weighted.parquet").to_pylist()
    assert {r["h3_index"][1] for r in risk} == {"8"}  # resolution 8
    assert all(r["max_depth_m"] is None or r["pop_weighted_depth_m"] <= r["max_depth_m"] + 1e-9
               for r in risk)
