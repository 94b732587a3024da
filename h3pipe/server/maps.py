"""The data of the dashboard's interactive map, for readers: ``GET /maps`` (the datasets
with results), ``GET /maps/{dataset}`` (what a map needs to start: scopes, resolutions,
columns with their meaning, a sweep's scenarios and bands, the scope's outline and
bounds), ``GET /maps/{dataset}/cells`` (the cells of a view, at most ``server: map_cells``
of them: coarser ones when the view holds more) and ``GET /maps/{dataset}/cells/{cell}``
(every column of one cell). :class:`Results` keeps what was read between requests: each
dataset's listing of results for a second, the results themselves until a run replaces
them, and the encoded answers (:class:`Answers`), so a map many dashboards show is made once.

Cells are coloured here, by the static maps' own colour scale
(:func:`h3pipe.report.maps.colour_scale`), and sent as indexes into a palette beside their
values: the browser draws what ``h3pipe map`` would, without a second colour scale to keep
in step.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from h3pipe import extras, grid
from h3pipe.api import Project
from h3pipe.errors import H3PipeError, NotFound, UsageError
from h3pipe.planning.scope import ScopeRef
from h3pipe.report import maps as static
from h3pipe.report.datasets import Selection, map_column, numbers, style_for
from h3pipe.report.meaning import Meaning, meanings
from h3pipe.results.runs import no_results
from h3pipe.server import auth
from h3pipe.server.mapdata import (
    Box,
    Layer,
    Places,
    Rule,
    finest_for,
    published,
    reduce,
    rule_of,
)
from h3pipe.server.recent import Once
from h3pipe.server.settings import ServerSettings

router = APIRouter(tags=["maps"], dependencies=[Depends(auth.reader)])
SCENARIO = "scenario"
KEEP = 4  # results kept in memory (the least recently used one goes first)
LAYERS = 32  # columns (of a scenario) of a result kept, likewise: a sweep has hundreds
BINARY = "application/octet-stream"
OUTLINE_POINTS = 4_000  # an outline of more points is simplified before it is sent
OUTLINES = 64  # scopes' outlines kept (a country's takes 50-200 ms to make)
# A dataset's listing of results (which scopes, resolutions, runs) is used for this many
# seconds before the store is read again. A time, not a marker of change: the store has no
# marker that is cheaper to read than the listing itself (the catalog's files change with
# every task a run records, and PostgreSQL has none), and a second is less than anyone
# takes to look at a map; a request for a scope or resolution not listed reads it at once
# (see Results.result), so a run's new result is never refused for being new.
FRESH = 1.0
ANSWERS = 32 * 2**20  # bytes of encoded answers kept (Answers): ~100 views of 8,000 cells


@dataclass(frozen=True)
class Scoped:
    """One scope of a dataset, as the store lists it: ``scope`` as the API takes it
    (``iso3:RWA``; empty when the run did not record it), its resolutions and entries."""

    key: str
    label: str
    scope: str
    resolutions: tuple[int, ...]
    entries: tuple[dict[str, Any], ...] = field(repr=False)

    def at(self, resolution: int) -> list[dict[str, Any]]:
        return [e for e in self.entries if int(e["resolution"]) == resolution]

    def describe(self) -> dict[str, Any]:
        return {"scope": self.scope or self.key, "key": self.key, "label": self.label,
                "resolutions": list(self.resolutions)}


@dataclass(frozen=True)
class Listing:
    """A dataset's scopes as the store listed them at ``read_at`` (``time.monotonic``)."""

    scopes: list[Scoped]
    read_at: float


