"""Progress for ``h3pipe run``: rich bars on a terminal, plain log lines elsewhere (cron)."""

from __future__ import annotations

import sys
import time
from typing import Any

from h3pipe.api import Outlook, Reporter, RunPlan
from h3pipe.cli import output
from h3pipe.cli.planview import heading


def make_reporter() -> Reporter:
    if output.quiet() or output.logging_to_file() or not sys.stderr.isatty():
        return LineReporter()
    return RichReporter()


class LineReporter(Reporter):
    """One line per stage start and end, and at most one progress line every 10 s."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every

    def _log(self, msg: str) -> None:
        output.info(msg, stamped=True)

    def run_started(self, plan: RunPlan, view: Outlook) -> None:
        for line in heading(plan, view):
            self._log(line)

    def stage_started(self, number: int, steps: list[str], tasks: int, cells: int, *,
                      unit: str = "cells") -> None:
        self.stage, self.tasks, self.cells, self.unit = number, tasks, cells, unit
        self.done_tasks = self.done_cells = 0
        self.t0 = self.last = time.monotonic()
        self._log(f"stage {number} [{', '.join(steps)}]: {tasks} task(s), {cells} {unit}")

    def task_finished(self, step_id: str, cells: int) -> None:
        self.done_tasks += 1
        self.done_cells += cells
        t = time.monotonic()
        if t - self.last >= self.every:
            self.last = t
            rate = self.done_cells / max(t - self.t0, 1e-9)
            eta = (self.cells - self.done_cells) / rate if rate else 0
            self._log(f"stage {self.stage}: {self.done_tasks}/{self.tasks} tasks, "
                      f"{self.done_cells}/{self.cells} {self.unit}, {rate:.0f} {self.unit}/s, "
                      f"ETA {eta:.0f} s")

    def message(self, text: str) -> None:
        self._log(text)

    def stage_finished(self, number: int) -> None:
        secs = time.monotonic() - self.t0
        self._log(f"stage {number} done: {self.done_cells} {self.unit} in {secs:.1f} s "
                  f"({self.done_cells / max(secs, 1e-9):.0f} {self.unit}/s)")


class RichReporter(Reporter):
    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.progress: Any = None

    def run_started(self, plan: RunPlan, view: Outlook) -> None:
        for line in heading(plan, view):
            self.console.print(line, markup=False, highlight=False)

    def stage_started(self, number: int, steps: list[str], tasks: int, cells: int, *,
                      unit: str = "cells") -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("stage {task.fields[stage]} {task.description}"), BarColumn(),
            MofNCompleteColumn(), TextColumn(unit),
            TextColumn("{task.fields[rate]} " + unit + "/s"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self.t0 = time.monotonic()
        self.task = self.progress.add_task(", ".join(steps), total=cells, stage=number, rate="-")

    def task_finished(self, step_id: str, cells: int) -> None:
        self.progress.advance(self.task, cells)
        done = self.progress.tasks[0].completed
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        self.progress.update(self.task, rate=f"{rate:,.0f}")

    def stage_finished(self, number: int) -> None:
        self.progress.stop()

    def message(self, text: str) -> None:
        self.console.print(text)
