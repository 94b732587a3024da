"""``h3pipe plan``: what a run would do and cost, without running it: :func:`forecast_run`.

It prepares the run exactly as ``run`` would (the same :class:`RunPlan`, so the same run
id), reads what the store holds for it and what earlier runs measured, and describes every
source over the scope. It writes nothing and starts no worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from h3pipe import storage
from h3pipe.config.project import ProjectConfig
from h3pipe.errors import ConfigError
from h3pipe.forecast.costs import Estimate, estimate, settle_workers
from h3pipe.forecast.estimates import SourceFacts, source_facts
from h3pipe.forecast.outlook import Outlook, outlook
from h3pipe.planning.batching import Batcher
from h3pipe.planning.prepare import RunOptions, RunPlan, as_recorded, prepare
from h3pipe.planning.scope import Scope
from h3pipe.storage.history import recent_runs
from h3pipe.storage.runlog import RunLog

# Earlier runs of the pipeline whose peaks place this one's (the newest).
RUNS_KEPT = 50


@dataclass(frozen=True)
class Forecast:
    plan: RunPlan
    outlook: Outlook
    sources: tuple[SourceFacts, ...]
    estimate: Estimate
    store: str | None  # where the store is, None when there is none yet

    def to_json(self) -> dict[str, Any]:
        p = self.plan
        return {"run_id": p.run_id, "pipeline": p.pipeline.id, "dataset": p.pipeline.dataset,
                "scope": p.scope.to_json(), "resolution": p.resolution,
                **({"resolutions": p.levels} if p.coarser else {}),
                "workers": p.workers, "batch_size": p.batch_size, "store": self.store,
                **self.outlook.to_json(), "sources": [s.to_json() for s in self.sources],
                "footprints": dict(p.footprints),
                "estimate": self.estimate.to_json()}


def forecast_run(project: ProjectConfig, pipeline_id: str, scope: Scope,
             options: RunOptions | None = None) -> Forecast:
    plan = settle_workers(prepare(project, pipeline_id, scope, options))
    planner = Batcher.of(plan, None)
    try:
        store = storage.open_store(plan.store_location, project.root, create=False)
    except ConfigError:  # no store yet: a new run, and no history
        view = outlook(plan, planner, None, None)
        facts = _facts(plan, planner)
        return Forecast(plan, view, facts, estimate(plan, view, [], _pixels(facts)), None)
    with store:
        log = RunLog(store.catalog)
        row = log.run(plan.run_id)
        plan = as_recorded(plan, store, row)  # as the runner would
        view = outlook(plan, planner, store, row)
        history = log.throughput()
        runs = recent_runs(store.catalog, limit=RUNS_KEPT, pipeline=plan.pipeline.id)
        where = store.location
    facts = _facts(plan, planner)
    return Forecast(plan, view, facts,
                    estimate(plan, view, history, _pixels(facts), list(runs)), where)


def _facts(plan: RunPlan, planner: Batcher) -> tuple[SourceFacts, ...]:
    return tuple(source_facts(plan, {sid: planner.partitions(sid) for sid in plan.vectors}))


def _pixels(facts: tuple[SourceFacts, ...]) -> dict[str, int]:
    """Each raster's pixels in the scope, as the facts counted them (not counted twice)."""
    return {f.source_id: f.pixels for f in facts if f.pixels is not None}


__all__ = ["Forecast", "forecast_run"]
