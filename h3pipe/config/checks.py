"""Semantic checks of source and pipeline documents, past their schema: :class:`Loaded`.

:func:`check_source` and :func:`check_pipeline` look at one parsed document against what is
already loaded (sources, pipelines, the catalog's deactivated sources), return its problems
and, when it has none, add its spec to :class:`Loaded`. Steps are checked one by one
(:func:`_step_problems`), then as a graph (cycles) and as a flow of rows (:class:`_Flow`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h3pipe import resolutions
from h3pipe.config import schemas
from h3pipe.config.dag import StepGraph
from h3pipe.config.schemas import suggest
from h3pipe.config.yamlio import Document
from h3pipe.errors import Problem, SourceError
from h3pipe.operations import get_operation, operation_names
from h3pipe.operations.base import Operation
from h3pipe.operations.shares import class_problems
from h3pipe.operations.tabular import expression_problems
from h3pipe.sources.dimensions import SCENARIO, Dimensions, key_columns, placeholders
from h3pipe.sources.raster import expand_location
from h3pipe.spec import PipelineSpec, SourceSpec, StacSpec, StepSpec

CATALOG = "catalog:"  # the "file" of a source that comes from the store's catalog

PathList = list[str | int]
Shape = tuple[str, list[str]]  # the kind of rows a step gives, and their columns


@dataclass
class Loaded:
    """What the files checked so far define; later files are checked against it."""

    sources: dict[str, tuple[Document, SourceSpec]] = field(default_factory=dict)
    broken_sources: dict[str, str] = field(default_factory=dict)  # id -> file
    deactivated: dict[str, str] = field(default_factory=dict)  # id -> when
    pipelines: dict[str, tuple[Document, PipelineSpec]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


# -- sources -----------------------------------------------------------------------------------

def check_source(doc: Document, loaded: Loaded, *, valid: bool) -> list[Problem]:
    data = doc.data
    sid = data.get("id") if isinstance(data, dict) else None
    if not isinstance(sid, str):
        return []
    # A file checked after the catalog was read overrides the registered copy.
    if sid in loaded.sources and loaded.sources[sid][0].file.startswith(CATALOG):
        del loaded.sources[sid]
    if loaded.broken_sources.get(sid, "").startswith(CATALOG):
        del loaded.broken_sources[sid]
    if sid in loaded.sources or sid in loaded.broken_sources:
        other = (loaded.sources[sid][0].file if sid in loaded.sources
                 else loaded.broken_sources[sid])
        return [doc.problem(["id"], f"source id '{sid}' is already defined in {other}; ids "
                            "must be unique")]
    problems = _kind_problems(doc) + _sweep_problems(doc) if valid else []
    if not valid or problems:
        loaded.broken_sources[sid] = doc.file
        return problems
    loaded.sources[sid] = (doc, source_spec(data, doc.file))
    return []


def _kind_problems(doc: Document) -> list[Problem]:
    """Keys that only some kinds of (schema-valid) source take."""
    data = doc.data
    if data["kind"] != "vector":
        wrong = [k for k in ("layer", "table", "id_field", "attributes") if k in data]
        return [doc.problem([k], f"'{k}' is only for vector sources (this is a {data['kind']} "
                            "source)") for k in wrong] + _class_problems(doc)
    if "measure" in data or "classes" in data:
        key = "measure" if "measure" in data else "classes"
        return [doc.problem([key], f"'{key}' describes raster values; a vector source's "
                            "attributes have none")]
    is_db = data["path"].startswith(("postgresql://", "postgres://"))
    if is_db and "table" not in data:
        return [doc.problem(["path"], "a database URL needs 'table' (schema.name)")]
    if is_db and "id_field" not in data:
        return [doc.problem(["table"], "a PostGIS table needs 'id_field' (a column that "
                            "identifies a row, such as its primary key)")]
    if "table" in data and not is_db:
        return [doc.problem(["table"], "'table' needs 'path' to be a postgresql:// URL")]
    return []


def _class_problems(doc: Document) -> list[Problem]:
    """Classes listed twice, or given to a source that says it is not categorical."""
    data = doc.data
    found = [doc.problem(list(at), msg) for at, msg in class_problems(data.get("classes"))]
    if "classes" in data and data.get("measure", "categorical") != "categorical":
        found.append(doc.problem(["classes"], f"classes are for a categorical source; this "
                                 f"one is {data['measure']} (drop classes, or say measure: "
                                 "categorical)"))
    return found


# The columns a published result carries besides a pipeline's own: no output may take them.
_RESULT_KEYS = (SCENARIO, "h3_index", "resolution", "geometry")
# Names a key column may not take: the ones every result or feature has.
_RESERVED = {*_RESULT_KEYS, "feature_id"}


def _sweep_problems(doc: Document) -> list[Problem]:
    """``bands``, ``dimensions`` and ``combinations``: what the schema cannot say."""
    data = doc.data
    out = []
    if "bands" in data and "band" in data:
        out.append(doc.problem(["band"], "give 'band' or 'bands', not both"))
    names = [b if isinstance(b, str) else b["name"] for b in data.get("bands", [])]
    if len(set(names)) != len(names):
        out.append(doc.problem(["bands"], "band names repeat"))
    if "combinations" in data and "dimensions" not in data:
        out.append(doc.problem(["combinations"], "'combinations' needs 'dimensions'"))
    if "dimensions" not in data:
        return out
    for i, group in enumerate(data.get("combinations", [])):
        out += [doc.problem(["combinations", i, name], f"'{name}' is not a dimension "
                            f"({', '.join(data['dimensions'])})")
                for name in group if name not in data["dimensions"]]
    dims = Dimensions.parse(data["dimensions"], data.get("combinations"))
    out += [doc.problem(list(path), msg) for path, msg in dims.problems()]
    for name in dims.names:
        if name in _RESERVED or name == data.get("band_key"):
            out.append(doc.problem(["dimensions", name], f"'{name}' is taken; name the "
                                   "dimension otherwise"))
    if out:
        return out
    return out + _template_problems(doc, dims)


def _template_problems(doc: Document, dims: Dimensions) -> list[Problem]:
    """Each combination must name its own files: the templates use the dimensions."""
    data = doc.data
    if data["kind"] == "vector":
        return [doc.problem(["dimensions"], "dimensions are for raster and stac sources")]
    stac = data.get("stac", {})
    templates = ({("path",): data["path"]} if data["kind"] == "raster" else
                 {("stac", k): json.dumps(stac[k]) for k in ("collection", "datetime", "query")
                  if k in stac})
    known = {SCENARIO, *dims.names}
    out = []
    for path, text in templates.items():
        for name in sorted(placeholders(text) - known):
            out.append(doc.problem(list(path), f"'{{{name}}}' is not a dimension (dimensions: "
                                   f"{', '.join(dims.names)}; or {{scenario}})"))
    seen: dict[str, str] = {}
    for sc in dims.scenarios():
        filled = "\n".join(sc.fill(t) for t in templates.values())
        if filled in seen:
            where = "path" if data["kind"] == "raster" else "stac query"
            out.append(doc.problem(list(next(iter(templates))), f"scenarios '{seen[filled]}' "
                                   f"and '{sc.id}' get the same {where}; name the dimensions "
                                   "that tell them apart, as {flood_type} or {scenario}"))
            break
        seen[filled] = sc.id
    return out


def scenario_data_problems(doc: Document, spec: SourceSpec, root: Path
                           ) -> tuple[list[Problem], str | None]:
    """Each scenario of a dimensioned raster source whose files do not exist (its path
    template filled in). When none exists at all, no problem but a note: the data is not on
    this machine (a CI checkout), not partly missing. STAC and remote sources are looked at
    when a run describes them."""
    if spec.dimensions is None or spec.kind != "raster" or "://" in spec.location:
        return [], None
    scenarios = spec.dimensions.scenarios()
    missing = []
    for sc in scenarios:
        try:
            expand_location(spec.scenario_location(sc), root, spec.id)
        except SourceError:
            missing.append(sc)
    if len(missing) == len(scenarios):
        return [], (f"{doc.file}: source '{spec.id}': no file for any of its "
                    f"{len(scenarios)} scenarios ({spec.scenario_location(scenarios[0])} ...); "
                    "not checked")
    return [doc.problem(["path"], f"scenario '{sc.id}' has no file: "
                        f"{spec.scenario_location(sc)}", "data") for sc in missing], None


def _bands(data: dict[str, Any]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The numbers and names of a source's ``bands`` (none: () and ())."""
    entries = data.get("bands", [])
    numbers = tuple(i + 1 if isinstance(b, str) else b["band"] for i, b in enumerate(entries))
    return numbers, tuple(b if isinstance(b, str) else b["name"] for b in entries)


