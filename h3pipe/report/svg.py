"""Small charts for the run report as inline SVG strings: :func:`step_graph` (the steps of
:class:`GraphStep` by stage), :func:`timeline` (the :class:`Span` of each task, per worker)
and :func:`histogram`. Standard library only, and nothing refers outside the picture (no
fonts, links, scripts or ids), so a page holding several of them still opens offline.

Every rect that stands for data has a ``class`` (``step``, ``task``, ``bar``), ``data-``
attributes with its values and a ``<title>`` that browsers show on hover.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

SVG_NS = "http://www.w3.org/2000/svg"
TEXT = "#333333"
MUTED = "#777777"
AXIS = "#999999"
FAILED = "#c62828"
# (fill, outline): tints of the report's status badges, so the text on a box stays legible.
STATUS_COLOURS = {
    "completed": ("#c8e6c9", "#2e7d32"),
    "failed": ("#ffcdd2", FAILED),
    "interrupted": ("#ffe0b2", "#ef6c00"),
    "running": ("#bbdefb", "#1565c0"),
    "pending": ("#eeeeee", "#9e9e9e"),
}
# tab20 as in the maps, without its reds (a failed task's outline) and greys (read as idle):
# the dark tones first, so a small pipeline gets the most distinct ones.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2",
           "#dbdb8d", "#9edae5")

# XML 1.0 cannot carry these characters at all, escaped or not.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class GraphStep:
    """One step of a run as :func:`step_graph` draws it."""

    step_id: str
    stage: int  # 1-based barrier stage
    operation: str
    status: str  # pending | running | completed | failed | interrupted
    needs: tuple[str, ...] = ()  # step ids this step reads from (edges needs -> step)


@dataclass(frozen=True)
class Span:
    """One task on one worker, in seconds since the run started."""

    lane: str  # the worker that ran the task
    step_id: str
    task_no: int
    start: float
    end: float  # >= start
    status: str  # completed | failed | running ...
    rows_in: int = 0


# -- the pieces every chart is made of ------------------------------------------------------

def _esc(text: object) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(text)), quote=True)


def _num(value: float) -> str:
    """A coordinate, to the hundredth of a pixel: exact enough, and short."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _svg(width: int, height: int, label: str, parts: Iterable[str]) -> str:
    return (f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(label)}" '
            'font-family="sans-serif" font-size="11">'
            + "".join(parts) + "</svg>")


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = 11,
          fill: str = TEXT, weight: str = "normal") -> str:
    # Text over a box lets the pointer through, so the box's tooltip shows there too.
    return (f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}" '
            f'font-weight="{weight}" fill="{fill}" pointer-events="none">{_esc(text)}</text>')


def _rect(cls: str, box: tuple[float, float, float, float], fill: str, title: str,
          data: Mapping[str, object], extra: str = "") -> str:
    x, y, w, h = box
    attrs = "".join(f' data-{k}="{_esc(v)}"' for k, v in data.items())
    return (f'<rect class="{cls}" x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" '
            f'height="{_num(h)}" fill="{fill}"{extra}{attrs}><title>{_esc(title)}</title>'
            "</rect>")


def _line(x1: float, y1: float, x2: float, y2: float, colour: str = AXIS) -> str:
    return (f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
            f'stroke="{colour}" stroke-width="1"/>')


def _empty(width: int, height: int, message: str) -> str:
    return _svg(width, height, message,
                [_text(width / 2, height / 2 + 4, message, anchor="middle", fill=MUTED)])


def _fit(text: str, width: float, size: int = 11) -> str:
    """The text cut to what fits in width pixels (sans-serif: about 0.6 em a character)."""
    room = max(1, int(width / (size * 0.6)))
    return text if len(text) <= room else text[: room - 1] + "…"


