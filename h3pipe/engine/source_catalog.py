"""The source catalog kept in the store: register, list, show, deactivate
(:func:`register_sources`, :func:`list_sources`, :func:`show_source`, :func:`deactivate`).

A registered source is usable by every pipeline of the project even without its file;
registering again records a new version when the file changed; deactivating is a soft
delete: the history stays, and pipelines that need the source fail validation.
Documents are stored as written, ${VAR} unexpanded, so a site's environment still decides
where a registered source points.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from h3pipe.config.project import Project, suggest
from h3pipe.config.yamlio import load_document
from h3pipe.engine.runner import open_store
from h3pipe.errors import ConfigError, ValidationFailed
from h3pipe.storage.catalog import now


def register_sources(project: Project, files: list[Path]) -> list[dict[str, Any]]:
    """Validate ``files`` as sources, then insert or update each; one transaction each."""
    for f in files:
        if not f.exists():
            raise ConfigError(f"no such file: {f}")
    report = project.check(files, as_kind="source")
    if not report.ok:
        raise ValidationFailed(report.problems)
    store = open_store(project, project.read_settings())
    out = []
    try:
        for f in files:
            doc, _ = load_document(f, project.display(f))
            assert doc is not None  # validated above
            data = doc.data
            text = json.dumps(data, sort_keys=True, default=str)
            sha = hashlib.sha256(text.encode()).hexdigest()
            with store.catalog.transaction() as db:
                row = db.one("SELECT version, sha256, is_active FROM sources WHERE id = :id",
                             {"id": data["id"]})
                if row and row["sha256"] == sha and row["is_active"]:
                    out.append({"id": data["id"], "version": row["version"],
                                "action": "unchanged"})
                    continue
                version = (row["version"] + 1) if row else 1
                stamp = now()
                location = data.get("path") or (
                    f"{data['stac']['url']}#collection={data['stac']['collection']}")
                db.execute(
                    "INSERT INTO sources (id, version, kind, theme, title, location, is_active,"
                    " document, file, sha256, created_at, updated_at) VALUES "
                    "(:id, :v, :kind, :theme, :title, :loc, 1, :doc, :file, :sha, :at, :at) "
                    "ON CONFLICT (id) DO UPDATE SET "
                    "version = excluded.version, kind = excluded.kind, theme = excluded.theme,"
                    " title = excluded.title, location = excluded.location, is_active = 1, "
                    "document = excluded.document, file = excluded.file, "
                    "sha256 = excluded.sha256, updated_at = excluded.updated_at",
                    {"id": data["id"], "v": version, "kind": data["kind"],
                     "theme": data["theme"], "title": data.get("title"), "loc": location,
                     "doc": text, "file": doc.file, "sha": sha, "at": stamp})
                db.execute("INSERT INTO source_versions VALUES (:id, :v, :doc, :file, :sha, "
                           "'register', :at)", {"id": data["id"], "v": version, "doc": text,
                                                "file": doc.file, "sha": sha, "at": stamp})
            out.append({"id": data["id"], "version": version,
                        "action": "updated" if row else "added"})
    finally:
        store.close()
    return out


def catalog_rows(project: Project, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every catalog row, or none when the project has no store yet."""
    try:
        store = open_store(project, settings, create=False)
    except ConfigError:
        return []
    try:
        return store.catalog.query("SELECT * FROM sources ORDER BY id")
    finally:
        store.close()


def list_sources(project: Project, *, theme: str | None = None,
                 include_inactive: bool = False) -> list[dict[str, Any]]:
    rows = catalog_rows(project, project.read_settings())
    return [r for r in rows if (include_inactive or r["is_active"])
            and (theme is None or r["theme"] == theme)]


def show_source(project: Project, source_id: str) -> dict[str, Any]:
    settings = project.read_settings()
    rows = {r["id"]: r for r in catalog_rows(project, settings)}
    if source_id not in rows:
        raise ConfigError(f"no source '{source_id}' in the catalog" + suggest(source_id,
                          list(rows)), hint="register it with 'h3pipe sources register FILE'")
    row = dict(rows[source_id])
    row["document"] = json.loads(row["document"])
    store = open_store(project, settings, create=False)
    try:
        row["versions"] = store.catalog.query(
            "SELECT version, action, file, sha256, recorded_at FROM source_versions "
            "WHERE id = :id ORDER BY version", {"id": source_id})
    finally:
        store.close()
    return row


def deactivate(project: Project, source_id: str) -> int:
    """Soft-delete ``source_id``; return the new version number."""
    settings = project.read_settings()
    store = open_store(project, settings)
    try:
        with store.catalog.transaction() as db:
            row = db.one("SELECT * FROM sources WHERE id = :id", {"id": source_id})
            if row is None:
                known = [r["id"] for r in db.rows("SELECT id FROM sources")]
                raise ConfigError(f"no source '{source_id}' in the catalog"
                                  + suggest(source_id, known))
            if not row["is_active"]:
                return int(row["version"])
            version = row["version"] + 1
            stamp = now()
            db.execute("UPDATE sources SET is_active = 0, version = :v, updated_at = :at "
                       "WHERE id = :id", {"v": version, "at": stamp, "id": source_id})
            db.execute("INSERT INTO source_versions VALUES (:id, :v, :doc, :file, :sha, "
                       "'deactivate', :at)", {"id": source_id, "v": version,
                                              "doc": row["document"], "file": row["file"],
                                              "sha": row["sha256"], "at": stamp})
        return int(version)
    finally:
        store.close()