@dataclass
class Result:
    """One dataset's rows of one scope at one resolution, read once, and the layers (a
    column of a scenario) the map asked for. ``token`` names what was read (its runs and
    their times): answers made from it are kept under it."""

    dataset: str
    scoped: Scoped
    resolution: int
    token: tuple[Any, ...]
    selection: Selection
    columns: list[str]
    meanings: dict[str, Meaning]
    rules: dict[str, Rule]
    scenarios: list[str]
    bands: dict[str, Any]
    layers: OrderedDict[tuple[str, str], Layer] = field(default_factory=OrderedDict)
    places: Places = field(default_factory=Places)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def ids(self) -> np.ndarray:
        """Every row's cell as a uint64 id, parsed once (20 ms a 360,000 rows)."""
        return grid.ids(self.selection.table.column("h3_index"))

    def scenario(self, given: str | None) -> str | None:
        """The scenario asked for, the first without one; None when not a sweep."""
        if not self.scenarios:
            return None
        chosen = given or self.scenarios[0]
        if chosen not in self.scenarios:
            raise UsageError(f"dataset '{self.dataset}' has no scenario '{chosen}'",
                             hint="scenarios: " + ", ".join(self.scenarios[:20]))
        return chosen

    def of(self, scenario: str | None) -> np.ndarray | None:
        """Which rows are the scenario's (a boolean per row); None: every one."""
        chosen = self.scenario(scenario)
        if chosen is None:
            return None
        same = pc.equal(self.selection.table.column(SCENARIO), chosen)
        return np.asarray(pc.fill_null(same, False))

    def rows(self, scenario: str | None) -> pa.Table:
        """The rows of one scenario (every row when the dataset is not a sweep)."""
        mine = self.of(scenario)
        table = self.selection.table
        return table if mine is None else table.filter(mine)

    def column(self, name: str | None) -> str:
        if name is None:
            if not self.columns:
                raise NotFound(f"dataset '{self.dataset}' has no statistic column to map")
            return self.columns[0]
        if name not in self.columns:
            raise UsageError(f"dataset '{self.dataset}' has no column '{name}'",
                             hint="columns: " + ", ".join(self.columns))
        return name


