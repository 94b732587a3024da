"""``h3pipe runs report``: one self-contained HTML page per run (:func:`write_report`):
what was computed, from what, how long it took, which checks ran, and what the published
columns look like (summaries, histograms, maps). A failed or interrupted run gets the same
page, with its error and what a resume would redo.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe import extras
from h3pipe.config.project import ProjectConfig
from h3pipe.errors import H3PipeError
from h3pipe.execution.balance import describe
from h3pipe.planning.coverage import Coverage
from h3pipe.report import html, svg
from h3pipe.report.datasets import Selection, map_column, numbers, run_scope, style_for
from h3pipe.report.maps import figure
from h3pipe.report.meaning import Meaning, meanings
from h3pipe.results import runs as records
from h3pipe.results.formats import atomic
from h3pipe.spec import StepSpec
from h3pipe.storage.records import Row

EXIT_CODES = {"completed": 0, "failed": 1, "interrupted": 130}
MAP_SIZE = (960, 720)


def write_report(project: ProjectConfig, run_ref: str, out: Path, *, max_maps: int = 12) -> Row:
    """Write the run's report to ``out`` (atomically); return its run row."""
    extras.require("report")  # its maps; said before anything is read
    r = records.run_report(project, run_ref)
    body = [*_heading(r), *_failure(r), _steps(r), _timeline(r), _slowest(r), _inputs(r),
            _checks(r), *_results(project, r, max_maps), _events(r)]
    text = html.page(f"h3pipe run {r['run_id']}", body)
    atomic(out, "html", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return r


# -- what ran ---------------------------------------------------------------------------------

def _heading(r: Row) -> Iterator[str]:
    status = "running (dead)" if r["dead"] else r["status"]
    yield f"<h1>Run {html.escape(r['run_id'])} {html.status(r['status'])}</h1>"
    yield html.para(f"Report written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by h3pipe.",
                    "note")
    params, measured = r["params"], r["params"].get("measured", {})
    doc = r.get("pipeline_document") or {}
    yield html.section("Summary", html.pairs([
        ("pipeline", f"{r['pipeline_id']} (version {r['pipeline_version']}, "
                     f"{r['pipeline_hash']})" + (f": {doc['title']}" if doc.get("title") else "")),
        ("dataset", r["dataset"]),
        ("scope", r["scope_label"]),
        ("resolution", r["resolution"]),
        ("cells", r["cells"]),
        ("status", status),
        ("exit code", exit_code(r)),
        ("started", r["started_at"]),
        ("finished", r["finished_at"]),
        ("wall time (s)", measured.get("wall_s") or _elapsed(r)),
        ("peak memory (MB)", measured.get("peak_rss_mb")),
        ("workers", params.get("workers")),
        ("batch size (cells)", params.get("batch_size")),
        ("host", r.get("host")),
        ("queue", r.get("queue")),
    ]), anchor="summary")


def exit_code(r: Row) -> int | None:
    """What 'h3pipe run' exited with, as README's table says: 143 for SIGTERM, 65 for a
    strict run with too many null cells."""
    if r["status"] == "interrupted" and "SIGTERM" in (r["error"] or ""):
        return 143
    found = Coverage.recorded(r["params"])
    if r["status"] == "completed" and found is not None and found.exit_code:
        return found.exit_code
    return EXIT_CODES.get(r["status"])


def _elapsed(r: Row) -> float | None:
    start, end = _time(r["started_at"]), _time(r["finished_at"])
    return round(end - start, 3) if start is not None and end is not None else None


def _time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    t = dt.datetime.fromisoformat(stamp)
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _failure(r: Row) -> Iterator[str]:
    """The error, and what 'h3pipe resume' would keep and compute again."""
    if r["status"] == "completed":
        return
    if r["status"] in ("running", "pending") and not r["dead"]:
        yield html.section("Still running", html.para(
            f"The run is {r['status']}: this page shows it as it was when written; "
            f"'h3pipe runs wait {r['run_id']}' waits for its end."), anchor="failure")
        return
    parts = [html.raw_error(r["error"] or r["dead"] or f"the run is {r['status']}")]
    for t in r["failed_tasks"]:
        parts.append(html.para(f"failed task {t['step_id']}#{t['task_no']} "
                               f"({t['rows_in']} rows in): {t['error']}"))
    rows = [(s["step_id"], s["status"], s["tasks_done"], s["tasks_total"],
             _redo(s)) for s in r["steps"]]
    parts += [html.para(f"'h3pipe resume {r['run_id']}' keeps every completed task whose "
                        "output is still there and computes the rest:"),
              html.table(["step", "status", "tasks done", "tasks", "a resume computes"], rows)]
    yield html.section("What went wrong", *parts, anchor="failure")


def _redo(step: Row) -> str:
    if step["status"] == "completed":
        return "nothing (kept)"
    if not step["tasks_total"]:
        return "all of it (not started)"
    return f"{step['tasks_total'] - step['tasks_done']} of {step['tasks_total']} tasks"


def _steps(r: Row) -> str:
    needs = _needs(r.get("pipeline_document") or {})
    graph = svg.step_graph([svg.GraphStep(s["step_id"], int(s["stage"]), s["operation"],
                                          s["status"], needs.get(s["step_id"], ()))
                            for s in r["steps"]])
    rows = [(s["stage"], s["step_id"], s["operation"], s["status"], s["tasks_done"],
             s["tasks_total"], s["rows_in"], s["rows_out"], s["started_at"], s["finished_at"])
            for s in r["steps"]]
    return html.section("Steps and stages", graph, html.table(
        ["stage", "step", "operation", "status", "tasks done", "tasks", "rows in", "rows out",
         "started", "finished"], rows), anchor="steps")


def _needs(document: Row) -> dict[str, tuple[str, ...]]:
    """Each step's upstream steps, from the pipeline as the run recorded it."""
    return {step["id"]: StepSpec(step["id"], str(step.get("operation", "")),
                                 input=str(step.get("input", "cells")),
                                 depends_on=tuple(step.get("depends_on", ()))).upstream
            for step in document.get("steps", [])}


# -- how it went ------------------------------------------------------------------------------

def _timeline(r: Row) -> str:
    start = _time(r["started_at"]) or 0.0
    spans = []
    for t in r["spans"]:
        # The worker's own clock: it starts the next batch while the run records the last
        # one, so the recorded finish would overlap the next task.
        began = _time(t["started_at"])
        ended = began + t["seconds"] if began is not None and t["seconds"] is not None \
            else _time(t["finished_at"])
        if began is None or ended is None:
            continue
        spans.append(svg.Span(t["worker"] or "?", t["step_id"], int(t["task_no"]),
                              max(began - start, 0.0), max(ended - start, began - start, 0.0),
                              t["status"], int(t["rows_in"] or 0)))
    order = [s["step_id"] for s in r["steps"]]
    return html.section("Tasks per worker", svg.timeline(spans, step_order=order),
                        html.para(_busy(spans), "note"), anchor="timeline")


def _busy(spans: list[svg.Span]) -> str:
    """How much of the span of the tasks each worker was busy: idle workers show."""
    if not spans:
        return "No task recorded when it started (a run older than this report)."
    first, last = min(s.start for s in spans), max(s.end for s in spans)
    total = max(last - first, 1e-9)
    busy: dict[str, float] = {}
    count: dict[str, int] = {}
    for s in spans:
        busy[s.lane] = busy.get(s.lane, 0.0) + (s.end - s.start)
        count[s.lane] = count.get(s.lane, 0) + 1
    return "Busy: " + "; ".join(f"{lane} {busy[lane] / total:.0%} ({count[lane]} tasks)"
                                for lane in sorted(busy)) + f", over {total:.2f} s of tasks."


def _slowest(r: Row) -> str:
    tasks = html.table(["task", "seconds", "rows in"],
                       [(f"{t['step_id']}#{t['task_no']}", round(t["seconds"], 3), t["rows_in"])
                        for t in r["slowest_tasks"]])
    tiles = html.table(["tile", "seconds reading", "tasks"],
                       [(t["tile"], round(t["seconds"], 3), t["tasks"])
                        for t in r["slowest_tiles"]]) if r["slowest_tiles"] else html.para(
        "No raster tile was read (or none was timed).", "note")
    return html.section("Slowest tasks and tiles", "<h3>Tasks</h3>", tasks,
                        "<h3>Tiles (time spent opening, reading and decoding)</h3>", tiles,
                        anchor="slowest")


def _inputs(r: Row) -> str:
    parts = []
    for src in r["params"].get("inputs", []):
        prov = src.get("provenance") or {}
        parts.append(f"<h3>{html.escape(src['source'])}</h3>")
        parts.append(html.pairs([("title", src.get("title")), ("kind", src["kind"]),
                                 ("licence", src.get("license") or "not declared"),
                                 *[(k, v) for k, v in prov.items()],
                                 ("files", src["file_count"])]))
        more = src["file_count"] - min(len(src["files"]), 20)
        parts.append(html.table(["file"], [(f,) for f in src["files"][:20]])
                     + (html.para(f"... and {more} more", "note") if more > 0 else ""))
    if r["items"]:
        parts.append(f"<h3>STAC items ({len(r['items'])})</h3>")
        parts.append(html.table(["source", "item", "href (unsigned)"],
                                [(i["source_id"], i["item_id"], i["href"])
                                 for i in r["items"][:200]]))
    if not parts:
        parts.append(html.para("This run recorded no list of its inputs.", "note"))
    return html.section("Inputs", *parts, anchor="inputs")


def _checks(r: Row) -> str:
    params = r["params"]
    lines = [f"Configuration: every source and pipeline file passed its JSON Schema and the "
             f"semantic checks before the run started (pipeline {r['pipeline_hash']})."]
    lines += [f"Conservation: {line}" for line in describe(params.get("conservation", {}))]
    lines += _coverage(Coverage.recorded(params))
    if "scenarios" in params:
        lines.append(f"Scenarios computed: {len(params['scenarios'])}")
        for source, missing in params.get("missing_scenarios", {}).items():
            lines.append(f"Skipped, no data in the scope: {source}: {', '.join(missing)}")
    if not params.get("conservation"):
        lines.append("Conservation: no extensive sum was published, so none was checked.")
    return html.section("Checks", "".join(html.para(line) for line in lines), anchor="checks")


def _coverage(found: Coverage | None) -> list[str]:
    """What the rasters cover of the scope: the sources that miss part of it, the cells
    with no valid pixel, and the datasets with more null cells than allowed."""
    if found is None or not found.footprints:
        return []
    counted = bool(found.steps) and all(s.null is not None for s in found.steps)
    notes = [f"Coverage: {line}" for line in found.notes()] or [
        f"Coverage: every raster source covers all of {found.scope}"
        + (f", and every one of its {found.unit} has a valid pixel." if counted else ".")]
    return notes + [f"Warning: {line}" for line in found.warnings()]


def _events(r: Row) -> str:
    rows = [(e["at"], e["kind"], e["subject"], e["status"], e["detail"]) for e in r["events"]]
    return html.section("Events", html.table(["at", "kind", "subject", "status", "detail"],
                                             rows),
                        html.para(f"{r['task_events']} task events not shown.", "note"),
                        anchor="events")


# -- what it published ------------------------------------------------------------------------

def _results(project: ProjectConfig, r: Row, max_maps: int) -> Iterator[str]:
    if not r["published"]:
        yield html.section("Results", html.para(
            "This run holds no published result (it did not complete, or a later run of the "
            "same scope replaced it).", "note"), anchor="results")
        return
    try:
        table, entries = records.read_dataset(project, r["dataset"], run_id=r["run_id"])
    except H3PipeError as exc:
        yield html.section("Results", html.para(f"cannot read the result: {exc}"))
        return
    selection = _first_scenario(Selection(r["dataset"], table, entries, r["resolution"],
                                          run_scope(r["params"])))
    parts = [html.para(f"{table.num_rows:,} rows published" + _selection_note(table, selection))]
    known = meanings(project, r["dataset"], selection.columns, table.column_names)
    for k, column in enumerate(selection.columns):
        parts.append(_column(selection, table, known[column], draw=k < max_maps))
    if len(selection.columns) > max_maps:
        parts.append(html.para(f"Maps of the first {max_maps} columns only; draw any other "
                               "with 'h3pipe map'.", "note"))
    yield html.section("Results", '<div class="columns">' + "".join(parts) + "</div>",
                       anchor="results")


def _selection_note(table: Any, selection: Selection) -> str:
    if selection.table.num_rows == table.num_rows:
        return "."
    return (f"; summaries are over every row, maps show one scenario "
            f"({selection.table.column('scenario')[0]}).")


def _first_scenario(selection: Selection) -> Selection:
    """A sweep's rows of its first scenario (maps need one row per cell)."""
    import pyarrow.compute as pc

    table = selection.table
    if "scenario" not in table.column_names or table.num_rows == 0:
        return selection
    first = table.column("scenario")[0]
    return replace(selection, table=table.filter(pc.equal(table.column("scenario"), first)))


def _column(selection: Selection, table: Any, what: Meaning, *, draw: bool) -> str:
    column = what.column
    values = numbers(table.column(column), column)
    parts = [f'<div class="column"><h3>{html.escape(what.label)}</h3>', _summary(values)]
    parts.append(_histogram(values, what.label))
    if draw:
        try:
            fig, _ = figure(map_column(selection, column, what), style_for(what), MAP_SIZE)
        except H3PipeError as exc:
            parts.append(html.para(f"no map: {exc}", "note"))
        else:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100)
            parts.append(html.png(buffer.getvalue(), f"map of {column}"))
    return "".join(parts) + "</div>"


def _summary(values: np.ndarray) -> str:
    valid = values[~np.isnan(values)]
    row: list[Any] = [len(values), int(len(values) - len(valid))]
    row += ([float(v) for v in np.quantile(valid, [0, 0.25, 0.5, 0.75, 1])] if len(valid)
            else [None] * 5)
    return html.table(["cells", "nulls", "min", "25%", "median", "75%", "max"], [row])


def _histogram(values: np.ndarray, label: str) -> str:
    valid = values[~np.isnan(values)]
    if not len(valid):
        return html.para("no values to draw", "note")
    lo, hi = float(valid.min()), float(valid.max())
    counts, edges = np.histogram(valid, bins=20, range=(lo, hi if hi > lo else lo + 1))
    return svg.histogram([int(c) for c in counts], [float(e) for e in edges], label=label)


__all__ = ["write_report"]
