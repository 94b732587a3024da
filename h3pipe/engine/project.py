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

from h3pipe.engine import schemas
from h3pipe.engine.dag import StepGraph
from h3pipe.engine.yamlio import Document, format_path, load_document
from h3pipe.errors import ConfigError, Problem, ValidationFailed
from h3pipe.operations import get_operation, operation_names
from h3pipe.spec import PipelineSpec, SourceSpec, StepSpec

PROJECT_FILE = "h3pipe.yaml"
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
    pipelines: dict[str, tuple[Document, PipelineSpec]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @classmethod
    def locate(cls, project: Path | str | None = None) -> Project:
        chosen = project or os.environ.get("H3PIPE_PROJECT") or "."
        root = Path(chosen).expanduser()
        if not root.is_dir():
            raise ConfigError(f"project folder not found: {root}",
                              hint="pass --project DIR or set H3PIPE_PROJECT")
        return cls(root)

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

    def check(self, paths: list[Path] | None = None) -> Report:
        """Validate the project, or only ``paths`` (sources are always read for references)."""
        report = Report()
        loaded = _Loaded()
        if self.settings_file.exists():
            self._check_file(self.settings_file, "project", loaded, report)
        for f in self.source_files():
            self._check_file(f, "source", loaded, report)
        if paths is None:
            targets = [(f, "pipeline") for f in self.pipeline_files()]
        else:
            targets = []
            for p in paths:
                if p.is_dir():
                    targets += [(f, self._kind_of(f)) for f in sorted(p.rglob("*.y*ml"))]
                else:
                    targets.append((p, self._kind_of(p)))
        for f, kind in targets:
            if kind != "source" and f.resolve() != self.settings_file.resolve():
                self._check_file(f, kind, loaded, report)
        if paths is not None:
            wanted = {self.display(f) for f, _ in targets}
            report.problems = [p for p in report.problems if p.file in wanted]
            report.files = [f for f in report.files if f in wanted]
        self._loaded = loaded
        return report

    def load(self) -> tuple[dict[str, SourceSpec], dict[str, PipelineSpec], dict[str, Any]]:
        report = self.check()
        if not report.ok:
            raise ValidationFailed(report.problems)
        return ({k: v[1] for k, v in self._loaded.sources.items()},
                {k: v[1] for k, v in self._loaded.pipelines.items()},
                self._loaded.settings)

    def _kind_of(self, path: Path) -> str:
        if path.name == PROJECT_FILE:
            return "project"
        if path.resolve().parent.name == "sources":
            return "source"
        return "pipeline"

    def _check_file(self, path: Path, kind: str, loaded: _Loaded, report: Report) -> None:
        name = self.display(path)
        report.files.append(name)
        doc, problems = load_document(path, name)
        report.problems += problems
        if doc is None:
            return
        schema_problems = _schema_problems(doc, schemas.validator(kind))
        report.problems += schema_problems
        if schema_problems:
            return
        if kind == "project":
            loaded.settings = doc.data
        elif kind == "source":
            self._add_source(doc, loaded, report)
        else:
            self._add_pipeline(doc, loaded, report)

    def _add_source(self, doc: Document, loaded: _Loaded, report: Report) -> None:
        data = doc.data
        if data["id"] in loaded.sources:
            other = loaded.sources[data["id"]][0]
            report.problems.append(doc.problem(["id"], f"source id '{data['id']}' is already "
                                               f"defined in {other.file}; ids must be unique"))
            return
        try:
            location = expand_env(data["path"])
        except KeyError as exc:
            report.problems.append(doc.problem(["path"], f"environment variable {exc.args[0]} is "
                                               "not set; set it or write ${VAR:-default}"))
            return
        prov = data.get("provenance", {})
        spec = SourceSpec(
            id=data["id"], kind=data["kind"], location=location, theme=data["theme"],
            band=data.get("band", 1), nodata=data.get("nodata"),
            nodata_override="nodata" in data, units=data.get("units"), title=data.get("title"),
            license=data.get("license"), provenance=prov, file=doc.file,
        )
        loaded.sources[spec.id] = (doc, spec)

    def _add_pipeline(self, doc: Document, loaded: _Loaded, report: Report) -> None:
        data = doc.data
        problems: list[Problem] = []
        if data["id"] in loaded.pipelines:
            other = loaded.pipelines[data["id"]][0]
            problems.append(doc.problem(["id"], f"pipeline id '{data['id']}' is already defined "
                                        f"in {other.file}; ids must be unique"))
        ids: dict[str, int] = {}
        for i, step in enumerate(data["steps"]):
            if step["id"] in ids:
                problems.append(doc.problem(["steps", i, "id"], f"duplicate step id "
                                            f"'{step['id']}' (also steps[{ids[step['id']]}])"))
            else:
                ids[step["id"]] = i
        columns: dict[str, str] = {}
        for i, step in enumerate(data["steps"]):
            problems += self._check_step(doc, i, step, ids, loaded, columns)
        if not any(s.get("output", "h3_stats") == "h3_stats" for s in data["steps"]):
            problems.append(doc.problem(["steps"], "no step has 'output: h3_stats', so the "
                                        "pipeline would produce nothing"))
        steps = tuple(
            StepSpec(id=s["id"], operation=s["operation"], source=s.get("source"),
                     input=s.get("input", "cells"), depends_on=tuple(s.get("depends_on", [])),
                     params=s.get("params", {}), output=s.get("output", "h3_stats"))
            for s in data["steps"]
        )
        if not problems:
            for cycle in StepGraph(steps).cycles():
                loop = " -> ".join(cycle + [cycle[0]])
                problems.append(doc.problem(["steps", ids[cycle[0]]],
                                            f"dependency cycle: {loop}; remove one of the links"))
        report.problems += problems
        if problems:
            return
        canonical = json.dumps(data, sort_keys=True, default=str)
        spec = PipelineSpec(
            id=data["id"], dataset=data["output"]["dataset"], theme=data["output"]["theme"],
            steps=steps, version=data.get("version", 1), title=data.get("title"),
            defaults=data.get("defaults", {}), file=doc.file,
            content_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16],
        )
        loaded.pipelines[spec.id] = (doc, spec)

    def _check_step(self, doc: Document, i: int, step: dict[str, Any], ids: dict[str, int],
                    loaded: _Loaded, columns: dict[str, str]) -> list[Problem]:
        at: list[str | int] = ["steps", i]
        out: list[Problem] = []
        if step["operation"] not in operation_names():
            out.append(doc.problem(at + ["operation"], f"unknown operation '{step['operation']}'"
                                   + suggest(step["operation"], operation_names())
                                   + f" (known: {', '.join(operation_names())})"))
            op = None
        else:
            op = get_operation(step["operation"])
        source = step.get("source")
        if source is not None and source not in loaded.sources:
            out.append(doc.problem(at + ["source"], f"unknown source '{source}'"
                                   + suggest(source, list(loaded.sources))
                                   + " (sources are defined in sources/*.yaml)"))
        if op is not None and op.requires_source and source is None:
            out.append(doc.problem(at, f"operation '{op.name}' needs a 'source'"))
        ref = step.get("input", "cells")
        refs = [(at + ["input"], ref[1:])] if ref.startswith("$") else []
        if ref != "cells" and not ref.startswith("$"):
            out.append(doc.problem(at + ["input"], f"input '{ref}' must be 'cells' or "
                                   "'$step_id'"))
        refs += [(at + ["depends_on", j], d) for j, d in enumerate(step.get("depends_on", []))]
        for path, name in refs:
            if name not in ids:
                out.append(doc.problem(path, f"unknown step reference '{name}'"
                                       + suggest(name, list(ids))))
        if op is not None:
            params = step.get("params", {})
            params_validator = Draft202012Validator(op.params_schema)
            found = _schema_problems(doc, params_validator, at + ["params"], params)
            out += found
            if not found:
                for sub, message in op.check_params(params):
                    out.append(doc.problem(at + ["params", *sub], message))
            if not found and step.get("output", "h3_stats") == "h3_stats":
                for col in op.output_columns(params):
                    if col in columns:
                        out.append(doc.problem(at + ["params"], f"output column '{col}' is also "
                                               f"produced by step '{columns[col]}'"))
                    columns[col] = step["id"]
        return out


def _schema_problems(doc: Document, validator: Draft202012Validator,
                     prefix: list[str | int] | None = None, data: Any = None) -> list[Problem]:
    prefix = prefix or []
    instance = doc.data if data is None else data
    out = []
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    for err in errors:
        path = prefix + list(err.absolute_path)
        out.append(Problem(doc.file, doc.line_of(_blame_path(err, path)), format_path(path),
                           _message(err), "schema"))
    return out


def _blame_path(err: SchemaError, path: list[str | int]) -> list[str | int]:
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        extra = [k for k in err.instance if k not in err.schema.get("properties", {})]
        if extra:
            return path + [extra[0]]
    return path


def _message(err: SchemaError) -> str:
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in known]
        return "; ".join(f"unknown key '{k}'" + (suggest(str(k), known) or
                         f" (allowed: {', '.join(known)})") for k in extra)
    if err.validator == "enum":
        return f"{err.instance!r} is not one of [{', '.join(repr(v) for v in err.validator_value)}]"
    return err.message