def source_spec(data: dict[str, Any], file: str) -> SourceSpec:
    """The spec of a validated, expanded source document."""
    stac = data.get("stac")
    numbers, names = _bands(data)
    dims = (Dimensions.parse(data["dimensions"], data.get("combinations"))
            if "dimensions" in data else None)
    return SourceSpec(
        id=data["id"], kind=data["kind"], location=data.get("path", ""), theme=data["theme"],
        nodata=data.get("nodata"), nodata_override="nodata" in data,
        units=data.get("units"), title=data.get("title"),
        license=data.get("license"), provenance=data.get("provenance", {}), file=file,
        stac=StacSpec(url=stac["url"], collection=stac["collection"],
                      asset=stac.get("asset", "data"), datetime=stac.get("datetime"),
                      query=stac.get("query"), signer=stac.get("signer", "none"))
        if stac else None,
        document=data, layer=data.get("layer"), table=data.get("table"),
        id_field=data.get("id_field"), attributes=tuple(data.get("attributes", [])),
        band=numbers[0] if numbers else data.get("band", 1), bands=numbers,
        band_names=names, band_key=data.get("band_key", "band"), dimensions=dims,
        measure=data.get("measure"),
        band_measures=tuple(None if isinstance(b, str) else b.get("measure")
                            for b in data.get("bands", [])),
        classes=tuple((float(c["value"]), c["name"]) for c in data.get("classes", [])),
    )


