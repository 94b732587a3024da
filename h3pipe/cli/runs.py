"""``h3pipe runs list`` and ``h3pipe runs show``: what ran, when, and how it ended."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from h3pipe.cli import output
from h3pipe.cli.app import app, print_table, project_of, stamp

runs_app = typer.Typer(help="Inspect recorded runs.\n\nExample:\n\n    h3pipe runs list",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def list_(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option(help="Only runs of this pipeline.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> int:
    """List recent runs, newest first. Safe to use while a run is writing. A run recorded
    as running whose process is gone shows as 'running (dead)'.

    Example:

        h3pipe runs list --pipeline elevation_terrain
    """
    rows = project_of(ctx).runs(limit=limit, pipeline=pipeline)
    if not rows:
        typer.echo("no runs yet")
        return 0
    print_table(["run", "pipeline", "scope", "res", "cells", "status", "started", "finished"],
                [[r["run_id"], r["pipeline_id"], r["scope_label"], str(r["resolution"]),
                  str(r["cells"]), _status(r), stamp(r["started_at"]), stamp(r["finished_at"])]
                 for r in rows])
    return 0


@runs_app.command("show")
def show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id, a unique prefix of it, or 'latest'.")],
    fmt: Annotated[str, typer.Option("--format", help="text, or json: the run-results "
                                     "document (docs/orchestrators.md).")] = "text",
) -> int:
    """Show one run: its steps, timings, rows in and out, any error, and what its rasters
    cover of the scope (cells with no valid pixel). Exits 1 when the run failed, was
    interrupted, or is recorded as running but its process is gone.

    Example:

        h3pipe runs show elevation_terrain-r6-1a2b3c4d5e6f

        h3pipe runs show latest --format json
    """
    if fmt not in ("text", "json"):
        raise typer.BadParameter(f"'{fmt}' is not one of text, json", param_hint="--format")
    if fmt == "json":
        import json

        doc = project_of(ctx).run_results(run_id)
        output.say(json.dumps(doc, indent=2, default=str))  # scrubbed, as every line
        return 0 if doc["run"]["status"] == "completed" else 1
    r = project_of(ctx).run_record(run_id)
    echo = typer.echo
    echo(f"run:        {r['run_id']}")
    echo(f"pipeline:   {r['pipeline_id']} (version {r['pipeline_version']}, {r['pipeline_hash']})")
    levels = (r.get("params") or {}).get("resolutions")  # a run of several resolutions
    at = f"resolutions {', '.join(map(str, levels))}" if levels else f"resolution {r['resolution']}"
    echo(f"scope:      {r['scope_label']}, {at}, {r['cells']} cells")
    echo(f"status:     {_status(r)}")
    if r["dead"]:
        echo(f"dead:       {r['dead']}; 'h3pipe resume {r['run_id']}' takes it over, "
             "'h3pipe clean' records it failed")
    echo(f"started:    {stamp(r['started_at'])}   finished: {stamp(r['finished_at'])}")
    most = r["params"].get("max_batch_size")
    echo(f"settings:   batch size {r['params']['batch_size']} cells"
         + (f" (rows: at most {most} per task)" if most else "")
         + f", workers {r['params']['workers']}")
    if r["error"]:
        echo(f"error:      {r['error']}")
    _scenarios(r["params"])
    _coverage(r["params"])
    _conservation(r["params"])
    if r["items"]:
        by_source: dict[str, list[str]] = {}
        for item in r["items"]:
            by_source.setdefault(item["source_id"], []).append(item["item_id"])
        for source, ids in by_source.items():
            more = f", ... ({len(ids)} in all)" if len(ids) > 4 else ""
            echo(f"items:      {source}: {', '.join(ids[:4])}{more}")
    done = [st["step_id"] for st in r["steps"] if st["status"] == "completed"]
    failed = [st for st in r["steps"] if st["status"] == "failed"]
    echo(f"last successful step: {done[-1] if done else '-'}")
    if failed:
        echo(f"first failure:        {failed[0]['step_id']}: {failed[0]['error']}")
    echo("steps:")
    for s in r["steps"]:
        echo(f"  stage {s['stage']} {s['step_id']} ({s['operation']}): {s['status']}, "
             f"tasks {s['tasks_done']}/{s['tasks_total']}, rows in {s['rows_in']}, "
             f"rows out {s['rows_out']}" + (f", error: {s['error']}" if s["error"] else ""))
    for t in r["failed_tasks"]:
        echo(f"  failed task {t['step_id']}#{t['task_no']} ({t['rows_in']} rows in): {t['error']}")
    _timeline(r)
    return 1 if r["status"] in ("failed", "interrupted") or r["dead"] else 0


def _timeline(r: dict[str, Any]) -> None:
    echo = typer.echo
    if r["events"]:
        echo(f"timeline ({r['task_events']} task events not shown):")
        for e in r["events"]:
            detail = f": {e['detail']}" if e["detail"] else ""
            echo(f"  {stamp(e['at'])} {e['kind']:7s} {e['subject']} {e['status']}{detail}")
    if r["slowest_tasks"]:
        echo("slowest tasks:")
        for t in r["slowest_tasks"]:
            echo(f"  {t['step_id']}#{t['task_no']}: {t['seconds']:.2f} s, {t['rows_in']} rows in")
    if r["slowest_tiles"]:
        echo("slowest tiles (time spent reading and decoding them):")
        for t in r["slowest_tiles"]:
            echo(f"  {t['tile']}: {t['seconds']:.2f} s over {t['tasks']} task(s)")


def _scenarios(params: dict[str, Any]) -> None:
    """A sweep's scenarios: how many it computed, which it skipped for want of data."""
    if "scenarios" not in params:
        return
    ids = params["scenarios"]
    more = f", ... ({len(ids)} in all)" if len(ids) > 4 else ""
    typer.echo(f"scenarios:  {', '.join(ids[:4])}{more}")
    for source, missing in params.get("missing_scenarios", {}).items():
        typer.echo(f"skipped:    {source}: {', '.join(missing)} (no data in the scope)")


