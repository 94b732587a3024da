"""Scenario sweeps: a multi-band source with dimensions, run as one pipeline over every
scenario. Expected numbers come from exactextract and rasterio run directly on a reference
mosaic of each scenario and band (one file, written here from the same formula as the
tiles), never from h3pipe.

The scene: 6 scenarios (kind a|b x 2020 | 2050 with ssp s1|s2), each 3 bands (rp10, rp100,
rp1000) on two tiles split at lon 29.05, with a band of nodata rows. Scenario b-2050-s2 has
its east tile only, so it has no data in a scope west of 29.05.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict

import h3
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.conftest import cell_feature, write_project

WEST, NORTH, RES, NPIX = 29.0, -1.9, 0.001, 100
BBOX = "29.0,-2.0,29.1,-1.9"
WEST_BBOX = "29.0,-2.0,29.045,-1.9"
BANDS = ("rp10", "rp100", "rp1000")
SCENARIOS = [("a", "2020", None), ("b", "2020", None), ("a", "2050", "s1"),
             ("a", "2050", "s2"), ("b", "2050", "s1"), ("b", "2050", "s2")]
EAST_ONLY = "b-2050-s2"
NODATA = -9999.0


def sid(kind, year, ssp):
    return "-".join(v for v in (kind, year, ssp) if v)


def values(k: int) -> np.ndarray:
    """Scenario k's bands over the whole scene (NPIX x NPIX), NaN for nodata."""
    cols, rows = np.meshgrid(np.arange(NPIX), np.arange(NPIX))
    base = 0.05 * ((cols + 2 * rows) % 23)
    out = np.stack([base * (k + 1) * (b + 1) for b in range(len(BANDS))]).astype("float32")
    out[:, 40:45, :] = np.nan
    return out


def _write(path, data, west):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.where(np.isnan(data), NODATA, data).astype("float32")
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="float32", crs="EPSG:4326",
                       transform=from_origin(west, NORTH, RES, RES), nodata=NODATA,
                       tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(data)


SOURCE = """\
    id: hz
    kind: raster
    theme: hazard
    path: "data/{scenario}/*.tif"
    bands: [rp10, rp100, rp1000]
    band_key: return_period
    dimensions:
      kind: [a, b]
      year: [2020, 2050]
      ssp: [s1, s2]
    combinations:
      - {year: [2020], ssp: null}
      - {year: [2050]}
    """
BUILDINGS = "id: b\nkind: vector\ntheme: infrastructure\npath: buildings.geojson\nid_field: bid\n"
ZONAL = """\
    id: z
    output: {dataset: zds, theme: hazard}
    defaults: {resolution: 8, batch_size: 40}
    steps:
      - id: stats
        operation: zonal_stats
        source: hz
        params: {stats: [mean, max, count]}
    """
EXPOSURE = """\
    id: e
    output: {dataset: eds, theme: hazard}
    defaults: {resolution: 8, batch_size: 150}
    steps:
      - id: depth
        operation: sample
        input: b
        source: hz
        output: intermediate
        params: {name: depth_m}
      - id: exposure
        operation: h3_weighted_aggregate
        input: $depth
        params:
          aggregations:
            - {name: buildings, function: count}
            - {name: flooded, function: count, where: "depth_m > 0.5"}
            - {name: share_flooded, function: share, where: "depth_m > 0.5"}
            - {name: mean_depth_m, function: mean, column: depth_m}
    """


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("sweep"))


def make_scene(root):
    """The scenarios' tiles under root/data, their reference mosaics under root/ref, and
    500 buildings (squares centred in pixels) in root/buildings.geojson."""
    for k, sc in enumerate(SCENARIOS):
        data = values(k)
        for t, west in enumerate((WEST, WEST + 0.05)):
            if sid(*sc) == EAST_ONLY and t == 0:
                continue
            _write(root / "data" / sid(*sc) / f"tile{t}.tif", data[:, :, 50 * t:50 * t + 50],
                   west)
        ref = data.copy()
        if sid(*sc) == EAST_ONLY:
            ref[:, :, :50] = np.nan
        _write(root / "ref" / f"{sid(*sc)}.tif", ref, WEST)
    rng = np.random.default_rng(5)
    feats = []
    for i, p in enumerate(sorted(rng.choice(NPIX * NPIX, size=500, replace=False))):
        row, col = divmod(int(p), NPIX)
        x, y, h = WEST + (col + 0.5) * RES, NORTH - (row + 0.5) * RES, 0.0001
        ring = [[x - h, y - h], [x + h, y - h], [x + h, y + h], [x - h, y + h], [x - h, y - h]]
        feats.append({"type": "Feature", "properties": {"bid": f"b{i}"},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})
    (root / "buildings.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": feats}))
    return root


