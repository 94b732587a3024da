"""``h3pipe run``: run a pipeline over a scope and publish its per-cell results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from h3pipe.cli import options as opt
from h3pipe.cli import output
from h3pipe.cli.app import app, project_of
from h3pipe.errors import UsageError

if TYPE_CHECKING:
    from h3pipe.api import Project, RunResult, Submitted


@app.command("run")
def run(
    ctx: typer.Context,
    pipeline: opt.Pipeline,
    iso3: opt.Iso3 = None,
    bbox: opt.Bbox = None,
    aoi: opt.Aoi = None,
    resolution: opt.Resolutions = None,
    batch_size: opt.BatchSize = None,
    workers: opt.Workers = None,
    force: opt.Force = False,
    from_step: opt.FromStep = None,
    wait: Annotated[bool, typer.Option("--wait", help="If the same run is running "
                                       "elsewhere, wait for it instead of exiting 75.")] = False,
    grace: opt.Grace = 30.0,
    queue: opt.Queue = None,
    detach: Annotated[bool, typer.Option("--detach", help="With a queue: submit the run, "
                                         "print its id and exit 0; workers advance it.")] = False,
    max_null_share: Annotated[float | None, typer.Option(
        "--max-null-share", min=0.0, max=1.0,
        help="Warn when more than this share of a published dataset's cells have no valid "
             "pixel (default: defaults.max_null_share, else 0.5).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 65 after publishing when a dataset has more null cells than "
                         "--max-null-share allows (for CI).")] = False,
) -> int:
    """Compute a pipeline for the H3 cells whose centres lie in the scope.

    The same pipeline, scope, resolution and sources make the same run: once completed it
    is reported, not recomputed (--force recomputes); a failed or interrupted run resumes,
    keeping the tasks it completed. Stopped by SIGINT/SIGTERM, it takes no new task, lets
    running ones finish within --grace seconds, and is recorded as interrupted.

    Example:

        h3pipe run elevation_terrain --iso3 RWA --resolution 6

        h3pipe run elevation_terrain --bbox 29.0,-2.5,30.0,-1.5 --workers 2

        h3pipe run elevation_terrain --iso3 RWA,BDI,UGA --resolution 6

        h3pipe run elevation_terrain --iso3 @eac   # a group of h3pipe.yaml's 'groups:'

        h3pipe run population --iso3 RWA --resolution 4-9

    Several resolutions are one run that reads every pixel once and computes each
    resolution exactly (each cell its own coverage fractions), published per resolution,
    when the pipeline is zonal_stats over cells followed by row-wise steps; otherwise (and
    with a queue) each resolution is its own run, and a line says why. Several countries
    run one after another, each its own run; a failing one does not stop the others, a
    table sums them up, and the exit code is the worst of theirs.

        h3pipe --store postgresql://h3@db/h3 run elevation_terrain --iso3 RWA --queue amqp://mq//

    With --queue (or H3PIPE_QUEUE), batches go to 'h3pipe worker' processes on any machine;
    this command follows the run (Ctrl-C cancels it) unless --detach.

        h3pipe run elevation_terrain --iso3 BDI -r 5 --strict --max-null-share 0.2

    A raster that covers only part of the scope is named, with its share of the scope and
    the cells with no valid pixel; a published dataset with more null cells than
    --max-null-share warns, and with --strict exits 65 (the data is published all the same).
    """
    # The API (0.35 s: pyarrow, numpy, shapely, jsonschema) loads when the command runs,
    # not for --help (0.07 s).
    from h3pipe.api import parse_resolutions
    project = project_of(ctx)
    given = parse_resolutions(resolution) if resolution is not None else None
    options = {"batch_size": batch_size, "workers": workers, "force": force,
               "from_step": from_step, "wait": wait, "grace_seconds": grace,
               "max_null_share": max_null_share, "strict": strict}
    if project.queue_settings(queue) is None and detach:
        raise UsageError("--detach needs a queue", hint="pass --queue amqp://... or set "
                         "H3PIPE_QUEUE")
    several = bool(iso3 and ("," in iso3 or iso3.strip().startswith("@"))
                   and not (bbox or aoi))
    levels: list[int | None] = [given[0]] if given and len(given) == 1 \
        else project.resolutions(pipeline, resolution)
    run = Launch(project, pipeline, queue, detach, options)
    if len(levels) > 1 and _shared(project, pipeline, queue, levels):
        run.together = tuple(r for r in levels if r is not None)
        levels = [None]
    if several or len(levels) > 1:
        return _run_many(run, levels, iso3=iso3, several=several, bbox=bbox, aoi=aoi)
    run.one(levels[0], iso3=iso3, bbox=bbox, aoi=aoi)
    return 0


def _shared(project: Project, pipeline: str, queue: str | None, levels: list[int | None]
            ) -> bool:
    """Whether the resolutions are one run that reads every pixel once; else a line says
    why each is its own run."""
    why = project.why_unshared(pipeline)
    if why is None and project.queue_settings(queue) is not None:
        why = "a queue runs one resolution a run"
    if why is None:
        return True
    output.info(f"each resolution is its own run (reading the rasters again): {why}")
    return False


class Launch:
    """One command's runs: the same pipeline, queue and options, for each scope and level."""

    def __init__(self, project: Project, pipeline: str, queue: str | None, detach: bool,
                 options: dict[str, Any]) -> None:
        self.project, self.pipeline, self.queue = project, pipeline, queue
        self.detach, self.options = detach, options
        # Resolutions computed together by each run (one read of every pixel), if any.
        self.together: tuple[int, ...] = ()

    def one(self, resolution: int | None, **scope_of: Any) -> str:
        """One scope: run it here or through the queue, say how it went, and return that
        in a few words."""
        from h3pipe.api import ScopeRef, Submitted

        # It imports the API (0.35 s): loaded when the command runs, not for --help.
        from h3pipe.cli.progress import make_reporter

        scope = ScopeRef.given(**scope_of)
        options = {**self.options, "resolutions": self.together} if self.together \
            else self.options
        done = self.project.run(self.pipeline, scope, resolution, queue=self.queue,
                                detach=self.detach, reporter=make_reporter(), **options)
        if isinstance(done, Submitted):
            _submitted(done)
            return f"run {done.run_id} {'submitted' if done.state != 'already' else 'done'}"
        _say(done, scope_of.get("iso3"))
        if done.coverage is not None:
            done.coverage.check()  # --strict: too many null cells exit 65, data published
        return f"run {done.run_id} {done.state}: {done.rows} rows"


