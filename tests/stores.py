"""Both stores for one test: the ``store_backend`` fixture, parametrised over the embedded
store (a folder: SQLite and Parquet) and the PostgreSQL/PostGIS store (a fresh database,
cloned from one migrated once per session), with a way to read either's catalog without
h3pipe in between (``sqlite3`` or ``psycopg``).

PostgreSQL is skipped where it is not reachable, as in :mod:`tests.pg` (and fails under
CI=true).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pg import _admin

HOST = "127.0.0.1:5432"
BACKENDS = ["embedded", "postgresql"]


@dataclass(frozen=True)
class Backend:
    """One store a test runs against: where it is, and how to look inside it."""

    name: str  # embedded | postgresql
    location: str  # what --store takes: a folder, or a URL (with a password trust ignores)
    base: Path  # a relative folder's base, and PostgreSQL's scratch for Parquet steps

    @property
    def args(self) -> list[str]:
        """The CLI's global options that choose this store."""
        return ["--store", self.location]

    def open(self, **kwargs: Any) -> Any:
        from h3pipe.storage import open_store

        return open_store(self.location, self.base, **kwargs)

    @property
    def url(self) -> str:
        """The database's URL as psycopg takes it (no password)."""
        return self.location.replace(":s3cret-pw", "")

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the catalog (placeholders '?'; tables unqualified) and
        return its rows, committed. A catalog not made yet is an error (sqlite3's or
        psycopg's), never made here."""
        if self.name == "embedded":
            uri = (Path(self.location) / "catalog.sqlite").as_uri() + "?mode=rw"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
                rows = db.execute(statement, params).fetchall()
                db.commit()
                return rows
        import psycopg

        with psycopg.connect(self.url, autocommit=True,
                             options="-c search_path=h3pipe,public") as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="session")
def _migrated_database() -> Iterator[str]:
    """A database migrated once; each test gets a copy (CREATE DATABASE ... TEMPLATE: a
    twentieth of the time of migrating afresh)."""
    from h3pipe.storage.catalog import Catalog

    name = f"h3pipe_template_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        Catalog(f"postgresql://postgres@{HOST}/{name}").close()
        yield name
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "embedded":
        yield Backend("embedded", str(tmp_path / "store"), tmp_path)
        return
    template = request.getfixturevalue("_migrated_database")
    name = f"h3pipe_test_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield Backend("postgresql", f"postgresql://postgres:s3cret-pw@{HOST}/{name}", tmp_path)
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
