"""The cost model of ``h3pipe plan``, by hand: rates from history rows, defaults without."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from h3pipe.config.project import ProjectConfig
from h3pipe.forecast import costs
from h3pipe.forecast.outlook import Outlook, StageView
from h3pipe.planning.prepare import RunOptions, prepare
from h3pipe.planning.scope import resolve_scope
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline


def _view(plan):
    return Outlook(plan.run_id, "new", "", 0, len(plan.cells),
                   (StageView(1, ("stats",), 1, len(plan.cells), "cells"),))


def test_without_history_the_defaults_stand_in(plan):
    est = costs.estimate(plan, _view(plan), [])
    assert costs.step_pixels(plan) == {"stats": 100 * 100}  # the whole raster is the scope
    work = 10_000 / costs.DEFAULT_PIXELS_PER_S + len(plan.cells) * costs.CELL_SECONDS
    assert est.seconds == pytest.approx(work / 2 + costs.DEFAULT_OVERHEAD_S)
    # Zonal statistics with the kernel's: two worker threads of the run's process.
    assert est.peak_rss_mb == costs.DEFAULT_MB[0] + 2 * costs.DEFAULT_THREAD_MB
    assert est.basis.startswith("no history yet")


def test_history_gives_the_pixel_rate_overhead_and_memory(plan):
    # One earlier run on 2 workers: 4 s of task time over 1,000 cells and 8 M pixels, 5 s
    # of wall time, 900 MB at its peak. Its rates serve any pipeline; its peak only its own
    # (tests/forecast/test_memory.py), and it was another pipeline's.
    params = {"workers": 2, "measured": {"wall_s": 5.0, "peak_rss_mb": 900.0,
                                         "pixels": {"stats": 8_000_000}}}
    row = {"run_id": "r1", "step_id": "stats", "operation": "zonal_stats",
           "params": params, "cells": 1000, "seconds": 4.0, "rows_in": 1000,
           "tasks": 4}
    est = costs.estimate(plan, _view(plan), [row])
    rate = 8_000_000 / (4.0 - 1000 * costs.CELL_SECONDS)
    overhead = 5.0 - 4.0 / 2
    work = 10_000 / rate + len(plan.cells) * costs.CELL_SECONDS
    assert est.seconds == pytest.approx(work / 2 + overhead)
    assert est.peak_rss_mb == costs.DEFAULT_MB[0] + 2 * costs.DEFAULT_THREAD_MB
    assert est.basis == "from 1 earlier run(s) in this store"


# -- whether a run starts worker processes ----------------------------------------------------

def _prepared(tmp_path: Path, monkeypatch, *, settings: str | None = None,
              pipeline_workers: int | None = None, workers: int | None = None):
    monkeypatch.setattr("os.cpu_count", lambda: 4)  # nobody chose: the CPUs would be used
    write_raster(tmp_path / "r.tif", np.ones((100, 100), dtype="float32"), west=29.0,
                 north=-2.0, res=0.001)
    text = zonal_pipeline("p", "s", ["mean"], resolution=8)
    if pipeline_workers is not None:
        text = text.replace("batch_size: 50}", f"batch_size: 50, workers: {pipeline_workers}}}")
    project = ProjectConfig(write_project(
        tmp_path / "p", sources={"s": raster_source("s", str(tmp_path / "r.tif"))},
        pipelines={"p": text}, settings=settings))
    plan = prepare(project, "p", resolve_scope(bbox="29.0,-2.1,29.1,-2.0"),
                   RunOptions(workers=workers))
    return plan, project


def test_small_work_runs_in_process_with_the_largest_batches(tmp_path, monkeypatch):
    plan, project = _prepared(tmp_path, monkeypatch)
    assert plan.workers == 4 and plan.batch_size < 50  # as prepared: split for 4 workers
    # 10,000 pixels and a few dozen cells at the default rates: milliseconds of work, far
    # less than 4 workers would save over their start.
    work = 10_000 / costs.DEFAULT_PIXELS_PER_S + len(plan.cells) * costs.CELL_SECONDS
    assert costs.work_seconds(plan) == pytest.approx(work)
    assert not costs.pays_for_pool(plan, 4)
    settled = costs.settle_workers(plan)
    assert (settled.workers, settled.batch_size) == (1, 50)
    assert settled.run_id == plan.run_id and settled.cells == plan.cells


def test_work_that_saves_more_than_the_pool_costs_gets_the_pool(tmp_path, monkeypatch):
    plan, project = _prepared(tmp_path, monkeypatch)
    work = costs.work_seconds(plan)
    assert work is not None
    # Zonal statistics over cells (the kernel's): worker threads, whose start is cheap.
    assert costs.start_seconds(plan, 4) == costs.THREAD_START_S
    # 4 workers save three quarters of the work: it pays once that exceeds their start.
    monkeypatch.setattr(costs, "THREAD_START_S", work * 0.75 * 0.99)
    assert costs.pays_for_pool(plan, 4)
    assert costs.settle_workers(plan) == plan
    monkeypatch.setattr(costs, "THREAD_START_S", work * 0.75 * 1.01)
    assert not costs.pays_for_pool(plan, 4)


def test_worker_processes_cost_more_to_start_than_threads(tmp_path, monkeypatch):
    plan, project = _prepared(tmp_path, monkeypatch)
    # A median comes from exactextract, not measured on threads; more workers than threads
    # scale to; threads turned off: processes, each with its interpreter and imports.
    step = plan.pipeline.steps[0]
    median = dataclasses.replace(step, params={"stats": ["median"]})
    exact = dataclasses.replace(plan, pipeline=dataclasses.replace(plan.pipeline,
                                                                   steps=(median,)))
    assert costs.start_seconds(exact, 4) == costs.POOL_START_S
    assert costs.start_seconds(plan, 8) == costs.POOL_START_S
    monkeypatch.setenv("H3PIPE_THREADS", "0")
    assert costs.start_seconds(plan, 4) == costs.POOL_START_S
    assert costs.POOL_START_S > 5 * costs.THREAD_START_S


@pytest.mark.parametrize("chosen", ["option", "pipeline", "project"])
def test_workers_someone_chose_are_kept_however_small_the_work(tmp_path, monkeypatch, chosen):
    plan, project = _prepared(
        tmp_path, monkeypatch, workers=2 if chosen == "option" else None,
        pipeline_workers=2 if chosen == "pipeline" else None,
        settings="defaults: {workers: 2}\n" if chosen == "project" else None)
    assert plan.workers == 2 and plan.workers_chosen
    assert costs.settle_workers(plan) == plan


def test_work_unknown_before_the_run_gets_the_pool(tmp_path, monkeypatch):
    plan, project = _prepared(tmp_path, monkeypatch)
    # A step over a vector source's features: how many is known only when they are read.
    features = dataclasses.replace(plan.pipeline.steps[0], input="buildings", source=None)
    pipeline = dataclasses.replace(plan.pipeline, steps=(features,))
    plan = dataclasses.replace(plan, pipeline=pipeline)
    assert costs.work_seconds(plan) is None
    assert costs.pays_for_pool(plan, 4)
