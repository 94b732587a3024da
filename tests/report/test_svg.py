"""h3pipe.report.svg: the charts parse as XML, and what they place follows from the data."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from h3pipe.report.svg import GraphStep, Span, histogram, step_graph, timeline

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    assert svg.startswith("<svg")
    return ET.fromstring(svg)


def _rects(root: ET.Element, cls: str) -> list[ET.Element]:
    return [r for r in root.iter(f"{NS}rect") if r.get("class") == cls]


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}text")]


def _f(element: ET.Element, name: str) -> float:
    return float(element.attrib[name])


def _rgb(colour: str) -> tuple[int, int, int]:
    assert colour.startswith("#") and len(colour) == 7, colour
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _is_red(colour: str | None) -> bool:
    if not colour or not colour.startswith("#"):
        return False
    r, g, b = _rgb(colour)
    return r > 150 and g < 100 and b < 100


def _graph() -> list[GraphStep]:
    return [GraphStep("dem", 1, "raster_read", "completed"),
            GraphStep("boundaries", 1, "vector_read", "completed"),
            GraphStep("elevation_stats", 2, "zonal_stats", "failed", needs=("dem",)),
            GraphStep("share", 3, "ratio", "pending", needs=("elevation_stats", "boundaries"))]


def _spans() -> list[Span]:
    return [Span("w1", "elevation_stats", 1, 0.0, 1.0, "completed", 500),
            Span("w1", "elevation_stats", 2, 1.0, 3.0, "completed", 800),
            Span("w2", "share", 3, 0.5, 2.5, "failed", 10)]


CHARTS = {
    "step_graph": lambda: step_graph(_graph()),
    "step_graph_empty": lambda: step_graph([]),
    "timeline": lambda: timeline(_spans(), step_order=["elevation_stats", "share"]),
    "timeline_empty": lambda: timeline([]),
    "histogram": lambda: histogram([1, 2, 4], [0.0, 0.5, 1.0, 1.5], label="slope (°)"),
    "histogram_zero": lambda: histogram([0, 0], [0.0, 1.0, 2.0]),
}


@pytest.mark.parametrize("chart", sorted(CHARTS))
def test_each_chart_is_a_self_contained_svg(chart):
    svg = CHARTS[chart]()
    root = _parse(svg)
    assert root.tag == f"{NS}svg"
    width, height = int(root.attrib["width"]), int(root.attrib["height"])
    assert root.attrib["viewBox"] == f"0 0 {width} {height}"
    assert root.attrib["role"] == "img" and root.attrib["aria-label"]
    assert root.attrib["font-family"] == "sans-serif"
    for outside in ("href", "<script", "url(", "@import", "<style", "http://", "https://"):
        assert outside not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for rect in root.iter(f"{NS}rect"):
        if rect.get("class") in ("step", "task", "bar"):
            assert (rect.findtext(f"{NS}title") or "").strip()


# -- step graph ------------------------------------------------------------------------------

def test_step_graph_has_a_box_per_step_and_stages_run_left_to_right():
    steps = _graph()
    boxes = {b.attrib["data-step"]: b for b in _rects(_parse(step_graph(steps)), "step")}
    assert sorted(boxes) == sorted(s.step_id for s in steps)
    by_stage: dict[int, list[ET.Element]] = {}
    for s in steps:
        by_stage.setdefault(s.stage, []).append(boxes[s.step_id])
    for earlier, later in [(1, 2), (2, 3)]:
        right_edge = max(_f(b, "x") + _f(b, "width") for b in by_stage[earlier])
        assert all(_f(b, "x") > right_edge for b in by_stage[later])


def test_step_graph_draws_an_edge_per_need():
    root = _parse(step_graph(_graph()))
    edges = [e for tag in ("line", "path") for e in root.iter(f"{NS}{tag}")
             if e.get("class") == "edge"]
    assert sorted((e.get("data-from"), e.get("data-to")) for e in edges) == sorted(
        [("dem", "elevation_stats"), ("elevation_stats", "share"), ("boundaries", "share")])


def test_step_graph_labels_stages_and_colours_by_status():
    root = _parse(step_graph(_graph()))
    assert {"stage 1", "stage 2", "stage 3"} <= set(_texts(root))
    fill = {b.attrib["data-step"]: b.attrib["fill"] for b in _rects(root, "step")}
    assert fill["dem"] == fill["boundaries"]
    assert fill["dem"] != fill["elevation_stats"]
    green, red = _rgb(fill["dem"]), _rgb(fill["elevation_stats"])
    assert green[1] > green[0] and red[0] > red[1]


def test_step_graph_escapes_step_ids():
    odd = "a<&>\"b'"
    steps = [GraphStep(odd, 1, "op & co", "completed"),
             GraphStep("next", 2, "x", "running", needs=(odd,))]
    root = _parse(step_graph(steps))
    assert {b.attrib["data-step"] for b in _rects(root, "step")} == {odd, "next"}
    assert any(odd in (b.findtext(f"{NS}title") or "") for b in _rects(root, "step"))
    assert odd in _texts(root) and "op & co" in _texts(root)
    assert [e.get("data-from") for e in root.iter(f"{NS}path") if e.get("class") == "edge"
            ] == [odd]


# -- timeline --------------------------------------------------------------------------------

def test_timeline_bars_are_placed_by_start_and_end():
    root = _parse(timeline(_spans()))
    bars = {int(b.attrib["data-task"]): b for b in _rects(root, "task")}
    assert sorted(bars) == [1, 2, 3]
    first, second = bars[1], bars[2]
    assert _f(second, "width") == pytest.approx(2 * _f(first, "width"), abs=1)
    assert _f(second, "x") == pytest.approx(_f(first, "x") + _f(first, "width"), abs=1)
    # Task 3 runs 0.5 -> 2.5 s: it starts half a first bar after the first one starts.
    assert _f(bars[3], "x") == pytest.approx(_f(first, "x") + _f(first, "width") / 2, abs=1)
    assert (float(second.attrib["data-start"]), float(second.attrib["data-end"])) == (1.0, 3.0)


def test_timeline_has_one_y_per_lane():
    spans = [Span(f"w{i % 16}", "s", i, i * 0.25, i * 0.25 + 0.2, "completed") for i in range(48)]
    root = _parse(timeline(spans))
    ys: dict[str, set[float]] = {}
    for b in _rects(root, "task"):
        ys.setdefault(b.attrib["data-lane"], set()).add(_f(b, "y"))
    assert len(ys) == 16 and all(len(y) == 1 for y in ys.values())
    assert len({next(iter(y)) for y in ys.values()}) == 16
    order = sorted(ys, key=lambda lane: next(iter(ys[lane])))
    assert order == [f"w{i}" for i in range(16)]
    two_lanes = _parse(timeline(spans[:2]))
    assert int(root.attrib["height"]) > int(two_lanes.attrib["height"])


def test_timeline_outlines_failed_tasks_in_red():
    bars = {b.attrib["data-task"]: b for b in _rects(_parse(timeline(_spans())), "task")}
    assert _is_red(bars["3"].get("stroke"))
    assert not _is_red(bars["1"].get("stroke"))


def test_timeline_colours_by_step_in_step_order_and_shows_a_legend():
    spans = _spans() + [Span("w2", "aaa", 4, 3.0, 3.5, "completed")]
    root = _parse(timeline(spans, step_order=["share", "elevation_stats"]))
    fill: dict[str, set[str]] = {}
    for b in _rects(root, "task"):
        fill.setdefault(b.attrib["data-step"], set()).add(b.attrib["fill"])
    assert all(len(f) == 1 for f in fill.values()) and len(set.union(*fill.values())) == 3
    texts = _texts(root)
    assert texts.index("share") < texts.index("elevation_stats") < texts.index("aaa")


def test_timeline_ticks_are_round_steps():
    root = _parse(timeline([Span("w1", "s", 1, 0.0, 7.3, "completed")]))
    ticks = [float(t[:-2]) for t in _texts(root) if t.endswith(" s")]
    assert ticks[0] == 0 and ticks[-1] >= 7.3 and 4 <= len(ticks) <= 10
    step = ticks[1] - ticks[0]
    assert all(b - a == pytest.approx(step) for a, b in zip(ticks, ticks[1:], strict=False))
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-9


def test_timeline_tooltip_tells_the_task():
    bar = _rects(_parse(timeline([Span("w1", "elevation_stats", 12, 3.1, 3.52, "completed",
                                       500)])), "task")[0]
    assert bar.findtext(f"{NS}title") == (
        "elevation_stats#12 on w1: 0.42 s (3.10 -> 3.52 s), 500 rows in, completed")


def test_timeline_shows_zero_length_tasks_and_escapes():
    spans = [Span("w<1>", "a&b", 1, 2.0, 2.0, "completed"), Span("w<1>", "a&b", 2, 0, 4, "x")]
    bars = _rects(_parse(timeline(spans)), "task")
    assert {b.attrib["data-lane"] for b in bars} == {"w<1>"}
    assert min(_f(b, "width") for b in bars) >= 1


def test_timeline_without_spans_says_so():
    root = _parse(timeline([]))
    assert "no tasks recorded" in _texts(root)
    assert _rects(root, "task") == []


# -- histogram -------------------------------------------------------------------------------

def test_histogram_bar_heights_follow_counts():
    bars = _rects(_parse(histogram([1, 2, 4], [0, 1, 2, 3])), "bar")
    heights = [_f(b, "height") for b in bars]
    assert [int(b.attrib["data-count"]) for b in bars] == [1, 2, 4]
    assert heights[1] == pytest.approx(2 * heights[0], abs=1)
    assert heights[2] == pytest.approx(4 * heights[0], abs=1)
    bottoms = {round(_f(b, "y") + _f(b, "height"), 2) for b in bars}
    assert len(bottoms) == 1
    xs = [_f(b, "x") for b in bars]
    assert xs == sorted(xs)


def test_histogram_bar_widths_follow_edges():
    bars = _rects(_parse(histogram([3, 3], [0.0, 1.0, 4.0])), "bar")
    # Within the hairline between bars, a pixel taken from each.
    assert _f(bars[1], "width") == pytest.approx(3 * _f(bars[0], "width"), abs=3)
    assert _f(bars[1], "x") - _f(bars[0], "x") == pytest.approx(_f(bars[0], "width"), abs=1)


def test_histogram_of_zero_counts_and_of_one_bin():
    zero = _rects(_parse(histogram([0, 0, 0], [0, 1, 2, 3])), "bar")
    assert [_f(b, "height") for b in zero] == [0, 0, 0]
    one = _rects(_parse(histogram([7], [5.0, 6.0], label="x")), "bar")
    assert len(one) == 1 and _f(one[0], "height") > 0


@pytest.mark.parametrize("edges, label", [([0, 0.35, 0.7], "0.35"), ([0, 1234, 2468], "1,234"),
                                          ([0, 600, 1200], "1.2k"), ([0, 6e4, 1.2e5], "120k")])
def test_histogram_ticks_are_compact(edges, label):
    assert label in _texts(_parse(histogram([1, 1], edges)))


def test_histogram_label_and_mismatched_edges():
    root = _parse(histogram([1], [0, 1], label="elevation <m> & more"))
    assert "elevation <m> & more" in _texts(root)
    with pytest.raises(ValueError, match="2 edges"):
        histogram([1], [0, 1, 2])
