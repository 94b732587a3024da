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
from h3pipe.config.project import Project
from h3pipe.engine.lock import pid_alive
from h3pipe.storage.catalog import now


@dataclass(frozen=True)
class Removal:
    run_id: str
    step_id: str
    location: str
    reason: str


def release(store: Any, run_id: str, *, succeeded: bool) -> None:
    """Drop what this run's policies allow now that it has ended."""
    for r in store.catalog.query("SELECT * FROM intermediates WHERE run_id = :r AND "
                                 "dropped_at IS NULL", {"r": run_id}):
        if r["policy"] == "on_completion" or (r["policy"] == "on_success" and succeeded):
            store.drop_intermediate(r["location"])
            store.catalog.update("intermediates", {"run_id": run_id, "step_id": r["step_id"]},
                                 dropped_at=now())
            store.catalog.event(run_id, "cleanup", r["step_id"], "dropped",
                                f"{r['location']} ({r['policy']})")


def _age_hours(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds() / 3600


def clean(project: Project, *, dry_run: bool = False, run_id: str | None = None,
          older_than_hours: float = 24.0) -> tuple[list[str], list[Removal]]:
    """Apply the policies; return (runs found dead, what was or would be removed)."""
    project.read_settings()
    store = storage.open_store(project.store_location(), project.root, create=False)
    try:
        host = socket.gethostname()
        dead = [r["run_id"] for r in store.catalog.query(
            "SELECT run_id, pid, host FROM runs WHERE status = 'running'")
            if r["host"] == host and not pid_alive(r["pid"])]
        if not dry_run:
            for rid in dead:
                store.catalog.update("runs", {"run_id": rid}, status="failed",
                                     finished_at=now(), error="the process ended without "
                                     "recording it (killed?); found by 'h3pipe clean'")
        status = {r["run_id"]: r["status"] for r in store.catalog.query(
            "SELECT run_id, status FROM runs")}
        for rid in dead:
            status[rid] = "failed"
        removals: list[Removal] = []
        tracked: set[str] = set()
        for r in store.catalog.query("SELECT * FROM intermediates WHERE dropped_at IS NULL"):
            tracked.add(r["location"])
            state, policy = status.get(r["run_id"]), r["policy"]
            reason = None
            if run_id is not None:
                reason = "asked for" if r["run_id"] == run_id else None
            elif state == "running":
                reason = None
            elif policy == "manual":
                reason = None
            elif state == "completed":
                reason = "left over by a completed run"
            elif policy == "on_completion":
                reason = "its run failed (on_completion)"
            elif policy == "ttl" and _age_hours(r["created_at"]) > (r["ttl_hours"] or 0):
                reason = f"older than its ttl of {r['ttl_hours']:g} h"
            elif policy == "on_success" and _age_hours(r["created_at"]) > older_than_hours:
                reason = f"its run failed more than {older_than_hours:g} h ago (on_success)"
            if reason:
                removals.append(Removal(r["run_id"], r["step_id"], r["location"], reason))
        # Scratch that no record claims (a run killed between creating and recording it).
        for rid, locations in store.scratch_runs().items():
            if status.get(rid) == "running" or (run_id is not None and rid != run_id):
                continue
            for loc in locations:
                if loc not in tracked and not any(loc.startswith(t) for t in tracked):
                    removals.append(Removal(rid, "-", loc, "not recorded by any run"))
        if not dry_run:
            for rm in removals:
                store.drop_intermediate(rm.location)
                if rm.step_id != "-":
                    store.catalog.update("intermediates", {"run_id": rm.run_id,
                                                           "step_id": rm.step_id},
                                         dropped_at=now())
        return dead, removals
    finally:
        store.close()


__all__ = ["Removal", "clean", "release"]
