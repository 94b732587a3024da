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
from typing import Any

from jsonschema import Draft202012Validator

from h3pipe.config import schemas
from h3pipe.config.dag import StepGraph
from h3pipe.config.schemas import suggest
from h3pipe.config.yamlio import Document
from h3pipe.errors import Problem
from h3pipe.operations import get_operation, operation_names
from h3pipe.operations.base import Operation
from h3pipe.operations.tabular import expression_problems
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
    problems = _kind_problems(doc) if valid else []
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
                            "source)") for k in wrong]
    is_db = data["path"].startswith(("postgresql://", "postgres://"))
    if is_db and "table" not in data:
        return [doc.problem(["path"], "a database URL needs 'table' (schema.name)")]
    if is_db and "id_field" not in data:
        return [doc.problem(["table"], "a PostGIS table needs 'id_field' (a column that "
                            "identifies a row, such as its primary key)")]
    if "table" in data and not is_db:
        return [doc.problem(["table"], "'table' needs 'path' to be a postgresql:// URL")]
    return []


def source_spec(data: dict[str, Any], file: str) -> SourceSpec:
    """The spec of a validated, expanded source document."""
    stac = data.get("stac")
    return SourceSpec(
        id=data["id"], kind=data["kind"], location=data.get("path", ""), theme=data["theme"],
        band=data.get("band", 1), nodata=data.get("nodata"),
        nodata_override="nodata" in data, units=data.get("units"), title=data.get("title"),
        license=data.get("license"), provenance=data.get("provenance", {}), file=file,
        stac=StacSpec(url=stac["url"], collection=stac["collection"],
                      asset=stac.get("asset", "data"), datetime=stac.get("datetime"),
                      query=stac.get("query"), signer=stac.get("signer", "none"))
        if stac else None,
        document=data, layer=data.get("layer"), table=data.get("table"),
        id_field=data.get("id_field"), attributes=tuple(data.get("attributes", [])),
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
    problems += duplicates
    columns: dict[str, str] = {}
    for i, step in steps:
        problems += _step_problems(doc, i, step, ids, loaded, columns)
    if raw_steps and valid and not any(s.get("output", "h3_stats") == "h3_stats"
                                       for _, s in steps):
        problems.append(doc.problem(["steps"], "no step has 'output: h3_stats', so the "
                                    "pipeline would produce nothing"))
    if not duplicates and len(steps) == len(raw_steps):
        problems += _cycle_problems(doc, steps, ids)
        if not problems and valid:
            problems += _Flow(doc, steps, ids, loaded).problems()
    if not problems and valid:
        spec = pipeline_spec(doc)
        loaded.pipelines[spec.id] = (doc, spec)
    return problems


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


def pipeline_spec(doc: Document) -> PipelineSpec:
    """The spec of a valid pipeline document."""
    data = doc.data
    specs = tuple(
        StepSpec(id=s["id"], operation=s["operation"], source=s.get("source"),
                 input=s.get("input", "cells"), depends_on=tuple(s.get("depends_on", [])),
                 params=s.get("params", {}), output=s.get("output", "h3_stats"),
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
        out += _params_problems(doc, at, step, op, params, columns)
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
                     params: dict[str, Any], columns: dict[str, str]) -> list[Problem]:
    out = schemas.problems(doc, Draft202012Validator(op.params_schema), at + ["params"],
                           params)
    if out:
        return out
    for sub, message in op.check_params(params):
        out.append(doc.problem(at + ["params", *sub], message))
    if step.get("output", "h3_stats") == "h3_stats":
        for col, sub in op.output_column_paths(params):
            if col in columns:
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
        for sub, expr in op.expressions(params):
            self.out.extend(doc.problem(at + ["params", *sub], msg)
                            for msg in expression_problems(expr, columns))
        self.out.extend(doc.problem(at + ["params", *sub], msg)
                        for sub, msg in op.column_problems(params, columns))
        result = (op.produces or kind, op.columns(params, columns))
        if step.get("output", "h3_stats") == "h3_stats":
            self.out += self._publish_problems(at, step, op, params, result[0])
        return result

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
