"""A source's ``measure`` and ``classes`` against the zonal_stats steps that read it
(h3pipe.operations.measures, checked by ``ProjectConfig.check`` / ``h3pipe validate``).

Every expected line is written here from the YAML of the test and the rule it breaks.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

from h3pipe.config.project import ProjectConfig
from tests.conftest import write_project, write_raster

INTENSIVE_SUM = ("'sum' of intensive source 'src': the sum of an intensive variable grows "
                 "with the pixel count; use mean, or weights: area for its area integral")
EXTENSIVE_MEAN = ("'mean' of extensive source 'src': the mean of an extensive variable "
                  "depends on the pixel size; use density (sum per km2) or sum")


def _project(root: Path, source: str, steps: str, *, vector: str | None = None) -> Path:
    """A project with raster source 'src' (``source``: its lines after id, kind, path and
    theme), optionally a vector source 'vec' (its extra lines), and pipeline 'p' whose
    steps are ``steps``; the first step's params sit on line 8 of pipelines/p.yaml."""
    write_raster(root / "r.tif", np.ones((10, 10), "float32"), west=29.0, north=-1.9,
                 res=0.01)
    sources = {"src": "id: src\nkind: raster\npath: r.tif\ntheme: hazard\n"
                      + textwrap.dedent(source)}
    if vector is not None:
        pyogrio.write_arrow(_parcels(), root / "v.gpkg", driver="GPKG",
                            geometry_name="geometry", geometry_type="Polygon",
                            crs="EPSG:4326")
        sources["vec"] = ("id: vec\nkind: vector\npath: v.gpkg\nid_field: pid\n"
                          "theme: infrastructure\n" + textwrap.dedent(vector))
    pipeline = ("id: p\noutput: {dataset: ds, theme: hazard}\ndefaults: {resolution: 7}\n"
                "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  "))
    return write_project(root, sources=sources, pipelines={"p": pipeline})


def _parcels():
    import pyarrow as pa

    return pa.table({"pid": ["a"], "geometry": shapely.to_wkb(
        np.array([shapely.box(29.01, -1.99, 29.03, -1.97)]))})


def _zonal(params: str) -> str:
    return f"- id: s\n  operation: zonal_stats\n  source: src\n  params: {params}\n"


def _problems(root: Path) -> list[str]:
    return [p.format() for p in ProjectConfig(root).check().problems]


# --- the command line -------------------------------------------------------------------------

def test_run_refuses_the_sum_of_an_intensive_source_in_one_line_naming_it(tmp_path, cli):
    root = _project(tmp_path / "p", "measure: intensive\n", _zonal("{stats: [mean, sum]}"))
    line = f"pipelines/p.yaml:8: steps[0].params.stats[1]: {INTENSIVE_SUM}"

    r = cli("--project", root, "run", "p", "--bbox", "29.0,-2.0,29.1,-1.9", "--workers", "1")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [f"error: {line}"]

    r = cli("--project", root, "validate")
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [line]


# --- statistics that a measure refuses --------------------------------------------------------

@pytest.mark.parametrize(("source", "params", "lines"), [
    ("measure: intensive\n", "{stats: [sum]}", [f"stats[0]: {INTENSIVE_SUM}"]),
    ("measure: extensive\n", "{stats: [sum, mean]}", [f"stats[1]: {EXTENSIVE_MEAN}"]),
    ("measure: extensive\n", "{stats: [sum], weights: area}", [
        "weights: weights: area on an extensive source 'src' would multiply amounts per "
        "pixel by area; extensive values are already totals per pixel"]),
    ("measure: extensive\n", "{stats: [quantile_90]}", [
        "stats[0]: 'quantile_90' of extensive source 'src': quantiles of amounts per pixel "
        "depend on the pixel size; use sum or density"]),
    ("measure: categorical\n", "{stats: [majority, mean]}", [
        "stats[1]: 'mean' of categorical source 'src': a categorical variable holds class "
        "codes, not quantities; use fractions, majority or variety"]),
    ("measure: intensive\n", "{stats: [fractions], classes: [{value: 1, name: a}]}", [
        "stats[0]: 'fractions' of intensive source 'src': fractions are class shares, for a "
        "categorical variable; use histogram"]),
], ids=["intensive-sum", "extensive-mean", "extensive-area", "extensive-quantile",
        "categorical-mean", "intensive-fractions"])
def test_a_statistic_that_makes_no_sense_for_the_measure_is_refused(tmp_path, source, params,
                                                                      lines):
    root = _project(tmp_path / "p", source, _zonal(params))
    assert _problems(root) == [f"pipelines/p.yaml:8: steps[0].params.{x}" for x in lines]


@pytest.mark.parametrize(("source", "params"), [
    ("measure: intensive\n", "{stats: [sum, mean, median, histogram], weights: area, "
                             "bins: [0, 1, 2]}"),
    ("measure: extensive\n", "{stats: [sum, count, density, cell_area_km2]}"),
    ("measure: categorical\n", "{stats: [majority, minority, variety, count, coverage], "
                               "min_coverage: 0.5}"),
    ("", "{stats: [sum, mean, majority]}"),  # no measure: nothing to check against
], ids=["intensive", "extensive", "categorical", "none"])
def test_statistics_that_suit_the_measure_are_accepted(tmp_path, source, params):
    root = _project(tmp_path / "p", source, _zonal(params))
    assert _problems(root) == []