# -- pipelines ---------------------------------------------------------------------------------

def check_pipeline(doc: Document, loaded: Loaded, *, valid: bool) -> list[Problem]:
    """Semantic checks, run even when the schema failed so one pass shows everything;
    they look only at the parts that have the right shape."""
    data = doc.data if isinstance(doc.data, dict) else {}
    problems: list[Problem] = []
    pid = data.get("id")
    if isinstance(pid, str) and pid in loaded.pipelines:
        other = loaded.pipelines[pid][0]
        problems.append(doc.problem(["id"], f"pipeline id '{pid}' is already defined "
                                    f"in {other.file}; ids must be unique"))
    raw = data.get("steps")
    raw_steps: list[Any] = raw if isinstance(raw, list) else []
    steps = [(i, st) for i, st in enumerate(raw_steps)
             if isinstance(st, dict) and isinstance(st.get("id"), str)]
    ids, duplicates = _step_ids(doc, steps)
    problems += duplicates + _resolutions_problems(doc, data)
    flow = None
    columns: dict[str, str] = {}
    for i, step in steps:
        problems += _step_problems(doc, i, step, ids, loaded, columns)
    if raw_steps and valid and not any(s.get("output", "h3_stats") == "h3_stats"
                                       for _, s in steps):
        problems.append(doc.problem(["steps"], "no step has 'output: h3_stats', so the "
                                    "pipeline would produce nothing"))
    if not duplicates and len(steps) == len(raw_steps):
        problems += _cycle_problems(doc, steps, ids)
        flow = _Flow(doc, steps, ids, loaded)
        if not problems and valid:
            problems += flow.problems()
            problems += _matrix_problems(doc, steps, loaded)
    if not problems and valid:
        spec = pipeline_spec(doc, flow.params if flow else None)
        problems += _owner_problems(doc, spec, loaded)
        loaded.pipelines[spec.id] = (doc, spec)
    return problems


def _owner_problems(doc: Document, spec: PipelineSpec, loaded: Loaded) -> list[Problem]:
    """One pipeline per dataset: a second one's runs would replace the first's columns."""
    return [doc.problem(["output", "dataset"], f"dataset '{spec.dataset}' is also written "
                        f"by pipeline '{other.id}' ({other_doc.file}); give each pipeline "
                        "a dataset of its own")
            for other_doc, other in loaded.pipelines.values()
            if other.dataset == spec.dataset and other.id != spec.id]