class Results:
    """Results read for maps, kept between requests: each dataset's listing for at most
    :data:`FRESH` seconds, each result read once (and again when a run replaces it), at
    most :data:`KEEP` at once, the scopes' outlines, and the encoded :attr:`answers`."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.answers = Answers(ANSWERS)
        self._once = Once()  # results and layers being read or made
        self._kept: OrderedDict[tuple[Any, ...], Result] = OrderedDict()
        self._scopes: dict[str, str] = {}  # scope key -> as the API takes it
        self._listed: dict[str, Listing] = {}
        self._reading: set[str] = set()  # datasets whose listing is being read
        self._outlines: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def scopes(self, dataset: str, *, fresh: bool = False) -> list[Scoped]:
        """The dataset's scopes, the newest result first, as listed at most :data:`FRESH`
        seconds ago (``fresh``: now). While one request reads the store the others take
        the listing it replaces: one reading at a time, and nobody waits for it."""
        with self._lock:
            kept = self._listed.get(dataset)
            if kept is not None and not fresh and (
                    time.monotonic() - kept.read_at <= FRESH or dataset in self._reading):
                return kept.scopes
            self._reading.add(dataset)
        read_at = time.monotonic()
        try:
            with self.project.open_store() as store:
                entries = store.result_entries(dataset)
                if not entries:
                    with self._lock:
                        self._listed.pop(dataset, None)
                    no_results(store, dataset)
        finally:
            with self._lock:
                self._reading.discard(dataset)
        return self._keep_listing(dataset, entries, read_at)

    def everything(self) -> dict[str, list[Scoped]]:
        """Every dataset's scopes, from one reading of the store."""
        read_at = time.monotonic()
        with self.project.open_store() as store:
            entries = store.result_entries()
        by_dataset: dict[str, list[dict[str, Any]]] = {}
        for e in entries:
            by_dataset.setdefault(e["dataset"], []).append(e)
        return {name: self._keep_listing(name, group, read_at)
                for name, group in sorted(by_dataset.items())}

    def _keep_listing(self, dataset: str, entries: list[dict[str, Any]], read_at: float
                      ) -> list[Scoped]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for e in sorted(entries, key=lambda e: str(e["updated_at"]), reverse=True):
            groups.setdefault(e["scope_key"], []).append(e)
        scopes = [Scoped(key, group[0]["scope_label"], self._scope_text(key, group[0]),
                         tuple(sorted({int(e["resolution"]) for e in group})), tuple(group))
                  for key, group in groups.items()]
        with self._lock:
            kept = self._listed.get(dataset)
            if kept is None or kept.read_at < read_at:  # two readers may end out of order
                self._listed[dataset] = Listing(scopes, read_at)
        return scopes

    def _scope_text(self, key: str, entry: dict[str, Any]) -> str:
        if key not in self._scopes:
            try:
                params = self.project.run_record(entry["run_id"])["params"]
                self._scopes[key] = str(ScopeRef.recorded(params, entry["run_id"]))
            except H3PipeError:
                self._scopes[key] = ""
        return self._scopes[key]

    def result(self, dataset: str, scope: str | None, resolution: int | None) -> Result:
        try:
            scoped, chosen = _pick(self.scopes(dataset), scope, resolution)
        except NotFound:
            # The scope or resolution may have been published since the listing was
            # read: what is not there is said from the store, never from a kept listing.
            scoped, chosen = _pick(self.scopes(dataset, fresh=True), scope, resolution)
        entries = scoped.at(chosen)
        token = (dataset, scoped.key, chosen,
                 tuple(sorted((e["run_id"], str(e["updated_at"])) for e in entries)))

        def read() -> Result:  # unless the asker before this one has just read it
            return self._known(token) or self._keep(
                self._read(dataset, scoped, chosen, entries, token))

        return self._known(token) or self._once.run(token, read)

    def _known(self, token: tuple[Any, ...]) -> Result | None:
        with self._lock:
            found = self._kept.get(token)
            if found is not None:
                self._kept.move_to_end(token)
            return found

    def _keep(self, result: Result) -> Result:
        with self._lock:
            self._kept[result.token] = result
            while len(self._kept) > KEEP:
                self._kept.popitem(last=False)
        return result

    def _read(self, dataset: str, scoped: Scoped, resolution: int,
              entries: list[dict[str, Any]], token: tuple[Any, ...]) -> Result:
        where = scoped.scope or None
        run = None if where else entries[0]["run_id"]
        table = self.project.dataset(dataset, where, resolution, run=run)
        selection = Selection(dataset, table, entries, resolution, None)
        columns = selection.columns
        known = meanings(self.project, dataset, columns, table.column_names)
        rules = {c: rule_of(self.project, dataset, c, known[c]) for c in columns}
        scenarios = (sorted(str(v) for v in pc.unique(table.column(SCENARIO)).to_pylist()
                            if v is not None) if SCENARIO in table.column_names else [])
        return Result(dataset, scoped, resolution, token, selection, columns, known, rules,
                      scenarios, _bands(entries))

    def outline(self, scoped: Scoped) -> dict[str, Any]:
        """:func:`outline_of` the scope, kept: a scope's text always names one place."""
        with self._lock:
            found = self._outlines.get(scoped.scope)
            if found is not None:
                self._outlines.move_to_end(scoped.scope)
                return found
        found = outline_of(scoped)
        with self._lock:
            self._outlines[scoped.scope] = found
            while len(self._outlines) > OUTLINES:
                self._outlines.popitem(last=False)
        return found

    def layer(self, result: Result, column: str, scenario: str | None) -> Layer:
        key = (column, scenario or "")
        with result.lock:
            if key in result.layers:
                result.layers.move_to_end(key)
                return result.layers[key]
        return self._once.run((result.token, key),
                              lambda: self._new_layer(result, column, scenario))

    def _new_layer(self, result: Result, column: str, scenario: str | None) -> Layer:
        key = (column, scenario or "")
        with result.lock:
            if key in result.layers:  # made by the asker before this one
                return result.layers[key]
        rows = result.rows(scenario)
        what, rule = result.meanings[column], result.rules[column]
        one = Selection(result.dataset, rows, result.selection.entries, result.resolution,
                        None)
        cells = map_column(one, column, what)
        weights = (numbers(rows.column(rule.weight), rule.weight)
                   if rule.weight and rule.weight in rows.column_names else None)
        native = published(cells.cells, cells.values, cells.nodata, result.resolution,
                           weights)
        layer = Layer(native, rule, style_for(what), result.places)
        with result.lock:
            layer = result.layers.setdefault(key, layer)
            result.layers.move_to_end(key)
            while len(result.layers) > LAYERS:
                result.layers.popitem(last=False)
        return layer


class Answers:
    """Encoded answers kept by what they answer (a key naming the result's token, so a
    replaced result is never answered from here), the least recently used dropped past
    ``limit`` bytes; an answer is made once however many ask for it at once."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self._kept: OrderedDict[Hashable, bytes] = OrderedDict()
        self._once = Once()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """The answer kept under ``key``, else ``make()``'s (an error is not kept)."""
        found = self._found(key)
        if found is not None:
            return found
        # Looked for again once this asker's turn comes: the one before may have made it.
        return self._once.run(key, lambda: self._found(key) or self._keep(key, make()))

    def _found(self, key: Hashable) -> bytes | None:
        with self._lock:
            body = self._kept.get(key)
            if body is not None:
                self._kept.move_to_end(key)
            return body

    def _keep(self, key: Hashable, body: bytes) -> bytes:
        if len(body) > self.limit // 8:
            return body  # it would push out many smaller ones; made again when asked again
        with self._lock:
            if key not in self._kept:
                self._kept[key] = body
                self.size += len(body)
            while self.size > self.limit:
                _, dropped = self._kept.popitem(last=False)
                self.size -= len(dropped)
        return body