def _project(scene, dest, pipelines=None):
    shutil.copytree(scene / "data", dest / "data")
    shutil.copy(scene / "buildings.geojson", dest / "buildings.geojson")
    return write_project(dest, sources={"hz": SOURCE, "b": BUILDINGS},
                         pipelines=pipelines or {"z": ZONAL, "e": EXPOSURE})


def _export(cli, proj, dataset, out, *extra):
    res = cli("--project", proj, "export", dataset, "-o", out, *extra)
    assert res.exit_code == 0, res.stderr
    return pq.read_table(out).to_pylist()


def _reference_zonal(scene, cells):
    """exactextract on each scenario's reference mosaic, band by band."""
    from exactextract import exact_extract

    feats = [cell_feature(c) for c in cells]
    out = {}
    for sc in SCENARIOS:
        path = str(scene / "ref" / f"{sid(*sc)}.tif")
        for b, band in enumerate(BANDS):
            with rasterio.open(path) as ds:
                arr = ds.read(b + 1)
            from exactextract.raster import NumPyRasterSource

            arr = np.where(arr == NODATA, np.nan, arr)
            r = NumPyRasterSource(arr, WEST, NORTH - NPIX * RES, WEST + NPIX * RES, NORTH)
            for f in exact_extract(r, feats, ["mean", "max", "count"], include_cols=["cell"]):
                p = f["properties"]
                out[(p["cell"], sid(*sc), band)] = (p["mean"], p["max"], p["count"])
    return out


def test_one_run_computes_every_scenario_and_band_as_exactextract_does(scene, tmp_path, cli):
    proj = _project(scene, tmp_path / "p")
    res = cli("--project", proj, "run", "z", "--bbox", BBOX, "--workers", "2")
    assert res.exit_code == 0, res.stderr
    assert "sweep: 6 scenario(s) of hz x 3 bands (rp10, rp100, rp1000)" in res.stderr
    rows = _export(cli, proj, "zds", tmp_path / "z.parquet")
    cells = sorted({r["h3_index"] for r in rows})
    assert len(rows) == 6 * len(cells)
    assert {r["scenario"] for r in rows} == {sid(*s) for s in SCENARIOS}
    expected = _reference_zonal(scene, cells)
    checked = 0
    for r in rows:
        assert r["year"] in ("2020", "2050") and (r["ssp"] is None) == (r["year"] == "2020")
        for band in BANDS:
            mean, mx, count = expected[(r["h3_index"], r["scenario"], band)]
            assert r[f"{band}_count"] == pytest.approx(count, abs=1e-6)
            if count == 0:
                assert r[f"{band}_mean"] is None
                continue
            assert r[f"{band}_mean"] == pytest.approx(mean, rel=1e-6)
            assert r[f"{band}_max"] == pytest.approx(mx, rel=1e-6)
            checked += 1
    assert checked > 6 * 3 * len(cells) * 0.9


def _reference_exposure(scene, cells_of):
    """Each building's pixel per scenario and band (rasterio's sample on the reference
    mosaic), aggregated per cell here."""
    out = {}
    for sc in SCENARIOS:
        with rasterio.open(scene / "ref" / f"{sid(*sc)}.tif") as ds:
            pts = list(cells_of)
            samples = np.array(list(ds.sample([p[1] for p in pts])), dtype=float)
        samples[samples == NODATA] = np.nan
        for b, band in enumerate(BANDS):
            per = defaultdict(list)
            for (cell, _), v in zip(pts, samples[:, b], strict=True):
                per[cell].append(v)
            for cell, vs in per.items():
                vs = np.array(vs)
                valid = vs[~np.isnan(vs)]
                flooded = int((valid > 0.5).sum())
                out[(cell, sid(*sc), band)] = (len(vs), flooded, flooded / len(vs),
                                               valid.mean() if len(valid) else None)
    return out