def _natural(name: str) -> tuple[int | str, ...]:
    """A sort key that puts w2 before w10: split() leaves the digit runs at odd places."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", name)))


# -- step graph ------------------------------------------------------------------------------

BOX_W, BOX_H = 168, 36
COL_GAP, ROW_GAP = 48, 12
PAD, HEAD = 12, 22


def step_graph(steps: Sequence[GraphStep]) -> str:
    """Steps as boxes, one column per stage from left to right, with an arrow from each
    step it needs; fill by status. A need that is not among the steps draws no arrow."""
    if not steps:
        return _empty(240, 48, "no steps")
    places = _place_steps(steps)
    stages = sorted({s.stage for s in steps})
    rows = max(sum(1 for s in steps if s.stage == st) for st in stages)
    width = 2 * PAD + len(stages) * BOX_W + (len(stages) - 1) * COL_GAP
    height = 2 * PAD + HEAD + rows * BOX_H + (rows - 1) * ROW_GAP
    parts = [*_stage_heads(stages), *_edges(steps, places),
             *(_step_box(s, places[i]) for i, s in enumerate(steps))]
    label = f"step graph: {len(steps)} steps in {len(stages)} stages"
    return _svg(width, height, label, parts)


def _place_steps(steps: Sequence[GraphStep]) -> list[tuple[float, float]]:
    """Each step's top left corner: its stage's column, the next free row in it."""
    column = {st: i for i, st in enumerate(sorted({s.stage for s in steps}))}
    used: dict[int, int] = {}
    places: list[tuple[float, float]] = []
    for s in steps:
        row = used[s.stage] = used.get(s.stage, -1) + 1
        places.append((PAD + column[s.stage] * (BOX_W + COL_GAP),
                       PAD + HEAD + row * (BOX_H + ROW_GAP)))
    return places


def _stage_heads(stages: Sequence[int]) -> list[str]:
    return [_text(PAD + i * (BOX_W + COL_GAP) + BOX_W / 2, PAD + 10, f"stage {st}",
                  anchor="middle", fill=MUTED) for i, st in enumerate(stages)]


def _edges(steps: Sequence[GraphStep], places: Sequence[tuple[float, float]]) -> list[str]:
    where: dict[str, tuple[float, float]] = {}
    for s, place in zip(steps, places, strict=True):
        where.setdefault(s.step_id, place)
    return [_edge(need, s.step_id, where[need], place)
            for s, place in zip(steps, places, strict=True)
            for need in s.needs if need in where]


def _edge(source: str, target: str, start: tuple[float, float],
          end: tuple[float, float]) -> str:
    """A curve from the right side of the needed box to an arrowhead on the left of the
    step's box."""
    x1, y1 = start[0] + BOX_W, start[1] + BOX_H / 2
    x2, y2 = end[0], end[1] + BOX_H / 2
    bend = max(16.0, (x2 - x1) / 2)
    path = (f"M {_num(x1)} {_num(y1)} C {_num(x1 + bend)} {_num(y1)} "
            f"{_num(x2 - 6 - bend)} {_num(y2)} {_num(x2 - 6)} {_num(y2)}")
    head = f"{_num(x2)},{_num(y2)} {_num(x2 - 7)},{_num(y2 - 4)} {_num(x2 - 7)},{_num(y2 + 4)}"
    return (f'<path class="edge" data-from="{_esc(source)}" data-to="{_esc(target)}" '
            f'd="{path}" fill="none" stroke="{AXIS}" stroke-width="1.2"/>'
            f'<polygon class="arrowhead" points="{head}" fill="{AXIS}"/>')


def _step_box(step: GraphStep, place: tuple[float, float]) -> str:
    fill, outline = STATUS_COLOURS.get(step.status, STATUS_COLOURS["pending"])
    x, y = place
    needs = f", needs {', '.join(step.needs)}" if step.needs else ""
    title = f"{step.step_id} ({step.operation}): {step.status}, stage {step.stage}{needs}"
    data = {"step": step.step_id, "stage": step.stage, "status": step.status}
    outlined = f' stroke="{outline}" stroke-width="1" rx="4"'
    return (_rect("step", (x, y, BOX_W, BOX_H), fill, title, data, outlined)
            + _text(x + 8, y + 15, _fit(step.step_id, BOX_W - 16, 12), size=12, weight="bold")
            + _text(x + 8, y + 29, _fit(step.operation, BOX_W - 16), fill=MUTED))


# -- timeline --------------------------------------------------------------------------------

TL_WIDTH = 900
LABEL_W, RIGHT = 110, 16
TOP, LANE_H, BAR_H = 8, 22, 16
AXIS_H, LEGEND_H = 30, 18


@dataclass(frozen=True)
class _Axis:
    """Seconds t0..t1 over the pixels left..left + width, with a tick every step seconds."""

    t0: float
    t1: float
    step: float
    left: float = LABEL_W
    width: float = TL_WIDTH - LABEL_W - RIGHT

    def x(self, t: float) -> float:
        return self.left + (t - self.t0) / (self.t1 - self.t0) * self.width

    def ticks(self) -> list[float]:
        # The slack keeps float error (0.1 * 3 > 0.3) from dropping the end ticks.
        first = math.ceil(self.t0 / self.step - 1e-9)
        last = math.floor(self.t1 / self.step + 1e-9)
        return [k * self.step for k in range(first, last + 1)]


