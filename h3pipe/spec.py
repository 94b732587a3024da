"""Validated value objects shared by every layer: :class:`SourceSpec`, :class:`StepSpec`,
:class:`PipelineSpec`.

They are built once, after validation, by ``h3pipe.engine.project``; everything past that
point trusts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SourceSpec:
    """A registered data source. ``location`` is the path or URL after ${VAR} expansion."""

    id: str
    kind: str
    location: str
    theme: str
    band: int = 1
    nodata: float | None = None
    nodata_override: bool = False
    units: str | None = None
    title: str | None = None
    license: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    file: str = ""


@dataclass(frozen=True)
class StepSpec:
    id: str
    operation: str
    source: str | None = None
    input: str = "cells"
    depends_on: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, compare=False)
    output: str = "h3_stats"

    @property
    def upstream(self) -> tuple[str, ...]:
        """Ids of the steps this one needs: its ``$step`` input and its ``depends_on``."""
        refs = [self.input[1:]] if self.input.startswith("$") else []
        return tuple(dict.fromkeys(refs + list(self.depends_on)))


@dataclass(frozen=True)
class PipelineSpec:
    id: str
    dataset: str
    theme: str
    steps: tuple[StepSpec, ...]
    version: int = 1
    title: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict, compare=False)
    file: str = ""
    content_hash: str = ""

    def step(self, step_id: str) -> StepSpec:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)