def _buildings(scene, resolution=8):
    feats = json.loads((scene / "buildings.geojson").read_text())["features"]
    out = []
    for f in feats:
        ring = np.array(f["geometry"]["coordinates"][0][:-1])
        x, y = ring[:, 0].mean(), ring[:, 1].mean()
        out.append((h3.latlng_to_cell(y, x, resolution), (x, y)))
    return out


@pytest.mark.parametrize("workers", ["1", "2"])  # 2: on worker threads, which sample and
def test_building_exposure_sweep_matches_direct_sampling(scene, tmp_path, cli, workers):
    # h3_weighted_aggregate run on (each its own DuckDB connection)
    proj = _project(scene, tmp_path / "p")
    res = cli("--project", proj, "run", "e", "--bbox", BBOX, "--workers", workers)
    assert res.exit_code == 0, res.stderr
    rows = _export(cli, proj, "eds", tmp_path / "e.parquet")
    # The run's cells are those whose centre is in the box (h3 says which).
    poly = h3.LatLngPoly([(-2.0, 29.0), (-2.0, 29.1), (-1.9, 29.1), (-1.9, 29.0)])
    ours = set(h3.h3shape_to_cells(poly, 8))
    expected = _reference_exposure(scene, [b for b in _buildings(scene) if b[0] in ours])
    assert len(rows) == len(expected) // len(BANDS)
    for r in rows:
        for band in BANDS:
            n, flooded, share, mean = expected[(r["h3_index"], r["scenario"], band)]
            assert r["buildings"] == n
            assert r[f"{band}_flooded"] == flooded
            assert r[f"{band}_share_flooded"] == pytest.approx(share)
            if mean is None:
                assert r[f"{band}_mean_depth_m"] is None
            else:
                assert r[f"{band}_mean_depth_m"] == pytest.approx(mean, rel=1e-6)


def test_export_selects_scenarios_and_bands_wide_and_long(scene, tmp_path, cli):
    proj = _project(scene, tmp_path / "p")
    assert cli("--project", proj, "run", "z", "--bbox", BBOX).exit_code == 0
    wide = _export(cli, proj, "zds", tmp_path / "all.parquet")
    some = _export(cli, proj, "zds", tmp_path / "w.parquet", "--where", "kind=b",
                   "--where", "year=2050", "--where", "return_period=rp100")
    assert {r["scenario"] for r in some} == {"b-2050-s1", "b-2050-s2"}
    assert set(some[0]) == {"h3_index", "resolution", "scenario", "kind", "year", "ssp",
                            "rp100_mean", "rp100_max", "rp100_count"}
    long = _export(cli, proj, "zds", tmp_path / "l.parquet", "--layout", "long",
                   "--where", "scenario=a-2020")
    assert len(long) == len(BANDS) * len(wide) // 6
    by = {(r["h3_index"], r["scenario"]): r for r in wide}
    for r in long:
        assert r["mean"] == by[(r["h3_index"], "a-2020")][f"{r['return_period']}_mean"]
    bad = cli("--project", proj, "export", "zds", "-o", tmp_path / "x.csv", "--where",
              "flood=a")
    assert bad.exit_code == 2 and "no key 'flood'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_scenario_without_data_in_the_scope_is_skipped_and_said(scene, tmp_path, cli):
    proj = _project(scene, tmp_path / "p")
    res = cli("--project", proj, "run", "z", "--bbox", WEST_BBOX)
    assert res.exit_code == 0, res.stderr
    assert f"skipped: 1 scenario(s) of hz with no data in bbox {WEST_BBOX}: {EAST_ONLY}" \
        in res.stderr
    rows = _export(cli, proj, "zds", tmp_path / "w.parquet")
    assert {r["scenario"] for r in rows} == {sid(*s) for s in SCENARIOS} - {EAST_ONLY}
    shown = cli("--project", proj, "runs", "show", "latest")
    assert f"skipped:    hz: {EAST_ONLY} (no data in the scope)" in shown.stdout


def test_a_matrix_limits_the_scenarios(scene, tmp_path, cli):
    matrix = ZONAL.replace("steps:", "matrix: {kind: [a], year: [2050]}\n    steps:")
    proj = _project(scene, tmp_path / "p", {"z": matrix})
    assert cli("--project", proj, "run", "z", "--bbox", BBOX).exit_code == 0
    rows = _export(cli, proj, "zds", tmp_path / "m.parquet")
    assert {r["scenario"] for r in rows} == {"a-2050-s1", "a-2050-s2"}