def _swept(steps: list[tuple[int, dict[str, Any]]], loaded: Loaded
           ) -> list[tuple[int, SourceSpec]]:
    """The steps that read a dimensioned source, with it."""
    out = []
    for i, step in steps:
        entry = loaded.sources.get(step.get("source") or "")
        if entry is not None and entry[1].dimensions is not None:
            out.append((i, entry[1]))
    return out


def _matrix_problems(doc: Document, steps: list[tuple[int, dict[str, Any]]],
                     loaded: Loaded) -> list[Problem]:
    """``matrix`` must name dimensions and values of the one sweep the pipeline reads."""
    swept = _swept(steps, loaded)
    matrix = doc.data.get("matrix", {})
    if not swept:
        return [doc.problem(["matrix"], "no step reads a source with dimensions, so there "
                            "is nothing to sweep")] if matrix else []
    first = swept[0][1]
    assert first.dimensions is not None
    for i, src in swept[1:]:
        if src.dimensions is None or src.dimensions.names != first.dimensions.names:
            return [doc.problem(["steps", i, "source"], f"source '{src.id}' has other "
                                f"dimensions than '{first.id}'; one run sweeps one set")]
    published = [i for i, st in steps if st.get("output", "h3_stats") == "h3_stats"]
    if len(published) > 1:
        return [doc.problem(["steps", published[1], "output"], "a sweep publishes one step; "
                            "make the others intermediate")]
    declared = dict(first.dimensions.values)
    out = []
    for name, values in matrix.items():
        if name not in declared:
            out.append(doc.problem(["matrix", name], f"'{name}' is not a dimension of source "
                                   f"'{first.id}' ({', '.join(declared)})"))
        elif values != "all":
            out += [doc.problem(["matrix", name, j], f"'{v}' is not a value of '{name}' "
                                f"({', '.join(declared[name])})")
                    for j, v in enumerate(values) if str(v) not in declared[name]]
    if not out and not first.dimensions.select(_matrix(matrix)):
        out.append(doc.problem(["matrix"], f"no scenario of source '{first.id}' has these "
                               "values"))
    return out


def _resolutions_problems(doc: Document, data: dict[str, Any]) -> list[Problem]:
    """A ``defaults.resolutions`` range that runs backwards or leaves 0..15."""
    defaults = data.get("defaults")
    given = defaults.get("resolutions") if isinstance(defaults, dict) else None
    if not isinstance(given, str):
        return []
    why = resolutions.problem(given)
    return [doc.problem(["defaults", "resolutions"], why)] if why else []


def _matrix(matrix: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """A document's ``matrix`` as the values chosen per dimension ('all' left out)."""
    return {k: tuple(str(v) for v in vals) for k, vals in matrix.items() if vals != "all"}


def _step_ids(doc: Document, steps: list[tuple[int, dict[str, Any]]]
              ) -> tuple[dict[str, int], list[Problem]]:
    """Each step id's index (its first), and a problem for every repeated one."""
    ids: dict[str, int] = {}
    problems = []
    for i, step in steps:
        if step["id"] in ids:
            problems.append(doc.problem(["steps", i, "id"], f"duplicate step id "
                                        f"'{step['id']}' (also steps[{ids[step['id']]}])"))
        else:
            ids[step["id"]] = i
    return ids, problems


def pipeline_spec(doc: Document, params: dict[str, dict[str, Any]] | None = None
                  ) -> PipelineSpec:
    """The spec of a valid pipeline document; ``params``: a step's params as the checks
    expanded them (an aggregation over a multi-band source's columns, once per band)."""
    data = doc.data
    params = params or {}
    specs = tuple(
        StepSpec(id=s["id"], operation=s["operation"], source=s.get("source"),
                 input=s.get("input", "cells"), depends_on=tuple(s.get("depends_on", [])),
                 params=params.get(s["id"], s.get("params", {})),
                 output=s.get("output", "h3_stats"),
                 cleanup=s.get("cleanup", {"policy": "on_success"}),
                 storage=s.get("storage", "table"), retries=s.get("retries"),
                 retry_backoff=s.get("retry_backoff"))
        for s in data["steps"]
    )
    canonical = json.dumps(data, sort_keys=True, default=str)
    return PipelineSpec(
        id=data["id"], dataset=data["output"]["dataset"], theme=data["output"]["theme"],
        steps=specs, version=data.get("version", 1), title=data.get("title"),
        defaults=data.get("defaults", {}), file=doc.file,
        content_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16], document=data,
        matrix=_matrix(data.get("matrix", {})),
    )