def timeline(spans: Sequence[Span], *, step_order: Sequence[str] = ()) -> str:
    """A Gantt chart: a lane per worker, a bar per task on a shared axis of seconds, coloured
    by step (step_order first, then the others by name); failed tasks outlined in red."""
    if not spans:
        return _empty(TL_WIDTH, 40, "no tasks recorded")
    lanes = sorted({s.lane for s in spans}, key=_natural)
    colours = _step_colours(spans, step_order)
    axis = _time_axis(spans)
    bottom = TOP + len(lanes) * LANE_H
    legend, legend_rows = _legend(colours, bottom + AXIS_H)
    row = {lane: i for i, lane in enumerate(lanes)}
    parts = [*_lanes(lanes), *_grid(axis, bottom),
             *(_task_bar(s, axis, TOP + row[s.lane] * LANE_H, colours) for s in spans), *legend]
    label = (f"timeline: {len(spans)} tasks on {len(lanes)} workers over "
             f"{max(s.end for s in spans):.2f} s")
    return _svg(TL_WIDTH, bottom + AXIS_H + legend_rows * LEGEND_H + 4, label, parts)


def _step_colours(spans: Sequence[Span], step_order: Sequence[str]) -> dict[str, str]:
    """The present steps' colours; a step keeps its place in step_order's colours even when
    an earlier step ran no task, so one step looks the same across charts of a run."""
    present = {s.step_id for s in spans}
    order = list(dict.fromkeys([*step_order, *sorted(present - set(step_order))]))
    return {step: PALETTE[i % len(PALETTE)] for i, step in enumerate(order) if step in present}


def _time_axis(spans: Sequence[Span]) -> _Axis:
    t0 = min(0.0, min(s.start for s in spans))
    extent = max(max(s.end for s in spans) - t0, 0.01)  # tasks of no length at 0 still scale
    step = _nice_step(extent)
    return _Axis(t0, math.ceil((t0 + extent) / step - 1e-9) * step, step)


def _nice_step(extent: float, ticks: int = 8) -> float:
    """The round step (1, 2 or 5 times a power of ten) giving at most about `ticks` ticks."""
    raw = extent / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def _lanes(lanes: Sequence[str]) -> list[str]:
    out = []
    for i, lane in enumerate(lanes):
        y = TOP + i * LANE_H
        fill = "#f5f5f5" if i % 2 == 0 else "#fbfbfb"
        out.append(f'<rect class="lane" x="{LABEL_W}" y="{y}" width="{TL_WIDTH - LABEL_W - RIGHT}"'
                   f' height="{LANE_H}" fill="{fill}"/>')
        out.append(_text(LABEL_W - 8, y + LANE_H / 2 + 4, _fit(lane, LABEL_W - 12),
                         anchor="end"))
    return out


def _grid(axis: _Axis, bottom: float) -> list[str]:
    """A faint line per tick across the lanes, the tick and its label under them."""
    decimals = max(0, -math.floor(math.log10(axis.step) + 1e-9))
    out = [_line(axis.left, bottom, axis.left + axis.width, bottom)]
    for t in axis.ticks():
        x = axis.x(t)
        out += [_line(x, TOP, x, bottom, "#e0e0e0"), _line(x, bottom, x, bottom + 4),
                _text(x, bottom + 16, f"{t:,.{decimals}f} s", anchor="middle", fill=MUTED)]
    return out


def _task_bar(span: Span, axis: _Axis, lane_y: float, colours: Mapping[str, str]) -> str:
    end = max(span.end, span.start)
    x = axis.x(span.start)
    width = max(1.0, axis.x(end) - x)  # a task of no length still shows
    title = (f"{span.step_id}#{span.task_no} on {span.lane}: {end - span.start:.2f} s "
             f"({span.start:.2f} -> {end:.2f} s), {span.rows_in:,} rows in, {span.status}")
    data = {"step": span.step_id, "lane": span.lane, "task": span.task_no,
            "start": span.start, "end": end, "status": span.status}
    stroke = f' stroke="{FAILED}" stroke-width="2"' if span.status == "failed" else ""
    box = (x, lane_y + (LANE_H - BAR_H) / 2, width, BAR_H)
    return _rect("task", box, colours[span.step_id], title, data, stroke)