def _run_many(run: Launch, levels: list[int | None], *, iso3: str | None, several: bool,
              **scope_of: Any) -> int:
    """Each country and resolution as its own run, on past failures; a summary table;
    the worst exit code."""
    from h3pipe.api import worst

    project = run.project
    codes: list[str | None] = list(project.countries(iso3)) if several and iso3 else [iso3]
    project.load()  # a broken project fails once, not once per run
    jobs = {_label(c, r): (c, r) for c in codes for r in levels}
    if len(codes) > 1:
        output.info(f"{len(codes)} countries: {', '.join(str(c) for c in codes)}")
    if len(levels) > 1:
        output.info(f"{len(levels)} resolutions: {', '.join(str(r) for r in levels)}")

    def one(label: str) -> str:
        code, res = jobs[label]
        return run.one(res, iso3=code, **scope_of)

    def failed(label: str, exc: Exception) -> None:
        output.error(f"error: {label}: {exc}")

    outcomes = project.run_each(list(jobs), one, failed)
    _summary(outcomes, "country" if len(levels) == 1 else "run")
    return worst(outcomes)


def _label(code: str | None, res: int | None) -> str:
    parts = [code] if code else []
    return " ".join(parts + ([f"r{res}"] if res is not None else [])) or "run"


def _summary(outcomes: list[Any], kind: str) -> None:
    """One line per run: exit code, seconds, and what it published or why it failed."""
    lines = [(kind, "exit", "seconds", "outcome")]
    for o in outcomes:
        what = o.result if o.error is None else o.error.message
        lines.append((o.code, str(o.exit_code), f"{o.seconds:.1f}", " ".join(what.split())))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    for line in lines:
        output.say(f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]:>{widths[2]}}  "
                   f"{line[3]}")
    bad = [o.code for o in outcomes if o.exit_code]
    noun = "countries" if kind == "country" else "runs"
    output.say(f"{len(outcomes) - len(bad)} of {len(outcomes)} {noun} completed"
               + (f"; failed: {', '.join(bad)}" if bad else ""))


def _submitted(done: Submitted) -> None:
    if done.state == "already":
        output.say(f"run {done.run_id} already completed; nothing recomputed (--force to "
                   "recompute)")
        return
    typer.echo(done.run_id)
    output.info(f"follow it: h3pipe runs show {done.run_id}; wait for it: h3pipe runs wait "
                f"{done.run_id}")


def _say(result: RunResult, iso3: str | None) -> None:
    levels = ", ".join(str(r) for r in result.resolutions)
    at = f"resolutions {levels}" if levels else f"resolution {result.resolution}"
    if result.state == "already":
        output.say(f"run {result.run_id} already completed: {result.cells} cells of "
                   f"{result.scope_label} at {at} -> dataset "
                   f"{result.dataset}; nothing recomputed (--force to recompute)")
        output.coverage(result.coverage)
        return
    output.say(
        f"run {result.run_id} completed{' (resumed)' if result.state == 'resumed' else ''}: "
        f"{result.cells} cells of {result.scope_label} at "
        f"{at} -> dataset {result.dataset} ({result.rows} rows) "
        f"in {result.seconds:.1f} s"
    )
    output.coverage(result.coverage)
    # The export of exactly this result: by country when given one, else by the run (a
    # run of several resolutions: the finest; -r names another).
    scope_opt = (f"--iso3 {iso3.upper()} --resolution {result.resolution}" if iso3
                 else f"--run {result.run_id}"
                 + (f" --resolution {result.resolution}" if levels else ""))
    output.info(f"export: h3pipe export {result.dataset} {scope_opt} -o "
                f"{result.dataset}.parquet")