# -- one step ----------------------------------------------------------------------------------

def _step_problems(doc: Document, i: int, step: dict[str, Any], ids: dict[str, int],
                   loaded: Loaded, columns: dict[str, str]) -> list[Problem]:
    """``columns`` maps each published column to the step that gives it, across steps."""
    at: PathList = ["steps", i]
    out: list[Problem] = []
    op = None
    operation = step.get("operation")
    if isinstance(operation, str):
        if operation not in operation_names():
            out.append(doc.problem(at + ["operation"], f"unknown operation '{operation}'"
                                   + suggest(operation, operation_names())
                                   + f" (known: {', '.join(operation_names())})"))
        else:
            op = get_operation(operation)
    out += _source_problems(doc, at, step, op, loaded)
    out += _reference_problems(doc, at, step, ids, loaded)
    cleanup = step.get("cleanup")
    if isinstance(cleanup, dict) and cleanup.get("policy") == "ttl" \
            and "ttl_hours" not in cleanup:
        out.append(doc.problem(at + ["cleanup"], "policy 'ttl' needs 'ttl_hours'"))
    params = step.get("params", {})
    if op is not None and isinstance(params, dict):
        source = step.get("source")
        entry = loaded.sources.get(source) if isinstance(source, str) else None
        raster = entry[1] if entry is not None and entry[1].kind != "vector" else None
        out += _params_problems(doc, at, step, op, params, columns, raster)
    return out


def _source_problems(doc: Document, at: PathList, step: dict[str, Any],
                     op: Operation | None, loaded: Loaded) -> list[Problem]:
    out = []
    source = step.get("source")
    if isinstance(source, str) and source in loaded.deactivated:
        out.append(doc.problem(at + ["source"], f"source '{source}' is deactivated in the "
                               f"catalog (since {loaded.deactivated[source][:19]}); "
                               "register it again to use it"))
    elif isinstance(source, str) and source not in loaded.sources:
        if source in loaded.broken_sources:
            out.append(doc.problem(at + ["source"], f"source '{source}' is invalid; fix "
                                   f"{loaded.broken_sources[source]} first"))
        else:
            out.append(doc.problem(at + ["source"], f"unknown source '{source}'"
                                   + suggest(source, list(loaded.sources))
                                   + " (sources are defined in sources/*.yaml)"))
    if op is None:
        return out
    if op.requires_source and source is None:
        out.append(doc.problem(at, f"operation '{op.name}' needs a 'source'"))
    if not op.requires_source and source is not None:
        out.append(doc.problem(at + ["source"], f"operation '{op.name}' reads no source"))
    if isinstance(source, str) and source in loaded.sources:
        kind = loaded.sources[source][1].kind
        params = step.get("params")
        why = op.check_source(params, kind) if isinstance(params, dict) else None
        if kind not in op.source_kinds:
            out.append(doc.problem(at + ["source"], f"operation '{op.name}' cannot read "
                                   f"{kind} source '{source}' (it reads "
                                   f"{' or '.join(op.source_kinds)} sources)"))
        elif why:
            out.append(doc.problem(at + ["source"], why))
    return out


def _reference_problems(doc: Document, at: PathList, step: dict[str, Any],
                        ids: dict[str, int], loaded: Loaded) -> list[Problem]:
    """'input' and 'depends_on': steps of this pipeline, cells or a vector source."""
    out = []
    refs: list[tuple[PathList, str]] = []
    ref = step.get("input", "cells")
    if isinstance(ref, str):
        if ref.startswith("$"):
            refs.append((at + ["input"], ref[1:]))
        elif ref != "cells" and ref in loaded.sources:
            if loaded.sources[ref][1].kind != "vector":
                out.append(doc.problem(at + ["input"], f"input '{ref}' is a "
                                       f"{loaded.sources[ref][1].kind} source; an input is "
                                       "'cells', '$step_id' or a vector source"))
        elif ref != "cells":
            known = [k for k, v in loaded.sources.items() if v[1].kind == "vector"]
            out.append(doc.problem(at + ["input"], f"input '{ref}' must be 'cells', "
                                   "'$step_id' or a vector source" + suggest(ref, known)))
    depends = step.get("depends_on")
    if isinstance(depends, list):
        refs += [(at + ["depends_on", j], d) for j, d in enumerate(depends)
                 if isinstance(d, str)]
    for path, name in refs:
        if name not in ids:
            out.append(doc.problem(path, f"unknown step reference '{name}'"
                                   + suggest(name, list(ids))))
    return out


