"""Validated value objects shared by every layer: :class:`SourceSpec`, :class:`StepSpec`,
:class:`PipelineSpec`.

They are built once, after validation, by ``h3pipe.config.project``; everything past that
point trusts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StacSpec:
    """Where a STAC source's items are: an API, a static catalog, or stac-geoparquet."""

    url: str
    collection: str
    asset: str = "data"
    datetime: str | None = None
    query: dict[str, Any] | None = field(default=None, compare=False)
    signer: str = "none"


@dataclass(frozen=True)
class SourceSpec:
    """A data source, after ${VAR} expansion. ``location`` is the raster path or URL of a
    ``raster`` source, or the file (or database URL, with ``table``) of a ``vector``
    source; ``stac`` says where the items of a ``stac`` source are."""

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
    stac: StacSpec | None = None
    document: dict[str, Any] = field(default_factory=dict, compare=False)  # as written
    layer: str | None = None  # vector
    table: str | None = None
    id_field: str | None = None
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepSpec:
    id: str
    operation: str
    source: str | None = None
    input: str = "cells"
    depends_on: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, compare=False)
    output: str = "h3_stats"
    cleanup: dict[str, Any] = field(default_factory=lambda: {"policy": "on_success"},
                                    compare=False)
    storage: str = "table"  # of its intermediate output on PostgreSQL: table | parquet
    retries: int | None = None  # None: the pipeline's default
    retry_backoff: float | None = None

    @property
    def input_step(self) -> str | None:
        """The earlier step whose rows this one takes (``input: $step``)."""
        return self.input[1:] if self.input.startswith("$") else None

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
    document: dict[str, Any] = field(default_factory=dict, compare=False)  # as validated

    def step(self, step_id: str) -> StepSpec:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)
