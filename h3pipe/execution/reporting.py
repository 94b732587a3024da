"""What a run tells whoever watches it: :class:`Reporter`, the one progress interface of
runs and their stages (local or on the queue). The CLI draws it (bars or log lines), the
API's callers and tests may record it; every method is a no-op here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from h3pipe.forecast.outlook import Outlook
    from h3pipe.planning.prepare import RunPlan


class Reporter:
    def run_started(self, plan: RunPlan, view: Outlook) -> None: ...

    def stage_started(self, number: int, steps: list[str], tasks: int, cells: int, *,
                      unit: str = "cells") -> None: ...

    def task_finished(self, step_id: str, cells: int) -> None: ...

    def stage_finished(self, number: int) -> None: ...

    def message(self, text: str) -> None: ...


__all__ = ["Reporter"]
