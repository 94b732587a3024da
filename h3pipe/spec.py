"""Validated value objects shared by every layer: :class:`SourceSpec`, :class:`StepSpec`,
:class:`PipelineSpec`.

They are built once, after validation, by ``h3pipe.config.project``; everything past that
point trusts them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from h3pipe.sources.dimensions import Dimensions, Scenario


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
    # Several bands read together (``bands:``): their numbers and names; () for one band.
    bands: tuple[int, ...] = ()
    band_names: tuple[str, ...] = ()
    band_key: str = "band"
    dimensions: Dimensions | None = None  # a sweep of scenarios (``dimensions:``)
    # What the values are (intensive | extensive | categorical; None: not said), per band
    # when bands differ (one entry per band, else ()); a categorical source's classes.
    measure: str | None = None
    band_measures: tuple[str | None, ...] = ()
    classes: tuple[tuple[float, str], ...] = ()

    def measures(self) -> dict[str, str]:
        """The declared measure of each band (by name; '' for a single band)."""
        if not self.band_names:
            return {"": self.measure} if self.measure else {}
        given = self.band_measures or (None,) * len(self.band_names)
        return {b: str(m or self.measure) for b, m in zip(self.band_names, given, strict=True)
                if m or self.measure}

    def column(self, band_name: str, name: str) -> str:
        """The column of statistic ``name`` for one band (``rp100_mean``)."""
        return f"{band_name}_{name}"

    def columns(self, names: list[str]) -> list[str]:
        """Output columns ``names`` as this source gives them: one per band and name."""
        if not self.band_names:
            return list(names)
        return [self.column(b, n) for b in self.band_names for n in names]

    def scenario_location(self, scenario: Scenario) -> str:
        """The path of one scenario's files (the ``path`` template filled in)."""
        return scenario.fill(self.location)


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
    # The scenarios a run computes: dimension -> the values chosen ('all': absent).
    matrix: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    def step(self, step_id: str) -> StepSpec:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


# How long a requested stop waits for the tasks already running (run option --grace).
DEFAULT_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Retry:
    """How many further attempts a transient failure earns, and the first wait (doubled
    each time, with up to 50% jitter so retries of many tasks do not arrive together)."""

    retries: int = 2
    backoff: float = 1.0

    def delay(self, attempt: int) -> float:
        return self.backoff * (2 ** (attempt - 1)) * (1 + 0.5 * random.random())
