"""Step graphs: stages are barriers in dependency order; loops are named."""

from __future__ import annotations

from h3pipe.config.dag import StepGraph
from h3pipe.spec import StepSpec


def step(sid, input="cells", depends_on=()):
    return StepSpec(id=sid, operation="zonal_stats", input=input, depends_on=tuple(depends_on))


def test_diamond_gives_three_stages():
    g = StepGraph([step("d", depends_on=["b", "c"]), step("b", input="$a"),
                   step("c", depends_on=["a"]), step("a")])
    assert g.stages() == [["a"], ["b", "c"], ["d"]]
    assert g.cycles() == []


def test_independent_steps_share_a_stage():
    assert StepGraph([step("x"), step("y")]).stages() == [["x", "y"]]


def test_cycle_members_are_named_in_order():
    cycles = StepGraph([step("a", depends_on=["c"]), step("b", input="$a"),
                        step("c", depends_on=["b"])]).cycles()
    assert len(cycles) == 1
    loop = cycles[0]
    assert sorted(loop) == ["a", "b", "c"]
    # Each member's successor in the list is a step that depends on it.
    deps = {"a": {"c"}, "b": {"a"}, "c": {"b"}}
    for i, s in enumerate(loop):
        assert s in deps[loop[(i + 1) % 3]]


def test_upstream_merges_input_and_depends_on_without_duplicates():
    assert step("b", input="$a", depends_on=["a", "z"]).upstream == ("a", "z")