def test_validate_names_every_scenario_without_files(scene, tmp_path, cli):
    proj = _project(scene, tmp_path / "p")
    shutil.rmtree(proj / "data" / "a-2050-s2")
    shutil.rmtree(proj / "data" / "b-2020")
    res = cli("--project", proj, "validate")
    assert res.exit_code == 1
    assert "scenario 'a-2050-s2' has no file: data/a-2050-s2/*.tif" in res.stdout
    assert "scenario 'b-2020' has no file: data/b-2020/*.tif" in res.stdout
    shutil.rmtree(proj / "data")  # none at all: a checkout without the data
    res = cli("--project", proj, "validate")
    assert res.exit_code == 0 and "no file for any of its 6 scenarios" in res.stderr


@pytest.mark.parametrize(("change", "message"), [
    ("combinations:\n  - {year: [2030]}\n", "'2030' is not a value of dimension 'year'"),
    ("combinations:\n  - {yaer: [2020]}\n", "'yaer' is not a dimension (kind, year, ssp)"),
    ("path: data/x.tif\n", "scenarios 'a-2020' and 'b-2020' get the same path"),
    ("path: 'data/{flood}/*.tif'\n", "'{flood}' is not a dimension"),
    ("band: 2\n", "give 'band' or 'bands', not both"),
])
def test_bad_sweep_sources_are_refused_with_the_reason(tmp_path, cli, change, message):
    text = textwrap.dedent(SOURCE)
    key = change.split(":", 1)[0]
    kept = [line for line in text.splitlines(keepends=True)]
    if key == "combinations":
        text = text[:text.index("combinations:")] + change
    elif key == "path":
        text = "".join(line for line in kept if not line.startswith("path:")) + change
    else:
        text += change
    proj = write_project(tmp_path, sources={"hz": text})
    res = cli("--project", proj, "validate")
    assert res.exit_code == 1 and message in res.stdout, res.stdout


def test_validate_knows_the_band_columns_of_later_steps(scene, tmp_path, cli):
    good = EXPOSURE.replace('"depth_m > 0.5"}', '"rp100_depth_m > 0.5"}', 1)
    bad = EXPOSURE.replace('"depth_m > 0.5"}', '"rp5_depth_m > 0.5"}', 1)
    proj = _project(scene, tmp_path / "p", {"e": good})
    assert cli("--project", proj, "validate").exit_code == 0
    (proj / "pipelines" / "e.yaml").write_text(textwrap.dedent(bad))
    res = cli("--project", proj, "validate")
    assert res.exit_code == 1 and "rp5_depth_m" in res.stdout


def test_a_failed_sweep_resumes_to_the_uninterrupted_result(scene, tmp_path, cli):
    whole = _project(scene, tmp_path / "whole")
    assert cli("--project", whole, "run", "e", "--bbox", BBOX, "--workers", "1").exit_code == 0
    expected = _export(cli, whole, "eds", tmp_path / "whole.parquet")
    proj = _project(scene, tmp_path / "p")
    # The fault plan is read when a process starts: the failing run is a process of its own.
    failed = subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(proj), "run", "e",
                             "--bbox", BBOX, "--workers", "1"], capture_output=True, text=True,
                            env={**os.environ, "H3PIPE_FAULTS": "batch.exposure:fail@2"})
    assert failed.returncode == 1, failed.stderr
    res = cli("--project", proj, "run", "e", "--bbox", BBOX, "--workers", "1")
    assert res.exit_code == 0 and "(resumed)" in res.stdout, res.stdout + res.stderr
    assert _export(cli, proj, "eds", tmp_path / "p.parquet") == expected


FEATURES = """\
    id: f
    output: {dataset: fds, theme: hazard}
    defaults: {resolution: 8, batch_size: 100}
    steps:
      - id: inside
        operation: zonal_stats
        input: b
        source: SRC
        output: intermediate
        params: {stats: [mean, count]}
      - id: near
        operation: spatial_join
        input: $inside
        source: SRC
        output: intermediate
        params: {radius_m: 150, stats: [sum, max], prefix: near_}
      - id: per_cell
        operation: h3_weighted_aggregate
        input: $near
        params:
          aggregations:
            - {name: n, function: count}
            - {name: mean_inside, function: mean, column: mean}
            - {name: near_sum, function: sum, column: near_sum}
    """


