"""Intermediates and their policies: :func:`release` at the end of a run (its own tables or
files only, nothing else: no maintenance inside a run), :func:`clean` for everything else.

Policies, per step (``cleanup: {policy: ...}``):
on_success (default) drops a step's output when its run completes and keeps it after a
failure, for resuming; on_completion drops it when the run ends either way; ttl leaves it
for ``h3pipe clean`` after ``ttl_hours``; manual only for ``h3pipe clean --run RUN_ID``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from h3pipe import storage
from h3pipe.config.project import ProjectConfig
from h3pipe.errors import ConfigError, UsageError
from h3pipe.storage.base import Store
from h3pipe.storage.holders import pid_alive
from h3pipe.storage.runlog import RunLog


@dataclass(frozen=True)
class Removal:
    run_id: str
    step_id: str
    location: str
    reason: str


def release(store: Store, run_id: str, *, succeeded: bool) -> None:
    """Drop what this run's policies allow now that it has ended."""
    log = RunLog(store.catalog)
    for r in log.open_intermediates(run_id):
        if r["policy"] == "on_completion" or (r["policy"] == "on_success" and succeeded):
            store.drop_intermediate(r["location"])
            log.intermediate_dropped(run_id, r["step_id"])
            log.event(run_id, "cleanup", r["step_id"], "dropped",
                      f"{r['location']} ({r['policy']})")


def _age_hours(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds() / 3600


def clean(project: ProjectConfig, *, dry_run: bool = False, run_id: str | None = None,
          older_than_hours: float = 24.0) -> tuple[list[str], list[Removal]]:
    """Apply the policies; return (runs found dead, what was or would be removed)."""
    # 0 is "whatever its age"; a negative age, NaN or infinity is a typo.
    if not 0 <= older_than_hours < float("inf"):
        raise UsageError(f"--older-than {older_than_hours:g}: give a number of hours, 0 or "
                         "more", hint="e.g. --older-than 24")
    project.read_settings()
    with storage.open_store(project.store_location(), project.root, create=False) as store:
        log = RunLog(store.catalog)
        if run_id is not None and run_id not in log.statuses() \
                and run_id not in store.scratch_runs():
            raise ConfigError(f"no run '{run_id}' in the store",
                              hint="list runs with 'h3pipe runs list'")
        host = socket.gethostname()
        dead = [r["run_id"] for r in log.running_runs()
                if r["host"] == host and not pid_alive(r["pid"])]
        if not dry_run:
            for rid in dead:
                log.finish(rid, "failed", "the process ended without recording it (killed?); "
                           "found by 'h3pipe clean'")
        status = log.statuses() | {rid: "failed" for rid in dead}
        removals, tracked = _recorded_removals(log, status, run_id, older_than_hours)
        removals += _unrecorded_scratch(store, status, run_id, tracked)
        if not dry_run:
            for rm in removals:
                store.drop_intermediate(rm.location)
                if rm.step_id != "-":
                    log.intermediate_dropped(rm.run_id, rm.step_id)
        return dead, removals


def _recorded_removals(log: RunLog, status: dict[str, str], run_id: str | None,
                       older_than_hours: float) -> tuple[list[Removal], set[str]]:
    """What the recorded intermediates' policies allow to remove, and every location
    recorded."""
    removals: list[Removal] = []
    tracked: set[str] = set()
    for r in log.open_intermediates():
        tracked.add(r["location"])
        reason = _reason(r, status.get(r["run_id"]), run_id, older_than_hours)
        if reason:
            removals.append(Removal(r["run_id"], r["step_id"], r["location"], reason))
    return removals, tracked


def _reason(r: dict[str, Any], state: str | None, run_id: str | None,
            older_than_hours: float) -> str | None:
    policy = r["policy"]
    if run_id is not None:
        return "asked for" if r["run_id"] == run_id else None
    if state == "running" or policy == "manual":
        return None
    if state == "completed":
        return "left over by a completed run"
    if policy == "on_completion":
        return "its run failed (on_completion)"
    if policy == "ttl" and _age_hours(r["created_at"]) > (r["ttl_hours"] or 0):
        return f"older than its ttl of {r['ttl_hours']:g} h"
    if policy == "on_success" and _age_hours(r["created_at"]) > older_than_hours:
        return f"its run failed more than {older_than_hours:g} h ago (on_success)"
    return None


def _unrecorded_scratch(store: Store, status: dict[str, str], run_id: str | None,
                        tracked: set[str]) -> list[Removal]:
    """Scratch that no record claims (a run killed between creating and recording it)."""
    removals = []
    for rid, locations in store.scratch_runs().items():
        if status.get(rid) == "running" or (run_id is not None and rid != run_id):
            continue
        for loc in locations:
            if loc not in tracked and not any(loc.startswith(t) for t in tracked):
                removals.append(Removal(rid, "-", loc, "not recorded by any run"))
    return removals


__all__ = ["Removal", "clean", "release"]
