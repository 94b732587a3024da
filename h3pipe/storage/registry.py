"""The source catalog's tables: :func:`source_rows`, :func:`source_versions`,
:func:`register` (a :class:`SourceRecord`) and :func:`deactivate`.

A source row holds its current version; ``source_versions`` keeps every version ever
recorded, so deactivating is a soft delete and the history survives. Each write is one
transaction: the version is read and bumped under the same write lock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from h3pipe.storage.catalog import Catalog, now
from h3pipe.storage.records import Row


@dataclass(frozen=True)
class SourceRecord:
    """One source document as it is registered (``document`` is its canonical JSON)."""

    id: str
    kind: str
    theme: str
    title: str | None
    location: str  # what people read in 'sources list': a path or a STAC collection
    document: str
    file: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.document.encode()).hexdigest()


def source_rows(catalog: Catalog) -> list[Row]:
    """Every registered source, active or not, by id."""
    return catalog.query("SELECT * FROM sources ORDER BY id")


def source_versions(catalog: Catalog, source_id: str) -> list[Row]:
    return catalog.query("SELECT version, action, file, sha256, recorded_at FROM "
                         "source_versions WHERE id = :id ORDER BY version", {"id": source_id})


def register(catalog: Catalog, source: SourceRecord) -> tuple[int, str]:
    """Insert or update ``source``; return (its version, 'added' | 'updated' | 'unchanged')."""
    sha = source.sha256
    with catalog.transaction() as tx:
        row = tx.one("SELECT version, sha256, is_active FROM sources WHERE id = :id",
                     {"id": source.id})
        if row and row["sha256"] == sha and row["is_active"]:
            return int(row["version"]), "unchanged"
        version, stamp = (int(row["version"]) + 1) if row else 1, now()
        tx.execute(
            "INSERT INTO sources (id, version, kind, theme, title, location, is_active,"
            " document, file, sha256, created_at, updated_at) VALUES "
            "(:id, :v, :kind, :theme, :title, :loc, 1, :doc, :file, :sha, :at, :at) "
            "ON CONFLICT (id) DO UPDATE SET "
            "version = excluded.version, kind = excluded.kind, theme = excluded.theme,"
            " title = excluded.title, location = excluded.location, is_active = 1, "
            "document = excluded.document, file = excluded.file, "
            "sha256 = excluded.sha256, updated_at = excluded.updated_at",
            {"id": source.id, "v": version, "kind": source.kind, "theme": source.theme,
             "title": source.title, "loc": source.location, "doc": source.document,
             "file": source.file, "sha": sha, "at": stamp})
        tx.execute("INSERT INTO source_versions VALUES (:id, :v, :doc, :file, :sha, "
                   "'register', :at)", {"id": source.id, "v": version,
                                        "doc": source.document, "file": source.file,
                                        "sha": sha, "at": stamp})
    return version, "updated" if row else "added"


def deactivate(catalog: Catalog, source_id: str) -> int | None:
    """Soft-delete ``source_id``; return its version now (unchanged if it was inactive
    already), or None when no such source is registered."""
    with catalog.transaction() as tx:
        row = tx.one("SELECT * FROM sources WHERE id = :id", {"id": source_id})
        if row is None:
            return None
        if not row["is_active"]:
            return int(row["version"])
        version, stamp = int(row["version"]) + 1, now()
        tx.execute("UPDATE sources SET is_active = 0, version = :v, updated_at = :at "
                   "WHERE id = :id", {"v": version, "at": stamp, "id": source_id})
        tx.execute("INSERT INTO source_versions VALUES (:id, :v, :doc, :file, :sha, "
                   "'deactivate', :at)", {"id": source_id, "v": version,
                                          "doc": row["document"], "file": row["file"],
                                          "sha": row["sha256"], "at": stamp})
    return version


__all__ = ["SourceRecord", "deactivate", "register", "source_rows", "source_versions"]