def _coverage(params: dict[str, Any]) -> None:
    """Sources that miss part of the scope, cells with no valid pixel, sparse datasets."""
    # The API (0.35 s: pyarrow, numpy, shapely, jsonschema) loads when the command runs,
    # not for --help (0.07 s).
    from h3pipe.api import Coverage

    found = Coverage.recorded(params)
    if found is None:
        return
    for line in found.notes():
        typer.echo(f"coverage:   {line}")
    for line in found.warnings():
        typer.echo(f"warning:    {line}")


def _conservation(params: dict[str, Any]) -> None:
    """An extensive variable's sums, against the raster's (h3pipe.execution.balance)."""
    from h3pipe.api import conservation_lines

    for line in conservation_lines(params):
        typer.echo(f"conservation: {line}")


def _status(run: dict[str, Any]) -> str:
    return f"{run['status']} (dead)" if run["dead"] else str(run["status"])


@runs_app.command("report")
def report(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id, a unique prefix of it, or 'latest'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")
                      ] = Path("report.html"),
    max_maps: Annotated[int, typer.Option(help="Draw maps of at most this many columns.",
                                          min=0)] = 12,
) -> int:
    """Write one self-contained HTML page about a run (no network needed to open it; it can
    be mailed): its summary and exit code, the step graph and stages, a timeline of tasks
    per worker, the slowest tasks and tiles, the inputs with their licences and STAC items,
    the checks (validation, conservation), and per published column a summary, a
    histogram and a map. A failed or interrupted run gets its error and what a resume would
    redo.

    Example:

        h3pipe runs report latest -o report.html
    """
    r = project_of(ctx).report(run_id, output, max_maps=max_maps)
    typer.echo(f"wrote the report of run {r['run_id']} ({r['status']}) to {output}")
    return 0


@runs_app.command("cancel")
def cancel(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(
        help="The running run to stop: its id, a unique prefix of it, or 'latest'.")],
) -> int:
    """Stop a run started elsewhere: it takes no new task, lets running ones finish within
    its grace period, is recorded as interrupted, and can be resumed later.

    Example:

        h3pipe runs cancel elevation_terrain-r6-1a2b3c4d5e6f

        h3pipe runs cancel latest
    """
    typer.echo(project_of(ctx).cancel(run_id))
    return 0


@runs_app.command("wait")
def wait(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id, a unique prefix of it, or 'latest'.")],
) -> int:
    """Wait for a run to end (a queue run submitted with --detach, or one running in
    another process) and exit as 'h3pipe run' would have: 0 completed, 1 failed, 130
    interrupted. Stopping the wait leaves the run alone.

    Example:

        h3pipe runs wait elevation_terrain-r6-1a2b3c4d5e6f
    """
    # It imports the API (0.35 s): loaded when the command runs, not for --help.
    from h3pipe.cli.progress import make_reporter
    row = project_of(ctx).wait(run_id, make_reporter())
    output.say(f"run {row['run_id']} completed: {row['cells']} cells of {row['scope_label']} "
               f"at resolution {row['resolution']} -> dataset {row['dataset']}")
    return 0