def _params_problems(doc: Document, at: PathList, step: dict[str, Any], op: Operation,
                     params: dict[str, Any], columns: dict[str, str],
                     source: SourceSpec | None = None) -> list[Problem]:
    out = schemas.checked(doc, op.params_schema, at + ["params"], params)
    if out:
        return out
    if source is not None:  # what the step leaves to its source (a categorical's classes)
        params = op.source_params(params, source)
    for sub, message in op.check_params(params):
        out.append(doc.problem(at + ["params", *sub], message))
    if step.get("output", "h3_stats") == "h3_stats":
        for col, sub in op.output_column_paths(params):
            if col in _RESULT_KEYS:
                out.append(doc.problem(at + ["params", *sub], f"output column '{col}' is "
                                       f"a name every result has ({', '.join(_RESULT_KEYS)})"
                                       "; name the column otherwise"))
            elif col in columns:
                out.append(doc.problem(at + ["params", *sub], f"output column '{col}' "
                                       f"is also produced by step '{columns[col]}'"))
            columns[col] = step["id"]
    return out


# -- all steps ---------------------------------------------------------------------------------

def _cycle_problems(doc: Document, steps: list[tuple[int, dict[str, Any]]],
                    ids: dict[str, int]) -> list[Problem]:
    specs = []
    for _, s in steps:
        # Only well-formed, known references make edges; the rest is reported elsewhere.
        ref = s.get("input")
        if not (isinstance(ref, str) and ref.startswith("$") and ref[1:] in ids):
            ref = "cells"
        raw_deps = s.get("depends_on")
        deps = [d for d in raw_deps if isinstance(d, str) and d in ids] \
            if isinstance(raw_deps, list) else []
        specs.append(StepSpec(id=s["id"], operation="", input=ref, depends_on=tuple(deps)))
    out = []
    for cycle in StepGraph(specs).cycles():
        # Start each loop at the member defined first, so the report never depends on
        # set iteration order.
        k = min(range(len(cycle)), key=lambda j: ids[cycle[j]])
        loop = cycle[k:] + cycle[:k]
        out.append((ids[loop[0]], " -> ".join(loop + [loop[0]])))
    return [doc.problem(["steps", i], f"dependency cycle: {text}; remove one of the links "
                        "(each arrow points from a step to one that needs it)")
            for i, text in sorted(out)]


