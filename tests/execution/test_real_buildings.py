"""The real Microsoft building footprints of Kampala (../shared/data/buildings, 4,840
polygons) through a feature pipeline; expected numbers come straight from pyogrio,
shapely, h3 and exactextract on the same files. Skipped when the data is absent."""

from __future__ import annotations

import textwrap
from collections import defaultdict

import h3
import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED_DATA, write_project

FOLDER = SHARED_DATA / "buildings" / "wpgp_foot_kampala"
GPKG = FOLDER / "kampala_buildings_msft.gpkg"
GRID = FOLDER / "kampala_mastergrid_worldpop_3arcsec.tif"
BBOX = (32.60, 0.32, 32.64, 0.355)

pytestmark = [pytest.mark.skipif(not GPKG.exists(), reason="../shared/data is absent"),
              pytest.mark.realdata]

PIPELINE = """\
id: footprints
output: {dataset: footprints, theme: infrastructure}
defaults: {resolution: 9, batch_size: 300}
steps:
  - id: covered
    operation: zonal_stats
    input: buildings
    source: grid
    output: intermediate
    params: {stats: [count]}
  - id: per_cell
    operation: h3_weighted_aggregate
    input: $covered
    params:
      aggregations:
        - {name: buildings, function: count}
        - {name: pixels_covered, function: sum, column: count}
        - {name: large, function: count, where: "count > 0.05"}
"""


def test_real_footprints_per_cell_match_an_independent_computation(tmp_path, cli):
    import pyogrio
    import shapely
    from exactextract import exact_extract

    proj = write_project(tmp_path / "p", sources={
        "buildings": f"id: buildings\nkind: vector\npath: '{GPKG}'\ntheme: infrastructure\n",
        "grid": f"id: grid\nkind: raster\npath: '{GRID}'\ntheme: demographics\n"},
        pipelines={"footprints": textwrap.dedent(PIPELINE)})
    bbox = ",".join(map(str, BBOX))
    r = cli("--project", proj, "run", "footprints", "--bbox", bbox, "--workers", "2")
    assert r.exit_code == 0, r.stderr
    assert cli("--project", proj, "export", "footprints", "-o", tmp_path / "o.parquet"
               ).exit_code == 0
    got = {row["h3_index"]: row for row in pq.read_table(tmp_path / "o.parquet").to_pylist()}

    frame = pyogrio.read_arrow(GPKG)[1]
    geoms = shapely.from_wkb(frame.column("geom").to_numpy(zero_copy_only=False))
    assert len(geoms) == 4840
    scope = set(h3.geo_to_cells(shapely.box(*BBOX).__geo_interface__, 9))
    counts = exact_extract(str(GRID), [
        {"type": "Feature", "properties": {"i": i}, "geometry": shapely.geometry.mapping(g)}
        for i, g in enumerate(geoms)], ["count"], include_cols=["i"])
    covered = {f["properties"]["i"]: f["properties"]["count"] for f in counts}
    want: dict[str, list[float]] = defaultdict(list)
    for i, c in enumerate(shapely.centroid(geoms)):
        cell = h3.latlng_to_cell(c.y, c.x, 9)
        if cell in scope:
            want[cell].append(covered[i])
    assert set(got) == set(want) and len(want) > 50
    for cell, values in want.items():
        assert got[cell]["buildings"] == len(values)
        assert got[cell]["pixels_covered"] == pytest.approx(sum(values), rel=1e-9)
        assert got[cell]["large"] == sum(v > 0.05 for v in values)