def _bands(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A multi-band sweep's band key and names (``return_period``: rp5, rp10...)."""
    for e in entries:
        bands = json.loads(e.get("layout") or "{}").get("bands")
        if bands:
            return {"key": bands.get("key"), "names": list(bands.get("names", []))}
    return {}


def pick_scope(scopes: list[Scoped], given: str | None) -> Scoped:
    """The scope asked for, by its text (``iso3:RWA``), key or label; the newest without
    one. Only scopes the store lists can be asked for: a request never names a file."""
    if not given:
        return scopes[0]
    wanted = given.strip()
    for s in scopes:
        if wanted in (s.scope, s.key, s.label) or (s.scope.startswith("iso3:")
                                                   and wanted.upper() == s.scope[5:]):
            return s
    raise NotFound(f"the dataset has no result for scope '{given}'",
                   hint="scopes: " + ", ".join(s.scope or s.key for s in scopes))


def pick_resolution(scoped: Scoped, given: int | None) -> int:
    """The resolution asked for; the finest published without one (coarser cells are
    made from it as a view needs)."""
    if given is None:
        return scoped.resolutions[-1]
    if given not in scoped.resolutions:
        raise NotFound(f"scope {scoped.label} has no result at resolution {given}",
                       hint="resolutions: " + ", ".join(map(str, scoped.resolutions)))
    return given


def _pick(scopes: list[Scoped], scope: str | None, resolution: int | None
          ) -> tuple[Scoped, int]:
    scoped = pick_scope(scopes, scope)
    return scoped, pick_resolution(scoped, resolution)


_MAKING = threading.Lock()  # the first map requests come at once: one Results for them all


def results(request: Request) -> Results:
    """The server's :class:`Results`, made on the first map request."""
    state = request.app.state
    found = getattr(state, "map_results", None)
    if found is None:
        extras.require("report", "the dashboard's map")  # its colour scales are matplotlib's
        with _MAKING:
            found = getattr(state, "map_results", None) or Results(state.project)
            state.map_results = found
    return found


def encoded(content: Any) -> bytes:
    """``content`` as :class:`JSONResponse` encodes it: a kept answer is the same bytes."""
    return bytes(JSONResponse(content).body)


Kept = Annotated[Results, Depends(results)]
ScopeQ = Annotated[str | None, Query(description="iso3:RWA, bbox:W,S,E,N... as listed "
                                     "by GET /maps/{dataset}; default: the newest")]
ResQ = Annotated[int | None, Query(ge=0, le=15, description="default: the finest")]


# -- routes -----------------------------------------------------------------------------------

@router.get("/maps")
def datasets(kept: Kept) -> dict[str, Any]:
    """The datasets with results, each with its scopes and their resolutions."""
    return {"datasets": [{"dataset": name, "scopes": [s.describe() for s in scopes]}
                         for name, scopes in kept.everything().items()]}


@router.get("/maps/{dataset}", response_model=dict[str, Any])
def start(dataset: str, kept: Kept, request: Request, scope: ScopeQ = None,
          resolution: ResQ = None) -> Response:
    """What the map needs to start: the scopes and resolutions published, the chosen
    one's outline and bounds, the columns with their meaning and colours, and a sweep's
    scenarios and bands."""
    result = kept.result(dataset, scope, resolution)
    scopes = kept.scopes(dataset)
    key = ("start", result.token, tuple((s.scope, s.key, s.label, s.resolutions)
                                        for s in scopes))
    settings: ServerSettings = request.app.state.settings
    body = kept.answers.get(key, lambda: encoded(_start(kept, result, scopes, settings)))
    return Response(body, media_type=JSONResponse.media_type)


def _start(kept: Results, result: Result, scopes: list[Scoped], settings: ServerSettings
           ) -> dict[str, Any]:
    return {
        "dataset": result.dataset,
        "scope": result.scoped.describe() | kept.outline(result.scoped),
        "scopes": [s.describe() for s in scopes],
        "resolution": result.resolution,
        "resolutions": list(result.scoped.resolutions),
        "rows": result.selection.table.num_rows,
        "columns": [_column(result, c) for c in result.columns],
        "sweep": ({"scenarios": result.scenarios, "bands": result.bands}
                  if result.scenarios or result.bands else None),
        "colours": {"null": static.NULL_COLOUR, "nodata": static.NODATA_COLOUR,
                    "outline": static.EDGE_COLOUR},
        "max_cells": settings.map_cells,
        "basemap": settings.basemap,
    }


def _column(result: Result, column: str) -> dict[str, Any]:
    what, rule = result.meanings[column], result.rules[column]
    band = next((b for b in result.bands.get("names", []) if column.startswith(f"{b}_")),
                None)
    return {"name": column, "label": what.label, "units": what.units, "kind": what.kind,
            "band": band, "statistic": column[len(band) + 1:] if band else column,
            "coarser": {"how": rule.how, "weight": rule.weight, "text": rule.text},
            "classes": [[v, n] for v, n in what.classes]}


@router.get("/maps/{dataset}/cells")
def cells(dataset: str, kept: Kept, request: Request,
          bbox: Annotated[str, Query(description="W,S,E,N in degrees; W > E crosses 180")],
          scope: ScopeQ = None, resolution: ResQ = None,
          zoom: Annotated[float | None, Query(ge=0, le=30, description="the map's Web "
                                              "Mercator zoom: no cell under a pixel")] = None,
          column: str | None = None, scenario: str | None = None) -> Response:
    """The cells in the view: at most ``server: map_cells``; when the view holds more,
    their ancestors at the finest resolution that fits, valued by the column's rule (the
    legend says so). ``cells`` (H3 ids), ``values`` (null: none) and ``colour`` (an index
    into ``palette``) in the same order; with ``Accept: application/octet-stream``, the
    same packed (see :func:`packed`). The same view of the same result asked again is
    answered with the bytes made the first time (:class:`Answers`)."""
    box = Box.parse(bbox)
    result = kept.result(dataset, scope, resolution)
    name = result.column(column)
    # Zooms with one finest resolution answer alike: the answer depends on it, not them.
    finest = None if zoom is None else finest_for(zoom, (box.south + box.north) / 2)
    binary = BINARY in request.headers.get("accept", "")
    max_cells = request.app.state.settings.map_cells
    key = ("cells", result.token, name, scenario or "", box, finest, binary)
    body = kept.answers.get(key, lambda: _view(kept, result, name, scenario, box, finest,
                                               max_cells, binary))
    return Response(body, media_type=BINARY if binary else JSONResponse.media_type)


def _view(kept: Results, result: Result, name: str, scenario: str | None, box: Box,
          finest: int | None, max_cells: int, binary: bool) -> bytes:
    """The encoded answer of :func:`cells`."""
    layer = kept.layer(result, name, scenario)
    level, inside = layer.view(box, max_cells, finest)
    scale = layer.scale(level.resolution)
    palette, colour = _palette(scale.colours.of(inside))
    head = {
        "dataset": result.dataset, "column": name, "scenario": scenario or (
            result.scenarios[0] if result.scenarios else None),
        "resolution": level.resolution, "published_resolution": result.resolution,
        "count": len(inside), "palette": palette,
        "legend": _legend(result, name, layer, level.resolution, scale),
    }
    ids, values = level.cells[inside], level.values[inside]
    if binary:
        return packed(head, ids, values, colour)
    return encoded(head | {
        "cells": grid.strings(ids).to_pylist(),
        "values": [None if v != v else v for v in values.tolist()],
        "colour": colour.tolist()})


def packed(head: dict[str, Any], ids: np.ndarray, values: np.ndarray, colour: np.ndarray
           ) -> bytes:
    """The browser's encoding, a fifth of the JSON's size and no parsing: the length of a
    JSON header (uint32), the header (padded with spaces to a multiple of 8 bytes), then
    the cells (uint64), their values (float64, NaN: null) and colour indexes (uint16),
    all little-endian."""
    text = json.dumps(head).encode()
    text += b" " * (-(4 + len(text)) % 8)
    return b"".join([struct.pack("<I", len(text)), text, ids.astype("<u8").tobytes(),
                     values.astype("<f8").tobytes(), colour.astype("<u2").tobytes()])


def _palette(rgba: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct colours and each cell's index among them."""
    packed = (rgba[:, 0].astype(np.uint32) << 16 | rgba[:, 1].astype(np.uint32) << 8
              | rgba[:, 2].astype(np.uint32))
    unique, index = np.unique(packed, return_inverse=True)
    return [f"#{int(c):06x}" for c in unique], index


def _legend(result: Result, column: str, layer: Layer, resolution: int, scale: Any
            ) -> dict[str, Any]:
    colours = scale.colours
    legend: dict[str, Any] = {"label": result.meanings[column].label, "kind": layer.style.kind,
                              "entries": [list(e) for e in scale.legend]}
    if colours.cmap is not None:
        lut = colours.cmap(np.arange(colours.cmap.N), bytes=True)
        legend |= {"vmin": float(colours.norm.vmin), "vmax": float(colours.norm.vmax),
                   "ramp": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b, _ in lut.tolist()]}
        if hasattr(colours.norm, "vcenter"):
            legend["center"] = float(colours.norm.vcenter)
    if resolution < result.resolution:
        legend["coarser"] = (f"coarser cells (res {resolution}) shown: "
                             f"{layer.rule.text} (published at res {result.resolution})")
    return legend


@router.get("/maps/{dataset}/cells/{cell}", response_model=dict[str, Any])
def cell(dataset: str, cell: str, kept: Kept, scope: ScopeQ = None,
         resolution: ResQ = None, scenario: str | None = None) -> Response:
    """Every column's value of one cell: the published row, or for a coarser cell its
    published descendants' values by each column's rule."""
    try:
        wanted = int(grid.ids([cell])[0])
        level = int(grid.resolutions(np.array([wanted], dtype=np.uint64))[0])
    except (ValueError, TypeError, pa.ArrowException):
        raise UsageError(f"'{cell}' is not an H3 cell id") from None
    result = kept.result(dataset, scope, resolution)
    if wanted == 0 or level > result.resolution:
        raise UsageError(f"'{cell}' is not an H3 cell at resolution {result.resolution} "
                         "or coarser")
    key = ("cell", result.token, cell, scenario or "")
    body = kept.answers.get(key, lambda: encoded(_cell(result, cell, wanted, level,
                                                       scenario)))
    return Response(body, media_type=JSONResponse.media_type)


def _cell(result: Result, cell: str, wanted: int, level: int, scenario: str | None
          ) -> dict[str, Any]:
    under = grid.parents(result.ids, level) == np.uint64(wanted)
    of_scenario = result.of(scenario)
    mine = np.flatnonzero(under if of_scenario is None else under & of_scenario)
    if not len(mine):
        raise NotFound(f"cell {cell} holds no published cell of this result")
    picked = result.selection.table.take(pa.array(mine))
    values = {c: _combined(picked, c, result.rules[c]) for c in result.columns}
    return {"cell": cell, "resolution": level, "published_resolution": result.resolution,
            "cells": len(mine), "values": values,
            "labels": {c: result.meanings[c].label for c in result.columns}}


def _combined(rows: pa.Table, column: str, rule: Rule) -> float | None:
    values = numbers(rows.column(column), column)
    weights = (np.nan_to_num(numbers(rows.column(rule.weight), rule.weight))
               if rule.weight and rule.weight in rows.column_names else np.ones(len(values)))
    out, _ = reduce(values, weights, np.zeros(1, dtype=np.int64), rule.how)
    return None if np.isnan(out[0]) else float(out[0])


def outline_of(scoped: Scoped) -> dict[str, Any]:
    """The scope's outline (GeoJSON, simplified past :data:`OUTLINE_POINTS` points)
    and its bounds (W > E across the antimeridian); nulls when it cannot be resolved."""
    try:
        geometry = ScopeRef.parse(scoped.scope).resolve().geometry
    except H3PipeError:
        return {"outline": None, "bounds": None}
    parts = shapely.get_parts(geometry)
    bounds = grid.arc_bounds(np.asarray(shapely.bounds(parts)))
    if shapely.get_num_coordinates(geometry) > OUTLINE_POINTS:
        # About a pixel of a map 2,000 pixels across: the line looks the same.
        west, south, east, north = geometry.bounds
        geometry = shapely.simplify(geometry, max(east - west, north - south) / 2000,
                                    preserve_topology=True)
    return {"outline": shapely.geometry.mapping(geometry), "bounds": list(bounds)}


__all__ = ["Result", "Results", "Scoped", "outline_of", "pick_resolution", "pick_scope",
           "router"]
