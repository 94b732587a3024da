"""The peak memory ``h3pipe plan`` estimates: from earlier runs of the same pipeline, placed
by scale, never the largest run in the store."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from h3pipe.forecast import costs
from h3pipe.forecast.memory import MB_PER_DECADE, peak_memory
from h3pipe.forecast.outlook import Outlook, StageView
from h3pipe.storage.records import RunRecord
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline


def _run(pipeline: str, cells: int, peak: float | None, *, workers: int = 2,
         status: str = "completed") -> RunRecord:
    """A run's row as the runner records it (measured once it completed)."""
    measured = {"wall_s": 3.0, "pixels": {"stats": 1000}}
    if peak is not None:
        measured["peak_rss_mb"] = peak
    return RunRecord({"run_id": f"{pipeline}-{cells}", "pipeline_id": pipeline,
                      "status": status, "cells": cells,
                      "params": json.dumps({"workers": workers, "measured": measured})})


def _estimate(plan, runs):
    view = Outlook(plan.run_id, "new", "", 0, len(plan.cells),
                   (StageView(1, ("stats",), 1, len(plan.cells), "cells"),))
    return costs.estimate(plan, view, [], runs=runs)


def test_a_small_run_is_not_estimated_as_the_largest_run_in_the_store(plan):
    n = len(plan.cells)
    # The store's largest run is another pipeline's (2.1 GB); this pipeline's one earlier
    # run, over 100 times the cells, peaked at 900 MB.
    runs = [_run("big", 5_000_000, 2100.0), _run("p", 100 * n, 900.0)]
    est = _estimate(plan, runs)
    assert est.peak_rss_mb == pytest.approx(900.0 - 2 * MB_PER_DECADE)  # two decades fewer
    assert est.peak_rss_mb < 2100.0
    assert est.memory_basis.startswith("from 1 earlier run of 'p'")


def test_between_two_runs_of_the_pipeline_the_peak_follows_the_cells(plan):
    n = len(plan.cells)
    runs = [_run("p", 10 * n, 800.0), _run("p", n // 10, 500.0), _run("big", n, 2100.0)]
    est = _estimate(plan, runs)
    # log10 of the cells: one decade above the smaller run, of the two between them.
    assert est.peak_rss_mb == pytest.approx(500.0 + (800.0 - 500.0) * math.log10(n / (n // 10))
                                            / math.log10(10 * n / (n // 10)))
    assert "by cells" in est.memory_basis


def test_beyond_the_runs_the_nearest_two_carry_on_and_never_fall(plan):
    n = len(plan.cells)
    # Both runs had more cells than this one: the line through them, a decade below.
    rising = [_run("p", 10 * n, 500.0), _run("p", 100 * n, 600.0)]
    assert _estimate(plan, rising).peak_rss_mb == pytest.approx(400.0)
    # Measured peaks that fell with more cells (noise) say nothing of other scales: the
    # nearest run's peak stands.
    falling = [_run("p", 10 * n, 600.0), _run("p", 100 * n, 500.0)]
    assert _estimate(plan, falling).peak_rss_mb == pytest.approx(600.0)


def test_other_workers_failed_runs_and_unmeasured_peaks_are_not_evidence(plan):
    n = len(plan.cells)
    runs = [_run("p", n, 3000.0, workers=4), _run("p", n, 3000.0, status="failed"),
            _run("p", n, None), _run("other", n, 3000.0)]
    est = _estimate(plan, runs)
    assert est.peak_rss_mb == costs.DEFAULT_MB[0] + 2 * costs.DEFAULT_THREAD_MB
    assert est.memory_basis == ("no earlier run of 'p' on 2 worker(s): defaults for worker "
                                "threads")
    assert peak_memory("p", n, 2, runs) is None


def test_without_a_run_worker_processes_cost_more_than_threads(plan):
    # A median comes from exactextract, which runs on worker processes, each with its
    # own copy of the libraries.
    step = dataclasses.replace(plan.pipeline.steps[0], params={"stats": ["median"]})
    exact = dataclasses.replace(plan, pipeline=dataclasses.replace(plan.pipeline,
                                                                   steps=(step,)))
    est = _estimate(exact, [])
    assert est.peak_rss_mb == costs.DEFAULT_MB[0] + 2 * costs.DEFAULT_MB[1]
    assert est.memory_basis.endswith("defaults for worker processes")


def test_runs_with_the_same_cells_give_their_median():
    runs = [_run("p", 1000, 700.0), _run("p", 1000, 720.0), _run("p", 1000, 1500.0)]
    est = peak_memory("p", 1000, 2, runs)
    assert est is not None and est.mb == pytest.approx(720.0)


def test_plan_places_a_run_by_the_pipeline_s_own_recorded_run(tmp_path, cli):
    write_raster(tmp_path / "r.tif", np.ones((100, 100), dtype="float32"), west=29.0,
                 north=-2.0, res=0.001)
    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", str(tmp_path / "r.tif"))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"], resolution=8),
                                    "q": zonal_pipeline("q", "s", ["mean"], dataset="dq",
                                                        resolution=8)})
    bbox = "29.0,-2.1,29.1,-2.0"
    r = cli("--project", proj, "run", "p", "--bbox", bbox, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    recorded = json.loads(cli("--project", proj, "runs", "show", "latest", "--format",
                              "json").stdout)["run"]
    peak, cells = recorded["measured"]["peak_rss_mb"], recorded["cells"]
    # The same pipeline at resolution 9: about 7 times the cells.
    plan = json.loads(cli("--project", proj, "plan", "p", "--bbox", bbox, "-r", "9",
                          "--workers", "1", "--format", "json").stdout)
    assert plan["estimate"]["peak_rss_mb"] == pytest.approx(
        peak + MB_PER_DECADE * math.log10(plan["cells"] / cells))
    assert plan["estimate"]["memory_basis"].startswith("from 1 earlier run of 'p'")
    # Another pipeline has no run of its own: the defaults, not p's peak.
    other = json.loads(cli("--project", proj, "plan", "q", "--bbox", bbox, "--workers", "1",
                           "--format", "json").stdout)
    assert other["estimate"]["peak_rss_mb"] == costs.DEFAULT_MB[0] + costs.DEFAULT_THREAD_MB
    assert other["estimate"]["memory_basis"].endswith("defaults for the run's process alone")
