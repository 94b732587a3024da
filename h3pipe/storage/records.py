"""What the catalog hands back, typed: :data:`Row` (any row), :class:`RunRecord` (a run's
row) and :class:`RunParams` (what a run recorded about itself, parsed once).

A run's ``params`` column is JSON written by the run as it goes (its batches, scope,
inputs, then what it measured, its coverage and conservation checks). It is parsed here,
once per row read, and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True)
class RunParams:
    """A run's recorded parameters; ``raw`` keeps every key, for reports and JSON."""

    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> RunParams:
        return cls(json.loads(text) if text else {})

    @property
    def scope(self) -> dict[str, Any]:
        """How the scope was given (kind, argument) and what it resolved to."""
        return dict(self.raw.get("scope") or {})

    @property
    def batch_size(self) -> int | None:
        return self.raw.get("batch_size")

    @property
    def max_batch_size(self) -> int | None:
        return self.raw.get("max_batch_size")

    @property
    def workers(self) -> int | None:
        return self.raw.get("workers")

    @property
    def resolutions(self) -> list[int]:
        """A run of several resolutions: all of them, coarsest first (else empty)."""
        return [int(r) for r in self.raw.get("resolutions") or []]

    @property
    def carried_scenarios(self) -> list[str]:
        return list(self.raw.get("carried_scenarios") or [])

    @property
    def measured(self) -> dict[str, Any]:
        """Wall time, peak memory and pixels per step, once the run completed."""
        return dict(self.raw.get("measured") or {})

    @property
    def coverage(self) -> dict[str, Any] | None:
        return self.raw.get("coverage")

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


class RunRecord(dict[str, Any]):
    """A run's row: the catalog's columns by name (as any :data:`Row`), typed accessors
    for what code reads, and :attr:`params` parsed once."""

    @cached_property
    def params(self) -> RunParams:
        return RunParams.parse(self["params"])

    @property
    def run_id(self) -> str:
        return str(self["run_id"])

    @property
    def status(self) -> str:
        return str(self["status"])

    @property
    def pipeline_id(self) -> str:
        return str(self["pipeline_id"])

    @property
    def dataset(self) -> str:
        return str(self["dataset"])

    @property
    def resolution(self) -> int:
        return int(self["resolution"])

    @property
    def on_queue(self) -> bool:
        return bool(self.get("queue"))


def run_record(row: Row | None) -> RunRecord | None:
    return RunRecord(row) if row is not None else None


__all__ = ["Row", "RunParams", "RunRecord", "run_record"]
