"""How a plan reads on a terminal: the heading ``run`` prints before it starts, and the
whole of ``h3pipe plan``. One renderer, so the two always agree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from h3pipe.api import Coverage

if TYPE_CHECKING:
    from h3pipe.api import Forecast, Outlook, RunPlan


def heading(plan: RunPlan, view: Outlook) -> list[str]:
    """The run, its status, its cells, the sources that miss part of the scope, and each
    stage's steps, tasks and rows."""
    p = plan.pipeline
    at = f"resolution {plan.resolution}" if not plan.coarser else "resolutions " + ", ".join(
        f"{r} ({len(plan.cells_at(r)):,})" for r in plan.levels) + ", every pixel read once"
    lines = [f"run {plan.run_id}: {view.detail}",
             f"  pipeline {p.id} -> dataset {p.dataset}, {plan.scope.label}, {at}",
             f"  {view.cells:,} cells, {plan.workers} worker(s), batches of up to "
             f"{plan.batch_size:,} cells"]
    lines += sweep_lines(plan)
    lines += [f"  coverage: {line}" for line in Coverage.of_plan(plan).notes()]
    for s in view.stages:
        mark = "~" if s.estimate else ""
        line = (f"  stage {s.number} [{', '.join(s.steps)}]: {mark}{s.tasks:,} task(s), "
                f"{mark}{s.rows:,} {s.unit}")
        lines.append(line + (f" (estimated: {s.estimate})" if s.estimate else ""))
    return lines


def sweep_lines(plan: RunPlan) -> list[str]:
    """A sweep's scenarios (and bands), and those skipped for want of data in the scope."""
    if plan.sweep is None:
        return []
    lines = []
    for sid, found in plan.sweep.rasters.items():
        bands = plan.sources[sid].band_names
        per = f" x {len(bands)} bands ({', '.join(bands)})" if bands else ""
        lines.append(f"  sweep: {len(found)} scenario(s) of {sid}{per}")
        carried = [sc.id for sc, _ in found if sc.id in plan.sweep.carried]
        if carried:
            lines.append(f"  kept: {len(carried)} scenario(s) already in the scope's result "
                         f"from the same inputs; computing {len(found) - len(carried)}")
        missing = plan.sweep.missing.get(sid, ())
        if missing:
            lines.append(f"  skipped: {len(missing)} scenario(s) of {sid} with no data in "
                         f"{plan.scope.label}: {', '.join(missing)}")
    return lines


def report(rep: Forecast) -> list[str]:
    """The heading, then every source over the scope, then the estimate."""
    lines = heading(rep.plan, rep.outlook)
    lines.append("sources:")
    for f in rep.sources:
        size = f"{f.bytes / 1e6:,.1f} MB" if f.bytes is not None else "size unknown"
        what = "file" if f.kind == "vector" else ("STAC item(s)" if f.kind == "stac"
                                                  else "tile(s)")
        text = f"  {f.source_id} ({f.kind}): {f.files} {what}, {size} ({f.bytes_how})"
        if f.pixels is not None:
            text += (f", {f.pixels:,} pixels in the scope, "
                     f"{f.pixels_per_cell or 0:,.1f} per cell (pixels about "
                     f"{f.pixel_m or 0:,.0f} m)")
        if f.features is not None:
            text += (f", {'' if f.counted else 'about '}{f.features:,} features in the scope"
                     f" ({f.partitions:,} partitions, {f.batches:,} batches per step)")
        lines.append(text)
        lines += [f"    warning: {w}" for w in f.warnings]
    e = rep.estimate
    lines.append(f"estimate: about {_duration(e.seconds)} wall ({e.basis}), peak memory "
                 f"about {e.peak_rss_mb:,.0f} MB ({e.memory_basis})")
    lines += [f"  {c.step_id}: about {_duration(c.seconds)} ({c.how})" for c in e.steps]
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