class _Flow:
    """Follow the rows from step to step: each operation must accept the kind of rows it
    gets, its SQL must name columns that exist, and a published step must give cells."""

    def __init__(self, doc: Document, steps: list[tuple[int, dict[str, Any]]],
                 ids: dict[str, int], loaded: Loaded) -> None:
        self.doc, self.ids, self.loaded = doc, ids, loaded
        self.by_id = dict(steps)
        self.shapes: dict[str, Shape | None] = {}
        self.out: list[Problem] = []
        # What flows from each step besides columns: the bands its columns are per, and
        # whether its rows carry a sweep's keys.
        self.bands: dict[str, tuple[str, ...]] = {}
        self.keys: dict[str, list[str]] = {}
        self.params: dict[str, dict[str, Any]] = {}  # params as expanded per band

    def problems(self) -> list[Problem]:
        for i in self.by_id:
            self.shape(i)
        return self.out

    def shape(self, i: int) -> Shape | None:
        """What step ``i`` gives (None when that cannot be known, already reported)."""
        step = self.by_id[i]
        if step["id"] in self.shapes:
            return self.shapes[step["id"]]
        self.shapes[step["id"]] = None
        given = self._input_shape(step)
        if given is None:
            return None
        result = self._check(i, step, given)
        self.shapes[step["id"]] = result
        return result

    def _input_shape(self, step: dict[str, Any]) -> Shape | None:
        ref = step.get("input", "cells")
        if ref == "cells":
            return ("cells", ["h3_index"])
        if ref.startswith("$"):
            return self.shape(self.ids[ref[1:]])
        src = self.loaded.sources[ref][1]
        return ("features", ["feature_id", *src.attributes, "geometry"])

    def _check(self, i: int, step: dict[str, Any], given: Shape) -> Shape | None:
        doc = self.doc
        op = get_operation(step["operation"])
        params = step.get("params", {})
        at: PathList = ["steps", i]
        kind, columns = given
        if kind not in op.input_kinds and not (kind == "cells" and "rows" in op.input_kinds):
            wants = " or ".join(sorted(op.input_kinds))
            self.out.append(doc.problem(at + ["input"], f"operation '{op.name}' runs over "
                                        f"{wants}, but its input gives {kind}"))
            return None
        if op.group_by == "h3_index" and "h3_index" not in columns:
            # The planner places such rows in the cell of their centroid.
            if "geometry" not in columns:
                self.out.append(doc.problem(at + ["input"], "the rows have neither h3_index "
                                            "nor a geometry to place them in a cell"))
                return None
            columns = [*columns, "h3_index"]
        ref = step.get("input", "cells")
        upstream = ref[1:] if ref.startswith("$") else None
        self.bands[step["id"]] = self.bands.get(upstream or "", ())
        self.keys[step["id"]] = self.keys.get(upstream or "", [])
        params = op.per_band(params, self.bands[step["id"]], columns)
        src = self._raster_source(step)
        if src is not None:
            params = op.source_params(params, src)
            self.out.extend(doc.problem(at + ["params", *sub], msg)
                            for band, measure in src.measures().items()
                            for sub, msg in op.measure_problems(
                                params, measure, f" '{src.id}'" + (f" band '{band}'" if band
                                                                   else "")))
        if params is not step.get("params", {}):
            self.params[step["id"]] = params
        for sub, expr in op.expressions(params):
            self.out.extend(doc.problem(at + ["params", *sub], msg)
                            for msg in expression_problems(expr, columns))
        self.out.extend(doc.problem(at + ["params", *sub], msg)
                        for sub, msg in op.column_problems(params, columns))
        result = (op.produces or kind, self._columns(step, op, params, columns))
        if step.get("output", "h3_stats") == "h3_stats":
            self.out += self._publish_problems(at, step, op, params, result[0])
            self.out += [doc.problem(at + ["params", *sub], f"output column '{col}' is a "
                                     "key of the sweep this step reads; name the column "
                                     "otherwise")
                         for col, sub in op.output_column_paths(params)
                         if col in self.keys[step["id"]] and col not in _RESULT_KEYS]
        return result

    def _raster_source(self, step: dict[str, Any]) -> SourceSpec | None:
        entry = self.loaded.sources.get(step.get("source") or "")
        return entry[1] if entry is not None and entry[1].kind != "vector" else None

    def _columns(self, step: dict[str, Any], op: Operation, params: dict[str, Any],
                 columns: list[str]) -> list[str]:
        """A step's output columns: a multi-band source's outputs once per band, and a
        sweep's keys (from its dimensioned source or its input)."""
        out = op.columns(params, columns)
        entry = self.loaded.sources.get(step.get("source") or "")
        src = entry[1] if entry is not None and entry[1].kind != "vector" else None
        if src is not None and src.band_names:
            mine = set(op.output_columns(params))
            out = [n for c in out for n in (src.columns([c]) if c in mine else [c])]
            self.bands[step["id"]] = src.band_names
        if src is not None and src.dimensions is not None:
            self.keys[step["id"]] = key_columns(src.dimensions)
        keys = [k for k in self.keys[step["id"]] if k not in out]
        at = out.index("h3_index") + 1 if "h3_index" in out else 0
        return out[:at] + keys + out[at:]

    def _publish_problems(self, at: PathList, step: dict[str, Any], op: Operation,
                          params: dict[str, Any], kind: str) -> list[Problem]:
        if kind != "cells":
            return [self.doc.problem(at + ["output"], f"step '{step['id']}' gives {kind}, not "
                                     "H3 cells; aggregate them with h3_weighted_aggregate, "
                                     "or use 'output: intermediate'")]
        if not op.output_columns(params):
            return [self.doc.problem(at + ["output"], f"step '{step['id']}' adds no column to "
                                     "publish; use 'output: intermediate'")]
        return []
