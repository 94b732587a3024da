"""Where run state and results live: :class:`EmbeddedStore` (a folder: SQLite and
Parquet) or :class:`PostgresStore` (PostgreSQL with PostGIS), chosen by :func:`open_store`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from h3pipe.storage.embedded import EmbeddedStore


def is_database(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))


def open_store(location: str, base: Path, *, create: bool = True) -> Any:
    """The store at ``location``: a database URL, or a folder (relative to ``base``)."""
    if is_database(location):
        from h3pipe.storage.postgis import PostgresStore

        # Steps with 'storage: parquet' keep their intermediates beside the project.
        return PostgresStore(location, create=create, scratch=base / ".h3pipe")
    root = Path(location).expanduser()
    return EmbeddedStore(root if root.is_absolute() else base / root, create=create)


__all__ = ["EmbeddedStore", "is_database", "open_store"]
