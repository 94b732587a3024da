"""Where run state and results live: :class:`EmbeddedStore` (a folder: SQLite and
Parquet) or :class:`PostgresStore` (PostgreSQL with PostGIS), chosen by :func:`open_store`;
both are a :class:`Store`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from h3pipe import extras, masking
from h3pipe.errors import ConfigError
from h3pipe.storage.base import Store
from h3pipe.storage.catalog import Catalog
from h3pipe.storage.embedded import CATALOG_FILE, EmbeddedStore

if TYPE_CHECKING:
    from h3pipe.storage.postgis import PostgresStore


def is_database(location: str) -> bool:
    """A PostgreSQL URL or a libpq keyword string (``host=db dbname=h3``), not a folder."""
    return (location.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))
            or masking.is_keyword_dsn(location))


def database_url(location: str) -> str:
    """The URL of the database at ``location``: a keyword string becomes a URL whose query
    holds its keywords (psycopg hands them to libpq as they are)."""
    masking.remember(location)
    extras.require("postgres", "a PostgreSQL store")
    if not masking.is_keyword_dsn(location):
        return location
    import psycopg
    from sqlalchemy.engine import URL

    try:
        keywords = psycopg.conninfo.conninfo_to_dict(location)
    except psycopg.Error as exc:
        raise ConfigError(f"the store '{masking.shown(location)}' is not a valid libpq "
                          f"connection string: {masking.scrub(str(exc))}",
                          hint="write it as host=HOST dbname=DB user=USER, or as a "
                          "postgresql:// URL") from None
    query = {k: str(v) for k, v in keywords.items()}
    return URL.create("postgresql+psycopg", query=query).render_as_string(hide_password=False)


def open_store(location: str, base: Path, *, create: bool = True) -> Store:
    """The store at ``location``: a database URL or keyword string, or a folder (relative
    to ``base``)."""
    if is_database(location):
        # The PostgreSQL store's module (its COPY brings pyarrow.compute, 0.1 s) for a
        # database only: not for every command on the embedded store.
        from h3pipe.storage.postgis import PostgresStore

        # Steps with 'storage: parquet' keep their intermediates beside the project.
        return PostgresStore(database_url(location), create=create,
                             scratch=base / ".h3pipe")
    return EmbeddedStore(_folder(location, base), create=create)


_READERS: dict[tuple[str, Path], Store] = {}
_READERS_LOCK = threading.Lock()


def read_outputs_with(store: Store) -> None:
    """Make ``store`` the one :func:`output_reader` gives for the location '' ("this
    process's own store"): a queue worker's, whose address of the database may not be the
    address another worker planned the batch with."""
    _READERS[("", Path())] = store


def output_reader(location: str, base: Path) -> Callable[..., pa.Table]:
    """What reads task outputs of the store at ``location`` in a worker process: the
    store, opened once per process (a database's connections are the process's own);
    '' is the store this process was given (:func:`read_outputs_with`)."""
    if not location:
        own = _READERS.get(("", Path()))
        if own is None:
            raise ConfigError("this process has no store to read earlier steps' rows from")
        return own.read_outputs
    key = (location, base)
    with _READERS_LOCK:  # worker threads of one process share it: opened once
        if key not in _READERS:
            for other in [k for k in _READERS if k[0]]:
                _READERS.pop(other).close()
            _READERS[key] = open_store(location, base, create=False)
        return _READERS[key].read_outputs


def open_catalog(location: str, base: Path) -> tuple[Catalog, str]:
    """The store's catalog alone, not migrated (what 'db status' and 'db upgrade' need,
    where opening the store would refuse a database that needs migrating), and where the
    store is, as it may be shown."""
    if is_database(location):
        return Catalog(database_url(location), migrate=False), masking.shown(location)
    folder = _folder(location, base)
    return Catalog(f"sqlite:///{folder / CATALOG_FILE}", migrate=False), str(folder)


def _folder(location: str, base: Path) -> Path:
    scheme, sep, _ = location.partition("://")
    if sep and scheme[:1].isalpha() and all(c.isalnum() or c in "+.-" for c in scheme):
        # Only the scheme is shown: the rest may hold a password.
        raise ConfigError(f"the store '{scheme}://...' is not supported",
                          hint="give a folder, or a PostgreSQL database as postgresql://, "
                          "postgres:// or postgresql+psycopg://")
    root = Path(location).expanduser()
    return root if root.is_absolute() else base / root


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        # Loaded when first asked for, as in open_store.
        from h3pipe.storage.postgis import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'h3pipe.storage' has no attribute {name!r}")


__all__ = ["EmbeddedStore", "PostgresStore", "Store", "database_url", "is_database",
           "open_catalog", "open_store", "output_reader", "read_outputs_with"]