def test_multi_band_reads_give_what_each_band_read_alone_gives(scene, tmp_path, cli):
    """Over features (exact coverage, buffered joins) and through an aggregation: the
    columns of each band equal those of a source that reads only that band."""
    proj = tmp_path / "p"
    shutil.copytree(scene / "data" / "a-2050-s1", proj / "data")
    shutil.copy(scene / "buildings.geojson", proj / "buildings.geojson")
    many = "id: m\nkind: raster\ntheme: hazard\npath: data/*.tif\nbands: [rp10, rp100, rp1000]\n"
    sources = {"m": many, "b": BUILDINGS}
    pipelines = {"f": FEATURES.replace("SRC", "m")}
    for k, band in enumerate(BANDS, 1):
        sources[band] = f"id: {band}\nkind: raster\ntheme: hazard\npath: data/*.tif\nband: {k}\n"
        pipelines[band] = FEATURES.replace("SRC", band).replace("fds", f"ds_{band}") \
            .replace("id: f\n", f"id: f_{band}\n")
    write_project(proj, sources=sources, pipelines=pipelines)
    for pid in ("f", *(f"f_{b}" for b in BANDS)):
        res = cli("--project", proj, "run", pid, "--bbox", BBOX)
        assert res.exit_code == 0, res.stderr
    rows = {r["h3_index"]: r for r in _export(cli, proj, "fds", tmp_path / "m.parquet")}
    for band in BANDS:
        alone = _export(cli, proj, f"ds_{band}", tmp_path / f"{band}.parquet")
        assert len(alone) == len(rows)
        for r in alone:
            mine = rows[r["h3_index"]]
            assert mine["n"] == r["n"]
            for col in ("mean_inside", "near_sum"):
                assert mine[f"{band}_{col}"] == r[col], (band, col)


@pytest.mark.parametrize("store", ["embedded", "postgresql"])
def test_a_value_added_to_a_dimension_computes_only_its_scenarios(scene, tmp_path, cli,
                                                                   store, request):
    only_a = SOURCE.replace("kind: [a, b]", "kind: [a]")
    proj = _project(scene, tmp_path / "p")
    write_project(proj, sources={"hz": only_a})
    args = ["--project", proj]
    if store == "postgresql":
        args = ["--store", request.getfixturevalue("pg_url"), *args]
        assert cli(*args, "db", "upgrade").exit_code == 0
    first = cli(*args, "run", "e", "--bbox", BBOX, "--workers", "1")
    assert first.exit_code == 0, first.stderr
    write_project(proj, sources={"hz": SOURCE})  # kind b added: three scenarios more
    planned = cli(*args, "plan", "e", "--bbox", BBOX)
    assert "kept: 3 scenario(s)" in planned.stdout, planned.stdout
    second = cli(*args, "run", "e", "--bbox", BBOX, "--workers", "1")
    assert second.exit_code == 0, second.stderr
    assert "kept: 3 scenario(s) already in the scope's result from the same inputs; " \
        "computing 3" in second.stderr
    shown = cli(*args, "runs", "show", "latest")
    assert "scenarios:  b-2020, b-2050-s1, b-2050-s2" in shown.stdout
    out = tmp_path / "added.parquet"
    assert cli(*args, "export", "eds", "-o", out).exit_code == 0
    rows = pq.read_table(out).to_pylist()
    whole = _project(scene, tmp_path / "whole")
    assert cli("--project", whole, "run", "e", "--bbox", BBOX, "--workers", "1").exit_code == 0
    expected = _export(cli, whole, "eds", tmp_path / "whole.parquet")
    assert sorted(rows, key=lambda r: (r["h3_index"], r["scenario"])) == \
        sorted(expected, key=lambda r: (r["h3_index"], r["scenario"]))
    third = cli(*args, "run", "e", "--bbox", BBOX, "--workers", "1", "--force")
    assert third.exit_code == 0 and "kept:" not in third.stderr


def test_more_bands_than_the_files_have_is_refused_before_the_run(scene, tmp_path, cli):
    four = SOURCE.replace("bands: [rp10, rp100, rp1000]", "bands: [rp10, rp100, rp1000, x]")
    proj = _project(scene, tmp_path / "p")
    write_project(proj, sources={"hz": four})
    r = cli("--project", proj, "run", "z", "--bbox", BBOX)
    assert r.exit_code == 2 and "has 3 band(s), the source asks for band 4" in r.stderr
