"""Who may write what: no output takes a name every result has or a sweep's key, and a
dataset has one pipeline."""

from __future__ import annotations

import numpy as np

from tests.conftest import write_project, write_raster

DEM = "id: dem\nkind: raster\ntheme: terrain\npath: dem.tif\n"


def _pipeline(pid: str, dataset: str, stats: str = "[mean]") -> str:
    return (f"id: {pid}\noutput: {{dataset: {dataset}, theme: terrain}}\n"
            f"defaults: {{resolution: 6}}\nsteps:\n  - id: s\n    operation: zonal_stats\n"
            f"    source: dem\n    params: {{stats: {stats}}}\n")


def _project(tmp_path, pipelines, sources=None):
    write_raster(tmp_path / "p" / "dem.tif", np.ones((4, 4), "float32"), west=29,
                 north=-1.9, res=0.01)
    return write_project(tmp_path / "p", sources=sources or {"dem": DEM},
                         pipelines=pipelines)


def test_a_dataset_written_by_two_pipelines_is_refused_naming_both_files(tmp_path, cli):
    proj = _project(tmp_path, {"a": _pipeline("a", "terrain"),
                               "b": _pipeline("b", "terrain", "[max]")})
    r = cli("--project", proj, "validate")
    assert r.exit_code == 1
    assert ("pipelines/b.yaml:2: output.dataset: dataset 'terrain' is also written by "
            "pipeline 'a' (pipelines/a.yaml); give each pipeline a dataset of its own"
            ) in r.stdout, r.stdout


def test_two_pipelines_with_datasets_of_their_own_pass(tmp_path, cli):
    proj = _project(tmp_path, {"a": _pipeline("a", "t1"), "b": _pipeline("b", "t2")})
    assert cli("--project", proj, "validate").exit_code == 0


def test_an_output_named_like_a_sweep_key_is_refused(tmp_path, cli):
    for year in (2020, 2050):
        write_raster(tmp_path / "p" / "data" / f"{year}.tif", np.ones((4, 4), "float32"),
                     west=29, north=-1.9, res=0.01)
    swept = ("id: hz\nkind: raster\ntheme: hazard\npath: 'data/{year}.tif'\n"
             "dimensions: {year: [2020, 2050]}\n")
    pipeline = ("id: p\noutput: {dataset: ds, theme: hazard}\ndefaults: {resolution: 6}\n"
                "steps:\n  - id: s\n    operation: zonal_stats\n    source: hz\n"
                "    output: intermediate\n    params: {stats: [mean]}\n"
                "  - id: t\n    operation: transform\n    input: $s\n"
                "    params: {columns: {year: 'mean * 2'}}\n")
    proj = _project(tmp_path, {"p": pipeline}, {"dem": DEM, "hz": swept})
    r = cli("--project", proj, "validate")
    assert r.exit_code == 1
    assert ("pipelines/p.yaml:13: steps[1].params.columns.year: output column 'year' is a "
            "key of the sweep") in r.stdout, r.stdout
