"""The source catalog kept in the store: register, list, show, deactivate
(:func:`register_sources`, :func:`list_sources`, :func:`show_source`, :func:`deactivate`).

A registered source is usable by every pipeline of the project even without its file;
registering again records a new version when the file changed; deactivating is a soft
delete: the history stays, and pipelines that need the source fail validation.
Documents are stored as written, ${VAR} unexpanded, so a site's environment still decides
where a registered source points. The tables are :mod:`h3pipe.storage.registry`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

from h3pipe import masking
from h3pipe.config.project import ProjectConfig, suggest
from h3pipe.config.yamlio import load_document
from h3pipe.errors import ConfigError, NotFound, ValidationFailed
from h3pipe.storage import open_store, registry
from h3pipe.storage.records import Row


def register_sources(project: ProjectConfig, files: list[Path], *,
                     recorded_as: str | None = None) -> list[Row]:
    """Validate ``files`` as sources, then insert or update each; one transaction each.
    ``recorded_as`` replaces the file's name in the catalog (a temporary file's is
    meaningless there)."""
    for f in files:
        if not f.exists():
            raise ConfigError(f"no such file: {f}")
    report = project.check(files, as_kind="source")
    if not report.ok:
        raise ValidationFailed(report.problems)
    records = [_record(project, f, recorded_as) for f in files]
    out = []
    with project.open_store(create=True) as store:
        for rec in records:
            version, action = registry.register(store.catalog, rec)
            out.append({"id": rec.id, "version": version, "action": action})
    return out


def _record(project: ProjectConfig, file: Path, recorded_as: str | None
            ) -> registry.SourceRecord:
    doc, _ = load_document(file, project.display(file))
    assert doc is not None  # validated by the caller
    data = doc.data
    location = data.get("path") or (
        f"{data['stac']['url']}#collection={data['stac']['collection']}")
    return registry.SourceRecord(
        id=data["id"], kind=data["kind"], theme=data["theme"], title=data.get("title"),
        location=masking.shown(location),  # the document keeps ${VAR} unexpanded
        document=json.dumps(data, sort_keys=True, default=str),
        file=recorded_as or doc.file)


def catalog_rows(project: ProjectConfig) -> list[Row]:
    """Every catalog row, or none when the project has no store yet."""
    project.read_settings()  # outside the try: a broken h3pipe.yaml is not 'no store'
    try:
        store = open_store(project.store_location(), project.root, create=False)
    except ConfigError:
        return []
    with store:
        return registry.source_rows(store.catalog)


def list_sources(project: ProjectConfig, *, theme: str | None = None,
                 include_inactive: bool = False) -> list[Row]:
    rows = catalog_rows(project)
    return [r for r in rows if (include_inactive or r["is_active"])
            and (theme is None or r["theme"] == theme)]


def show_source(project: ProjectConfig, source_id: str) -> Row:
    """The source's current row, its document parsed, and ``versions``: its history."""
    rows = {r["id"]: r for r in catalog_rows(project)}  # no store yet: no such source
    if source_id not in rows:
        raise NotFound(f"no source '{source_id}' in the catalog"
                       + suggest(source_id, list(rows)),
                       hint="register it with 'h3pipe sources register FILE'")
    with project.open_store() as store:
        versions = registry.source_versions(store.catalog, source_id)
    row = rows[source_id]
    return row | {"document": json.loads(row["document"]), "versions": versions}


def deactivate(project: ProjectConfig, source_id: str) -> int:
    """Soft-delete ``source_id``; return the new version number."""
    with project.open_store(create=True) as store:
        version = registry.deactivate(store.catalog, source_id)
        if version is None:
            known = [r["id"] for r in registry.source_rows(store.catalog)]
            raise NotFound(f"no source '{source_id}' in the catalog"
                           + suggest(source_id, known))
    return version
