"""A project folder and everything in it, loaded and validated: :class:`ProjectConfig`.

A project is a folder with ``sources/``, ``pipelines/`` and an optional ``h3pipe.yaml``.
:meth:`ProjectConfig.check` reports every problem of every file in one pass;
:meth:`ProjectConfig.load` returns validated specs or raises :class:`ValidationFailed`.
The checks of one document past its schema live in :mod:`h3pipe.config.checks`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from h3pipe import storage
from h3pipe.config import schemas
from h3pipe.config.checks import (
    CATALOG,
    Loaded,
    check_pipeline,
    check_source,
    scenario_data_problems,
    source_spec,
)
from h3pipe.config.schemas import suggest
from h3pipe.config.yamlio import Document, load_document
from h3pipe.errors import ConfigError, Problem, StoreError, ValidationFailed
from h3pipe.spec import PipelineSpec, SourceSpec
from h3pipe.storage import registry

if TYPE_CHECKING:
    from h3pipe.storage.base import Store

__all__ = ["PROJECT_FILE", "ProjectConfig", "Report", "expand_env", "source_spec", "suggest"]

PROJECT_FILE = "h3pipe.yaml"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an
    error."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        val = os.environ.get(name)
        if val:
            return val
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV.sub(sub, value)


# Where ${VAR} is expanded: where a site's data, store and broker are (paths, URLs,
# connection strings), so one file serves many sites. Nowhere else: a title, licence or
# description lands in reports that are mailed around, and must not carry a token.
EXPANDED = {
    "source": {("path",), ("layer",), ("table",), ("stac", "url"), ("stac", "collection"),
               ("stac", "asset"), ("stac", "signer")},
    "project": {("store",), ("queue",), ("queue", "url"), ("lineage", "url"),
                ("lineage", "api_key"), ("lineage", "namespace"), ("lineage", "file")},
}


def _expand_tree(node: Any, kind: str, path: list[str | int] | None = None
                 ) -> list[tuple[list[str | int], str]]:
    """Expand ${VAR} in place in the fields of ``node`` that allow it (:data:`EXPANDED`);
    return (path, problem) for an unset variable and for ${VAR} where it is not allowed."""
    path = path or []
    found: list[tuple[list[str | int], str]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    for key, value in list(items):
        here = path + [key]
        if isinstance(value, str) and _ENV.search(value):
            if tuple(here) not in EXPANDED.get(kind, set()):
                found.append((here, _not_here(kind)))
                continue
            try:
                node[key] = expand_env(value)
            except KeyError as exc:
                found.append((here, f"environment variable {exc.args[0]} is not set; set "
                                    "it or write ${VAR:-default}"))
        elif isinstance(value, dict | list):
            found += _expand_tree(value, kind, here)
    return found


def _not_here(kind: str) -> str:
    fields = ", ".join(".".join(map(str, f)) for f in sorted(EXPANDED.get(kind, set())))
    return (f"${{VAR}} is expanded only in {fields}: write the value itself here "
            "(this text may be shown in reports)")


@dataclass
class Report:
    """The outcome of checking files: every problem, and what was checked."""

    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was left unchecked, and why

    @property
    def ok(self) -> bool:
        return not self.problems


def _state(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """What tells a file changed: its path, modification time and size (absent: -1)."""
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(f), -1, -1))
    return tuple(out)


class ProjectConfig:
    """A project's files, validated, and where its store is. :meth:`load` and
    :meth:`read_settings` read the files once and again only when they change."""

    def __init__(self, root: Path, store: str | None = None) -> None:
        self.root = root.resolve()
        self.settings: dict[str, Any] = {}
        self.store_override = store
        self._specs: tuple[dict[str, SourceSpec], dict[str, PipelineSpec],
                           dict[str, Any]] | None = None
        self._load_state: tuple[tuple[str, int, int], ...] | None = None
        self._settings_state: tuple[tuple[str, int, int], ...] | None = None

    def store_location(self) -> str:
        """--store, else $H3PIPE_STORE, else 'store:' in h3pipe.yaml, else '.h3pipe'."""
        return (self.store_override or os.environ.get("H3PIPE_STORE")
                or self.settings.get("store") or ".h3pipe")

    @classmethod
    def locate(cls, project: Path | str | None = None, store: str | None = None) -> ProjectConfig:
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

    def check(self, paths: list[Path] | None = None, as_kind: str | None = None, *,
              data: bool = False) -> Report:
        """Validate the project, or only ``paths`` (sources are always read for references);
        ``as_kind`` forces the kind of the given paths; ``data``: also look for the files of
        every scenario of a dimensioned source (see ``scenario_data_problems``)."""
        return self._check(paths, as_kind, data=data)[0]

    def _check(self, paths: list[Path] | None, as_kind: str | None, *, data: bool = False
               ) -> tuple[Report, Loaded]:
        # What was loaded is returned, never left on self: a server checks a posted file in
        # one thread while another loads the project, and must not read the other's.
        if paths is None:
            self.require_layout()
        report = Report()
        loaded = Loaded()
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
        if data:
            for doc, spec in loaded.sources.values():
                found, note = scenario_data_problems(doc, spec, self.root)
                report.problems += found
                report.notes += [note] if note else []
        if paths is not None and not any(p.resolve() == self.root for p in paths if p.is_dir()):
            wanted = {self.display(f) for f, _ in targets}
            report.problems = [p for p in report.problems if p.file in wanted]
            report.notes = [n for n in report.notes if n.split(":", 1)[0] in wanted]
            report.files = [f for f in report.files if f in wanted]
        return report, loaded

    def require_layout(self) -> None:
        """Refuse a folder with none of a project's parts: a wrong --project or current
        folder, which would otherwise check as "0 file(s) valid"."""
        parts = (self.root / "sources", self.root / "pipelines", self.settings_file)
        if not any(p.exists() for p in parts):
            raise ConfigError(f"{self.root} is not an h3pipe project: it has no sources/, "
                              f"pipelines/ or {PROJECT_FILE}",
                              hint="pass --project DIR or set H3PIPE_PROJECT, or create "
                              "sources/ and pipelines/ here")

    def read_settings(self) -> dict[str, Any]:
        """h3pipe.yaml alone, validated (sources and pipelines are not read); read again
        only when the file changed."""
        state = _state([self.settings_file])
        if self._settings_state == state:
            return self.settings
        report, loaded = Report(), Loaded()
        if self.settings_file.exists():
            self._check_file(self.settings_file, "project", loaded, report)
        if not report.ok:
            raise ValidationFailed(report.problems)
        self.settings, self._settings_state = loaded.settings, state
        return self.settings

    def load(self) -> tuple[dict[str, SourceSpec], dict[str, PipelineSpec], dict[str, Any]]:
        """Validated specs of every source and pipeline, and the settings; the project is
        read and checked again only when one of its files changed (or :meth:`forget`)."""
        state = _state([self.settings_file, *self.source_files(), *self.pipeline_files()])
        if self._load_state != state or self._specs is None:
            report, loaded = self._check(None, None)
            if not report.ok:
                raise ValidationFailed(report.problems)
            self._specs = ({k: v[1] for k, v in loaded.sources.items()},
                           {k: v[1] for k, v in loaded.pipelines.items()},
                           loaded.settings)
            self._load_state = state
        return self._specs

    def forget(self) -> None:
        """Read everything again on the next :meth:`load` (the store's catalog changed)."""
        self._specs, self._load_state, self._settings_state = None, None, None

    def open_store(self, *, create: bool = False) -> Store:
        """The project's store: --store, $H3PIPE_STORE, ``store:`` of h3pipe.yaml, or the
        folder ``.h3pipe``; ``create`` makes it when it does not exist yet."""
        self.read_settings()
        return storage.open_store(self.store_location(), self.root, create=create)

    def _add_catalog_sources(self, loaded: Loaded) -> None:
        """Sources registered in the store: deactivated ones are remembered so pipelines
        that need them fail; active ones without a file here become usable."""
        try:
            store = storage.open_store(self.store_location(), self.root, create=False)
        except (ConfigError, StoreError):
            return  # no store yet, or one we cannot reach: files alone decide
        with store:
            rows = registry.source_rows(store.catalog)
        for row in rows:
            sid = row["id"]
            if not row["is_active"]:
                loaded.deactivated[sid] = row["updated_at"]
                continue
            if sid in loaded.sources or sid in loaded.broken_sources:
                continue  # the project's own file is the working copy
            data = json.loads(row["document"])
            label = f"{CATALOG}{sid}@v{row['version']}"
            if _expand_tree(data, "source") or schemas.checked(Document(label, data), "source"):
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

    def _check_file(self, path: Path, kind: str, loaded: Loaded, report: Report) -> None:
        name = self.display(path)
        report.files.append(name)
        doc, problems = load_document(path, name)
        report.problems += problems
        if doc is None:
            return
        if kind in EXPANDED:
            # Values may come from the environment (a mirror, a signer, the store's
            # address): expand them first, so the schema checks what will be used.
            expanded = _expand_tree(doc.data, kind)
            report.problems += [doc.problem(path, message) for path, message in expanded]
            if expanded:
                if (kind == "source" and isinstance(doc.data, dict)
                        and isinstance(doc.data.get("id"), str)):
                    loaded.broken_sources[doc.data["id"]] = doc.file
                return
        schema_problems = schemas.checked(doc, kind)
        report.problems += schema_problems
        if kind == "project":
            if not schema_problems:
                loaded.settings = doc.data
        elif kind == "source":
            report.problems += check_source(doc, loaded, valid=not schema_problems)
        else:
            report.problems += check_pipeline(doc, loaded, valid=not schema_problems)