def _legend(colours: Mapping[str, str], top: float) -> tuple[list[str], int]:
    """A swatch and name per step, flowing into as many rows as the width needs."""
    out: list[str] = []
    x, row = float(LABEL_W), 0
    for step, colour in colours.items():
        name = _fit(step, 200)
        size = 10 + 4 + len(name) * 5.8 + 14
        if x + size > TL_WIDTH - RIGHT and x > LABEL_W:
            x, row = float(LABEL_W), row + 1
        y = top + row * LEGEND_H
        out += [f'<rect class="swatch" x="{_num(x)}" y="{_num(y)}" width="10" height="10" '
                f'fill="{colour}"/>', _text(x + 14, y + 9, name)]
        x += size
    return out, row + 1


# -- histogram -------------------------------------------------------------------------------

H_WIDTH, H_HEIGHT = 320, 140
H_LEFT, H_RIGHT, H_TOP, H_BOTTOM = 42, 14, 10, 40


def histogram(counts: Sequence[int], edges: Sequence[float], *, label: str = "") -> str:
    """Bars for the bins between consecutive edges (one more edge than counts), heights by
    count, ticks at the first, middle and last edge, and label (column, units) below."""
    if len(edges) != len(counts) + 1:
        raise ValueError(f"a histogram of {len(counts)} bins needs {len(counts) + 1} edges, "
                         f"got {len(edges)}")
    if not counts:
        return _empty(H_WIDTH, H_HEIGHT, "no values")
    xs = _edge_xs(edges)
    peak = max(max(counts), 0)
    parts = [*_bars(counts, edges, xs, peak), *_histogram_axes(edges, xs, peak)]
    if label:
        parts.append(_text(H_LEFT + (H_WIDTH - H_LEFT - H_RIGHT) / 2, H_HEIGHT - 6, label,
                           anchor="middle", fill=MUTED))
    return _svg(H_WIDTH, H_HEIGHT, f"histogram of {label}" if label else "histogram", parts)


def _edge_xs(edges: Sequence[float]) -> list[float]:
    """Each edge's x; bins of equal width when the edges cannot be scaled (open or unsorted)."""
    width = H_WIDTH - H_LEFT - H_RIGHT
    lo, hi = edges[0], edges[-1]
    ordered = all(a <= b for a, b in zip(edges, edges[1:], strict=False))
    if ordered and all(math.isfinite(e) for e in edges) and hi > lo:
        return [H_LEFT + (e - lo) / (hi - lo) * width for e in edges]
    return [H_LEFT + i / (len(edges) - 1) * width for i in range(len(edges))]


def _bars(counts: Sequence[int], edges: Sequence[float], xs: Sequence[float],
          peak: int) -> list[str]:
    base, room = H_HEIGHT - H_BOTTOM, H_HEIGHT - H_BOTTOM - H_TOP
    out = []
    for i, count in enumerate(counts):
        height = max(count, 0) / peak * room if peak else 0.0
        inset = 0.5 if xs[i + 1] - xs[i] > 3 else 0.0  # a hairline between wide bars
        box = (xs[i] + inset, base - height, max(0.5, xs[i + 1] - xs[i] - 2 * inset), height)
        title = f"{edges[i]:,.6g} to {edges[i + 1]:,.6g}: {count:,}"
        out.append(_rect("bar", box, PALETTE[0], title, {"count": count}))
    return out


def _histogram_axes(edges: Sequence[float], xs: Sequence[float], peak: int) -> list[str]:
    base = H_HEIGHT - H_BOTTOM
    out = [_line(H_LEFT, base, H_WIDTH - H_RIGHT, base), _line(H_LEFT, H_TOP, H_LEFT, base),
           _text(H_LEFT - 4, base + 4, "0", anchor="end", fill=MUTED)]
    if peak:
        out.append(_text(H_LEFT - 4, H_TOP + 4, _compact(peak), anchor="end", fill=MUTED))
    last = len(edges) - 1
    for i in sorted({0, last // 2, last}):
        anchor = "start" if i == 0 else "end" if i == last else "middle"
        out += [_line(xs[i], base, xs[i], base + 4),
                _text(xs[i], base + 15, _compact(edges[i]), anchor=anchor, fill=MUTED)]
    return out


def _compact(value: float) -> str:
    """A tick label: 0.35, 250, 1,234, 1.2k, 56.8k, 3.1M."""
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size < 999.5:  # from 999.5 on, three digits would round to 1e+03
        return f"{value:.3g}"
    if size < 10_000 and value % 100:
        return f"{value:,.0f}"
    for divisor, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        text = f"{value / divisor:.3g}"
        if "e" not in text and abs(float(text)) < 1000:
            return text + unit
    return f"{value:.3g}"


__all__ = ["GraphStep", "Span", "histogram", "step_graph", "timeline"]
