"""Scenario ids, combinations and templates (h3pipe.sources.dimensions), and aggregations
repeated per band: small cases whose answers are written out by hand."""

from __future__ import annotations

from h3pipe.operations import get_operation
from h3pipe.sources.dimensions import Dimensions

FATHOM = {"flood_type": ["fd", "pd"], "year": [2020, 2050], "ssp": ["s1", "s2"]}
BASELINE = [{"year": [2020], "ssp": None}, {"year": [2050]}]


def test_combinations_are_the_union_of_their_products_with_absent_values_left_out():
    ids = [sc.id for sc in Dimensions.parse(FATHOM, BASELINE).scenarios()]
    assert ids == ["fd-2020", "pd-2020", "fd-2050-s1", "fd-2050-s2", "pd-2050-s1",
                   "pd-2050-s2"]
    assert len(Dimensions.parse(FATHOM).scenarios()) == 8  # no combinations: every one


def test_templates_fill_values_ids_and_nothing_for_an_absent_one():
    base, later = Dimensions.parse(FATHOM, BASELINE).scenarios()[0:5:4]
    template = "x/{flood_type}/{year}{ssp}/{scenario}.tif"
    assert base.fill(template) == "x/fd/2020/fd-2020.tif"
    assert later.fill(template) == "x/pd/2050s1/pd-2050-s1.tif"
    assert later.fill("{other}") == "{other}"
    assert later.fill_all({"q": ["{ssp}", 3]}) == {"q": ["s1", 3]}
    assert later.keys() == {"scenario": "pd-2050-s1", "flood_type": "pd", "year": "2050",
                            "ssp": "s1"}


def test_select_keeps_the_values_asked_for():
    dims = Dimensions.parse(FATHOM, BASELINE)
    assert [sc.id for sc in dims.select({"year": ["2050"], "ssp": ["s2"]})] == \
        ["fd-2050-s2", "pd-2050-s2"]


def test_bad_values_are_named():
    dims = Dimensions.parse({"kind": ["a-b", "c"]}, [{"kind": ["d"]}])
    assert [m for _, m in dims.problems()] == [
        "value 'a-b' may hold only letters, digits, '_' and '.' (it becomes part of "
        "scenario ids)", "'d' is not a value of dimension 'kind' (a-b, c)"]


def test_an_aggregation_naming_a_per_band_column_repeats_per_band():
    op = get_operation("h3_weighted_aggregate")
    params = {"aggregations": [
        {"name": "n", "function": "count"},
        {"name": "wet", "function": "count", "where": "depth_m > 0 AND 'depth_m' <> ''"},
        {"name": "w", "function": "weighted_mean", "column": "depth_m", "weight": "pop"}]}
    columns = ["h3_index", "pop", "rp_5_depth_m", "rp_10_depth_m"]
    out = op.per_band(params, ("rp_5", "rp_10"), columns)["aggregations"]
    assert out == [
        {"name": "n", "function": "count"},
        {"name": "rp_5_wet", "function": "count", "where": "rp_5_depth_m > 0 AND 'depth_m' <> ''"},
        {"name": "rp_10_wet", "function": "count",
         "where": "rp_10_depth_m > 0 AND 'depth_m' <> ''"},
        {"name": "rp_5_w", "function": "weighted_mean", "column": "rp_5_depth_m", "weight": "pop"},
        {"name": "rp_10_w", "function": "weighted_mean", "column": "rp_10_depth_m",
         "weight": "pop"}]
    assert op.per_band(params, (), columns) is params