def test_each_band_is_checked_against_its_own_measure(tmp_path):
    bands = ("measure: intensive\nbands: [{name: rp10, band: 1, measure: extensive}, "
             "{name: rp100, band: 1}]\n")
    root = _project(tmp_path / "p", bands, _zonal("{stats: [sum, mean]}"))
    assert _problems(root) == [
        "pipelines/p.yaml:8: steps[0].params.stats[1]: 'mean' of extensive source 'src' "
        "band 'rp10': the mean of an extensive variable depends on the pixel size; use "
        "density (sum per km2) or sum",
        "pipelines/p.yaml:8: steps[0].params.stats[0]: 'sum' of intensive source 'src' "
        "band 'rp100': the sum of an intensive variable grows with the pixel count; use "
        "mean, or weights: area for its area integral"]
    # The band that takes the source's measure is the one that changed: both accepted now.
    ok = _project(tmp_path / "q", bands.replace("intensive", "extensive"),
                  _zonal("{stats: [sum]}"))
    assert _problems(ok) == []


# --- classes and fractions --------------------------------------------------------------------

LANDCOVER = ("measure: categorical\n"
             "classes: [{value: 1, name: water}, {value: 2, name: forest, title: Forest}]\n")


def test_fractions_take_the_sources_classes_and_later_steps_see_their_columns(tmp_path):
    steps = _zonal("{stats: [fractions, majority]}") + textwrap.dedent("""\
          output: intermediate
        - id: t
          operation: transform
          input: $s
          params: {columns: {wet: "frac_water > 0.5"}}
        """)
    root = _project(tmp_path / "p", LANDCOVER, steps)
    assert _problems(root) == []
    _, pipelines, _ = ProjectConfig(root).load()
    # The run gets the classes validate filled in from the source.
    assert pipelines["p"].steps[0].params["classes"] == [{"value": 1.0, "name": "water"},
                                                         {"value": 2.0, "name": "forest"}]

    typo = _project(tmp_path / "q", LANDCOVER, steps.replace("frac_water", "frac_wter"))
    assert _problems(typo) == [
        "pipelines/p.yaml:13: steps[1].params.columns.wet: SQL expression 'frac_wter > 0.5': "
        "unknown column 'frac_wter' (did you mean 'frac_water'?); the input has h3_index, "
        "frac_water, frac_forest, majority"]


def test_the_class_columns_of_two_published_steps_may_not_collide(tmp_path):
    steps = _zonal("{stats: [fractions]}") + _zonal("{stats: [fractions]}").replace(
        "id: s", "id: s2")
    root = _project(tmp_path / "p", LANDCOVER, steps)
    assert _problems(root) == [
        "pipelines/p.yaml:12: steps[1].params.stats[0]: output column 'frac_water' is also "
        "produced by step 's'",
        "pipelines/p.yaml:12: steps[1].params.stats[0]: output column 'frac_forest' is also "
        "produced by step 's'"]


@pytest.mark.parametrize("source", ["measure: categorical\n", ""], ids=["categorical", "none"])
def test_fractions_without_classes_are_refused(tmp_path, source):
    root = _project(tmp_path / "p", source, _zonal("{stats: [count, fractions]}"))
    assert _problems(root) == [
        "pipelines/p.yaml:8: steps[0].params.stats[1]: fractions needs classes: give them "
        "in the source ('classes:') or in params.classes"]


def test_classes_on_a_source_that_is_not_categorical_are_refused(tmp_path):
    root = _project(tmp_path / "p", "measure: intensive\nclasses: [{value: 1, name: a}]\n",
                    _zonal("{stats: [mean]}"))
    assert _problems(root) == [
        "sources/src.yaml:6: classes: classes are for a categorical source; this one is "
        "intensive (drop classes, or say measure: categorical)",
        "pipelines/p.yaml:7: steps[0].source: source 'src' is invalid; fix sources/src.yaml "
        "first"]


def test_measure_on_a_vector_source_is_refused(tmp_path):
    root = _project(tmp_path / "p", "", _zonal("{stats: [mean]}"),
                    vector="measure: extensive\n")
    assert _problems(root) == [
        "sources/vec.yaml:6: measure: 'measure' describes raster values; a vector source's "
        "attributes have none"]


# --- cell statistics, bins --------------------------------------------------------------------

@pytest.mark.parametrize("stat", ["cell_area_km2", "density"])
def test_cell_statistics_over_features_are_refused(tmp_path, stat):
    steps = textwrap.dedent(f"""\
        - id: z
          operation: zonal_stats
          input: vec
          source: src
          output: intermediate
          params: {{stats: [mean, {stat}]}}
        - id: a
          operation: h3_weighted_aggregate
          input: $z
          params: {{aggregations: [{{name: m, function: mean, column: mean}}]}}
        """)
    root = _project(tmp_path / "p", "", steps, vector="")
    assert _problems(root) == [
        f"pipelines/p.yaml:10: steps[0].params.stats[1]: '{stat}' is a statistic of H3 "
        "cells, not of feature polygons"]
    # Over cells the same step is fine.
    cells = _project(tmp_path / "q", "", _zonal(f"{{stats: [mean, {stat}]}}"))
    assert _problems(cells) == []


@pytest.mark.parametrize(("params", "line"), [
    ("{stats: [histogram]}",
     "stats[0]: histogram needs params.bins, its bin edges"),
    ("{stats: [histogram], bins: [0, 2, 2, 5]}",
     "bins[2]: bin edge 2 does not exceed the one before it (2); edges must increase"),
    ("{stats: [histogram], bins: [0, 5, 1]}",
     "bins[2]: bin edge 1 does not exceed the one before it (5); edges must increase"),
], ids=["no-bins", "repeated-edge", "decreasing-edge"])
def test_a_histogram_needs_increasing_bins(tmp_path, params, line):
    root = _project(tmp_path / "p", "", _zonal(params))
    assert _problems(root) == [f"pipelines/p.yaml:8: steps[0].params.{line}"]
