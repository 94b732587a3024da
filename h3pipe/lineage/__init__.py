"""What a run tells the tools around it: :class:`Lineage`, called once when a run starts
and once when it has ended, sends OpenLineage events (:mod:`h3pipe.lineage.events`, by
:mod:`h3pipe.lineage.transports`) where the project's settings say
(:mod:`h3pipe.lineage.settings`), and writes the run-results file of every run
(:mod:`h3pipe.lineage.runresults`).

A local run goes through :meth:`Lineage.watching`. A queue run starts in the process that
submits it and ends in whichever process records its end (a worker, or the submitter
when it stops the run): each calls :func:`current`, the :class:`Lineage` its process was
given with :func:`use`. Lineage never fails a run: an endpoint that is down, slow or
refusing, or a file that cannot be written, costs at most one bounded timeout and one
warning line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from h3pipe import masking
from h3pipe.errors import Cancelled, H3PipeError, StoreUnavailable, Terminated
from h3pipe.lineage import runresults
from h3pipe.lineage.events import ENDS, RunFacts, facts_of, run_event
from h3pipe.lineage.settings import LineageSettings
from h3pipe.lineage.transports import Emitter
from h3pipe.storage.runlog import RunLog

if TYPE_CHECKING:
    from h3pipe.planning.prepare import RunPlan
    from h3pipe.storage.base import Store
    from h3pipe.storage.records import RunRecord

log = logging.getLogger("h3pipe.lineage")


class Lineage:
    """A project's lineage: events to where its settings send them, and a run-results
    file at the end of every run (whatever the settings say)."""

    def __init__(self, settings: LineageSettings, root: Path,
                 warn: Callable[[str], None] = log.warning) -> None:
        self.settings, self.root, self.warn = settings, root, warn
        self.emitter = Emitter.of(settings, warn)
        self._facts: dict[str, RunFacts] = {}  # run id -> what its START said

    @classmethod
    def of(cls, settings: Mapping[str, Any], root: Path,
           warn: Callable[[str], None] = log.warning) -> Lineage:
        """From a project's validated h3pipe.yaml ``settings`` and the environment;
        raises :class:`ConfigError` for settings that cannot work."""
        return cls(LineageSettings.find(settings, root), root, warn)

    @contextmanager
    def watching(self, plan: RunPlan, store: Store) -> Iterator[None]:
        """Around a claimed local run: START now, the end once the block has recorded
        it (whether it returns or raises)."""
        self.started(plan, store)
        try:
            yield
        except BaseException as exc:
            self.ended(plan, store, exc)
            raise
        self.ended(plan, store)

    def started(self, plan: RunPlan, store: Store) -> None:
        """The run is claimed: START."""
        if not self.settings.enabled:
            return
        try:
            run = RunLog(store.catalog).run(plan.run_id)
            facts = facts_of(plan, store, _started(run), self.root)
            self._facts[plan.run_id] = facts
            self.emitter.emit(run_event("START", facts, self.settings))
        except Exception as exc:  # lineage never stops a claimed run
            self.warn(f"lineage: run {plan.run_id}: START not sent ({_said(exc)})")

    def ended(self, plan: RunPlan, store: Store, stopped_by: BaseException | None = None
              ) -> Path | None:
        """The run's end is recorded: write its run-results file and send COMPLETE, FAIL
        or ABORT as its recorded status says. ``stopped_by`` is what ended it, for when
        the store could not record the end (then no file is written). Returns the file."""
        run = None
        # A store out of reach was tried for the retry bound already: not again.
        if not isinstance(stopped_by, StoreUnavailable):
            try:
                run = RunLog(store.catalog).run(plan.run_id)
            except H3PipeError as exc:
                self.warn(f"run {plan.run_id}: its run results are not written "
                          f"({exc.message})")
        path = self._results(store, plan.run_id) if run and run.status in ENDS else None
        if self.settings.enabled:
            try:
                self._last_event(plan, store, run, stopped_by)
            except Exception as exc:  # lineage never fails a run
                self.warn(f"lineage: run {plan.run_id}: its last event not sent "
                          f"({_said(exc)})")
        return path

    def _last_event(self, plan: RunPlan, store: Store, run: RunRecord | None,
                    stopped_by: BaseException | None) -> None:
        if run is not None and run.status in ENDS:
            kind, error = ENDS[run.status], run["error"]
        else:  # still 'running' in a store that could not record its end
            kind = "ABORT" if isinstance(stopped_by, _STOPS) else "FAIL"
            error = str(stopped_by or "the run's end could not be recorded")
        facts = self._facts.pop(plan.run_id, None)
        if facts is None or (run is not None and run["started_at"] != facts.started_at):
            facts = facts_of(plan, store, _started(run), self.root)
        rows, columns = _published(store, plan) if kind == "COMPLETE" else (None, None)
        self.emitter.emit(run_event(kind, facts, self.settings, error=error, rows=rows,
                                    columns=columns))

    def _results(self, store: Store, run_id: str) -> Path | None:
        try:
            return runresults.write(store, run_id)
        except (H3PipeError, OSError) as exc:
            why = exc.message if isinstance(exc, H3PipeError) else exc.strerror or str(exc)
            self.warn(f"run {run_id}: cannot write its run results "
                      f"({runresults.location(store, run_id)}: {why})")
            return None


_STOPS = (KeyboardInterrupt, Terminated, Cancelled)


def _said(exc: BaseException) -> str:
    if isinstance(exc, H3PipeError):
        return exc.message
    return masking.scrub(f"{type(exc).__name__}: {exc}")


def _started(run: RunRecord | None) -> str:
    """When this attempt claimed the run (what its OpenLineage run id is made of)."""
    return str(run["started_at"] or "") if run is not None else ""


def _published(store: Store, plan: RunPlan) -> tuple[int | None, list[str] | None]:
    """Rows and columns of the result the run published (None when it is gone)."""
    for entry in store.result_entries(plan.pipeline.dataset, plan.resolution,
                                      plan.scope.key):
        if entry["run_id"] == plan.run_id:
            return int(entry["rows"]), ["h3_index", "resolution", *json.loads(entry["columns"])]
    return None, None


_CURRENT: Lineage | None = None


def use(lineage: Lineage) -> Lineage:
    """Make ``lineage`` this process's: what :func:`current` gives (a queue worker's,
    read from its own settings and environment)."""
    global _CURRENT
    _CURRENT = lineage
    return lineage


def current() -> Lineage:
    """This process's :class:`Lineage` (:func:`use`); without one, run-results files
    only, warnings to the log."""
    return _CURRENT or Lineage(LineageSettings(), Path("."))


__all__ = ["Lineage", "LineageSettings", "current", "use"]
