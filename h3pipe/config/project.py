"""A project folder and everything in it, loaded and validated: :class:`Project`.

A project is a folder with ``sources/``, ``pipelines/`` and an optional ``h3pipe.yaml``.
:meth:`Project.check` reports every problem of every file in one pass;
:meth:`Project.load` returns validated specs or raises :class:`ValidationFailed`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from h3pipe.config import schemas
from h3pipe.config.dag import StepGraph
from h3pipe.config.yamlio import Document, format_path, load_document
from h3pipe.errors import ConfigError, Problem, ValidationFailed
from h3pipe.operations import get_operation, operation_names
from h3pipe.operations.tabular import expression_problems
from h3pipe.spec import PipelineSpec, SourceSpec, StacSpec, StepSpec

PROJECT_FILE = "h3pipe.yaml"
_CATALOG = "catalog:"  # the "file" of a source that comes from the store's catalog
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        val = os.environ.get(name)
        if val:
            return val
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV.sub(sub, value)


def suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return ""


@dataclass
class Report:
    """The outcome of checking files: every problem, and what was checked."""

    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Loaded:
    sources: dict[str, tuple[Document, SourceSpec]] = field(default_factory=dict)
    broken_sources: dict[str, str] = field(default_factory=dict)  # id -> file
    deactivated: dict[str, str] = field(default_factory=dict)  # id -> when
    pipelines: dict[str, tuple[Document, PipelineSpec]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class Project:
    def __init__(self, root: Path, store: str | None = None) -> None:
        self.root = root.resolve()
        self.settings: dict[str, Any] = {}
        self.store_override = store

    def store_location(self) -> str:
        """--store, else $H3PIPE_STORE, else 'store:' in h3pipe.yaml, else '.h3pipe'."""
        return (self.store_override or os.environ.get("H3PIPE_STORE")
                or self.settings.get("store") or ".h3pipe")

    @classmethod
    def locate(cls, project: Path | str | None = None, store: str | None = None) -> Project:
        chosen = project or os.environ.get("H3PIPE_PROJECT") or "."
        root = Path(chosen).expanduser()
        if not root.is_dir():
            raise ConfigError(f"project folder not found: {root}",
                              hint="pass --project DIR or set H3PIPE_PROJECT")
        return cls(root, store)

    def display(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    def source_files(self) -> list[Path]:
        return sorted((self.root / "sources").glob("*.y*ml"))

    def pipeline_files(self) -> list[Path]:
        return sorted((self.root / "pipelines").glob("*.y*ml"))

    @property
    def settings_file(self) -> Path:
        return self.root / PROJECT_FILE

    # -- checking ---------------------------------------------------------------------------

    def resolve_path(self, path: Path) -> Path:
        """A PATH argument: as given (relative to the current folder), else in the project."""
        if path.exists() or path.is_absolute():
            return path.resolve()
        return (self.root / path).resolve()

    def check(self, paths: list[Path] | None = None, as_kind: str | None = None) -> Report:
        """Validate the project, or only ``paths`` (sources are always read for references);
        ``as_kind`` forces the kind of the given paths."""
        report = Report()
        loaded = _Loaded()
        if self.settings_file.exists():
            self._check_file(self.settings_file, "project", loaded, report)
        self.settings = loaded.settings
        project_sources = self.source_files()
        for f in project_sources:
            self._check_file(f, "source", loaded, report)
        self._add_catalog_sources(loaded)
        targets: list[tuple[Path, str]] = []
        if paths is None or any(p.resolve() == self.root for p in paths if p.is_dir()):
            targets = [(f, "pipeline") for f in self.pipeline_files()]
        for p in paths or []:
            if p.resolve() == self.root:
                continue
            files = sorted(p.rglob("*.y*ml")) if p.is_dir() else [p]
            targets += [(f, as_kind or self._kind_of(f)) for f in files]
        done = {f.resolve() for f in project_sources} | {self.settings_file.resolve()}
        for f, kind in targets:
            if f.resolve() not in done:
                done.add(f.resolve())
                self._check_file(f, kind, loaded, report)
        if paths is not None and not any(p.resolve() == self.root for p in paths if p.is_dir()):
            wanted = {self.display(f) for f, _ in targets}
            report.problems = [p for p in report.problems if p.file in wanted]
            report.files = [f for f in report.files if f in wanted]
        self._loaded = loaded
        return report

    def read_settings(self) -> dict[str, Any]:
        """h3pipe.yaml alone, validated (sources and pipelines are not read)."""
        report, loaded = Report(), _Loaded()
        if self.settings_file.exists():
            self._check_file(self.settings_file, "project", loaded, report)
        if not report.ok:
            raise ValidationFailed(report.problems)
        self.settings = loaded.settings
        return self.settings

    def load(self) -> tuple[dict[str, SourceSpec], dict[str, PipelineSpec], dict[str, Any]]:
        report = self.check()
        if not report.ok:
            raise ValidationFailed(report.problems)
        return ({k: v[1] for k, v in self._loaded.sources.items()},
                {k: v[1] for k, v in self._loaded.pipelines.items()},
                self._loaded.settings)

    def _add_catalog_sources(self, loaded: _Loaded) -> None:
        """Sources registered in the store: deactivated ones are remembered so pipelines
        that need them fail; active ones without a file here become usable."""
        from h3pipe.errors import StoreError
        from h3pipe.storage import open_store

        try:
            store = open_store(self.store_location(), self.root, create=False)
        except (ConfigError, StoreError):
            return  # no store yet, or one we cannot reach: files alone decide
        try:
            rows = store.catalog.query("SELECT * FROM sources")
        finally:
            store.close()
        for row in rows:
            sid = row["id"]
            if not row["is_active"]:
                loaded.deactivated[sid] = row["updated_at"]
                continue
            if sid in loaded.sources or sid in loaded.broken_sources:
                continue  # the project's own file is the working copy
            data = json.loads(row["document"])
            label = f"{_CATALOG}{sid}@v{row['version']}"
            if _expand_tree(data, []) or list(schemas.validator("source").iter_errors(data)):
                loaded.broken_sources[sid] = f"{label} (register it again)"
                continue
            loaded.sources[sid] = (Document(label, data), source_spec(data, label))

    def _kind_of(self, path: Path) -> str:
        if path.name == PROJECT_FILE:
            return "project"
        folder = path.resolve().parent.name
        if folder in ("sources", "pipelines"):
            return folder[:-1]
        # Elsewhere, tell by content: a pipeline has steps, a source has a kind or a path.
        doc, _ = load_document(path)
        data = doc.data if doc is not None else None
        if isinstance(data, dict) and "steps" not in data and ("kind" in data or "path" in data):
            return "source"
        return "pipeline"

    def _check_file(self, path: Path, kind: str, loaded: _Loaded, report: Report) -> None:
        name = self.display(path)
        report.files.append(name)
        doc, problems = load_document(path, name)
        report.problems += problems
        if doc is None:
            return
        if kind == "source":
            # Values may come from the environment (a mirror, a signer): expand them first,
            # so the schema checks what will actually be used.
            unset = _expand_tree(doc.data, [])
            report.problems += [doc.problem(path, f"environment variable {name} is not set; "
                                            "set it or write ${VAR:-default}")
                                for path, name in unset]
            if unset:
                if isinstance(doc.data, dict) and isinstance(doc.data.get("id"), str):
                    loaded.broken_sources[doc.data["id"]] = doc.file
                return
        schema_problems = _schema_problems(doc, schemas.validator(kind))
        report.problems += schema_problems
        if kind == "project":
            if not schema_problems:
                loaded.settings = doc.data
        elif kind == "source":
            self._add_source(doc, loaded, report, valid=not schema_problems)
        else:
            self._add_pipeline(doc, loaded, report, valid=not schema_problems)

    def _add_source(self, doc: Document, loaded: _Loaded, report: Report, *, valid: bool) -> None:
        data = doc.data
        sid = data.get("id") if isinstance(data, dict) else None
        if not isinstance(sid, str):
            return
        # A file checked after the catalog was read overrides the registered copy.
        if sid in loaded.sources and loaded.sources[sid][0].file.startswith(_CATALOG):
            del loaded.sources[sid]
        if loaded.broken_sources.get(sid, "").startswith(_CATALOG):
            del loaded.broken_sources[sid]
        if sid in loaded.sources or sid in loaded.broken_sources:
            other = (loaded.sources[sid][0].file if sid in loaded.sources
                     else loaded.broken_sources[sid])
            report.problems.append(doc.problem(["id"], f"source id '{sid}' is already "
                                               f"defined in {other}; ids must be unique"))
            return
        if valid and data["kind"] != "vector":
            wrong = [k for k in ("layer", "table", "id_field", "attributes") if k in data]
            report.problems += [doc.problem([k], f"'{k}' is only for vector sources (this is "
                                            f"a {data['kind']} source)") for k in wrong]
            valid = not wrong
        if valid and data["kind"] == "vector":
            is_db = data["path"].startswith(("postgresql://", "postgres://"))
            if is_db and "table" not in data:
                report.problems.append(doc.problem(["path"], "a database URL needs 'table' "
                                                   "(schema.name)"))
                valid = False
            elif is_db and "id_field" not in data:
                report.problems.append(doc.problem(["table"], "a PostGIS table needs "
                                                   "'id_field' (a column that identifies a "
                                                   "row, such as its primary key)"))
                valid = False
            elif "table" in data and not is_db:
                report.problems.append(doc.problem(["table"], "'table' needs 'path' to be a "
                                                   "postgresql:// URL"))
                valid = False
        if not valid:
            loaded.broken_sources[sid] = doc.file
            return
        loaded.sources[sid] = (doc, source_spec(data, doc.file))

    def _add_pipeline(self, doc: Document, loaded: _Loaded, report: Report, *,
                      valid: bool) -> None:
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
        ids: dict[str, int] = {}
        duplicated = False
        for i, step in steps:
            if step["id"] in ids:
                duplicated = True
                problems.append(doc.problem(["steps", i, "id"], f"duplicate step id "
                                            f"'{step['id']}' (also steps[{ids[step['id']]}])"))
            else:
                ids[step["id"]] = i
        columns: dict[str, str] = {}
        for i, step in steps:
            problems += self._check_step(doc, i, step, ids, loaded, columns)
        if raw_steps and valid and not any(s.get("output", "h3_stats") == "h3_stats"
                                           for _, s in steps):
            problems.append(doc.problem(["steps"], "no step has 'output: h3_stats', so the "
                                        "pipeline would produce nothing"))
        if not duplicated and len(steps) == len(raw_steps):
            problems += _cycle_problems(doc, steps, ids)
            if not problems and valid:
                problems += _flow_problems(doc, steps, ids, loaded)
        report.problems += problems
        if problems or not valid:
            return
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
        spec = PipelineSpec(
            id=data["id"], dataset=data["output"]["dataset"], theme=data["output"]["theme"],
            steps=specs, version=data.get("version", 1), title=data.get("title"),
            defaults=data.get("defaults", {}), file=doc.file,
            content_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16], document=data,
        )
        loaded.pipelines[spec.id] = (doc, spec)

    def _check_step(self, doc: Document, i: int, step: dict[str, Any], ids: dict[str, int],
                    loaded: _Loaded, columns: dict[str, str]) -> list[Problem]:
        at: list[str | int] = ["steps", i]
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
        if op is not None and op.requires_source and source is None:
            out.append(doc.problem(at, f"operation '{op.name}' needs a 'source'"))
        if op is not None and not op.requires_source and source is not None:
            out.append(doc.problem(at + ["source"], f"operation '{op.name}' reads no source"))
        if op is not None and isinstance(source, str) and source in loaded.sources:
            kind = loaded.sources[source][1].kind
            params = step.get("params")
            why = op.check_source(params, kind) if isinstance(params, dict) else None
            if kind not in op.source_kinds:
                out.append(doc.problem(at + ["source"], f"operation '{op.name}' cannot read "
                                       f"{kind} source '{source}' (it reads "
                                       f"{' or '.join(op.source_kinds)} sources)"))
            elif why:
                out.append(doc.problem(at + ["source"], why))
        refs: list[tuple[list[str | int], str]] = []
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
        cleanup = step.get("cleanup")
        if isinstance(cleanup, dict) and cleanup.get("policy") == "ttl" \
                and "ttl_hours" not in cleanup:
            out.append(doc.problem(at + ["cleanup"], "policy 'ttl' needs 'ttl_hours'"))
        params = step.get("params", {})
        if op is not None and isinstance(params, dict):
            found = _schema_problems(doc, Draft202012Validator(op.params_schema),
                                     at + ["params"], params)
            out += found
            if not found:
                for sub, message in op.check_params(params):
                    out.append(doc.problem(at + ["params", *sub], message))
            if not found and step.get("output", "h3_stats") == "h3_stats":
                for col, sub in op.output_column_paths(params):
                    if col in columns:
                        out.append(doc.problem(at + ["params", *sub], f"output column '{col}' "
                                               f"is also produced by step '{columns[col]}'"))
                    columns[col] = step["id"]
        return out


def _flow_problems(doc: Document, steps: list[tuple[int, dict[str, Any]]],
                   ids: dict[str, int], loaded: _Loaded) -> list[Problem]:
    """Follow the rows from step to step: each operation must accept the kind of rows it
    gets, its SQL must name columns that exist, and a published step must give cells."""
    by_id = dict(steps)
    shapes: dict[str, tuple[str, list[str]] | None] = {}
    out: list[Problem] = []

    def shape(i: int) -> tuple[str, list[str]] | None:
        step = by_id[i]
        if step["id"] in shapes:
            return shapes[step["id"]]
        shapes[step["id"]] = None
        ref = step.get("input", "cells")
        given: tuple[str, list[str]] | None
        if ref == "cells":
            given = ("cells", ["h3_index"])
        elif ref.startswith("$"):
            given = shape(ids[ref[1:]])
        else:
            src = loaded.sources[ref][1]
            given = ("features", ["feature_id", *src.attributes, "geometry"])
        if given is None:
            return None
        op = get_operation(step["operation"])
        params = step.get("params", {})
        at: list[str | int] = ["steps", i]
        kind, columns = given
        if kind not in op.input_kinds and not (kind == "cells" and "rows" in op.input_kinds):
            wants = " or ".join(sorted(op.input_kinds))
            out.append(doc.problem(at + ["input"], f"operation '{op.name}' runs over "
                                   f"{wants}, but its input gives {kind}"))
            return None
        if op.group_by == "h3_index" and "h3_index" not in columns:
            # The planner places such rows in the cell of their centroid.
            if "geometry" not in columns:
                out.append(doc.problem(at + ["input"], "the rows have neither h3_index nor "
                                       "a geometry to place them in a cell"))
                return None
            columns = [*columns, "h3_index"]
        for sub, expr in op.expressions(params):
            out.extend(doc.problem(at + ["params", *sub], msg)
                       for msg in expression_problems(expr, columns))
        out.extend(doc.problem(at + ["params", *sub], msg)
                   for sub, msg in op.column_problems(params, columns))
        result = (op.produces or kind, op.columns(params, columns))
        if step.get("output", "h3_stats") == "h3_stats":
            if result[0] != "cells":
                out.append(doc.problem(at + ["output"], f"step '{step['id']}' gives "
                                       f"{result[0]}, not H3 cells; aggregate them with "
                                       "h3_weighted_aggregate, or use 'output: intermediate'"))
            elif not op.output_columns(params):
                out.append(doc.problem(at + ["output"], f"step '{step['id']}' adds no column "
                                       "to publish; use 'output: intermediate'"))
        shapes[step["id"]] = result
        return result

    for i, _ in steps:
        shape(i)
    return out


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


def _expand_tree(node: Any, path: list[str | int]) -> list[tuple[list[str | int], str]]:
    """Expand ${VAR} in every string of ``node`` in place; return (path, name) of unset ones."""
    unset: list[tuple[list[str | int], str]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    for key, value in list(items):
        if isinstance(value, str) and "${" in value:
            try:
                node[key] = expand_env(value)
            except KeyError as exc:
                unset.append((path + [key], exc.args[0]))
        elif isinstance(value, dict | list):
            unset += _expand_tree(value, path + [key])
    return unset


def _schema_problems(doc: Document, validator: Draft202012Validator,
                     prefix: list[str | int] | None = None, data: Any = None) -> list[Problem]:
    prefix = prefix or []
    instance = doc.data if data is None else data
    out = []
    errors = sorted(validator.iter_errors(instance),
                    key=lambda e: (list(map(str, e.absolute_path)), e.message))
    for err in errors:
        path = prefix + list(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = list(err.schema.get("properties", {}))
            for key in (k for k in err.instance if k not in known):
                hint = suggest(str(key), known) or f" (allowed: {', '.join(known)})"
                out.append(Problem(doc.file, doc.line_of(path + [key]), format_path(path),
                                   f"unknown key '{key}'{hint}", "schema"))
            continue
        at = path
        if err.validator == "not" and isinstance(err.validator_value, dict):
            at = path + list(err.validator_value.get("required", [])[:1])
        out.append(Problem(doc.file, doc.line_of(at), format_path(path), _message(err),
                           "schema"))
    return out


_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "null"}


def _type_name(value: Any) -> str:
    for kind, py in (("boolean", bool), ("object", dict), ("array", list), ("string", str),
                     ("integer", int), ("number", float)):
        if isinstance(value, py):
            return _TYPE_NAMES[kind]
    return "null" if value is None else type(value).__name__


def _message(err: SchemaError) -> str:
    if err.validator == "not" and isinstance(err.validator_value, dict) and isinstance(
            err.instance, dict):
        keys = ", ".join(f"'{k}'" for k in err.validator_value.get("required", []))
        return f"{keys} does not go with kind '{err.instance.get('kind')}'"
    if err.validator == "enum":
        return f"{err.instance!r} is not one of [{', '.join(repr(v) for v in err.validator_value)}]"
    if err.validator == "type":
        wanted = err.validator_value if isinstance(err.validator_value, list) else [
            err.validator_value]
        expected = " or ".join(_TYPE_NAMES.get(str(w), str(w)) for w in wanted)
        got = _type_name(err.instance)
        if isinstance(err.instance, str | int | float) and not isinstance(err.instance, bool):
            got += f" ({err.instance!r})"
        return f"expected {expected}, got {got}"
    return err.message
