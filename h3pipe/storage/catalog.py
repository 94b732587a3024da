"""The run and source catalog, :class:`Catalog`: SQLite in WAL mode for the embedded store,
or PostgreSQL, behind one interface (transactions of statements with named parameters,
rows as dicts) and the same SQL.

SQLite goes through the standard library's ``sqlite3``; PostgreSQL through SQLAlchemy
Core (connection URLs, pooling with pre-ping, psycopg). Importing SQLAlchemy costs about
0.2 s, more than everything an embedded run asks of its catalog, so the embedded store
does not pay it. WAL lets ``h3pipe runs list`` in a second terminal read while a run
writes. Every write is its own short transaction so readers see progress as it happens.
Statements use named parameters (``:name``), which both databases understand.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from h3pipe import extras, masking
from h3pipe.errors import ConfigError, StoreError, StoreUnavailable
from h3pipe.storage import space
from h3pipe.storage.retry import transient, unit

# Package data: one folder of ordered SQL files per dialect, shipped inside the wheel.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def stamp_of(epoch_seconds: float) -> str:
    """A moment measured elsewhere (``time.time()`` in a worker) as :func:`now` writes it."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


class Tx:
    """One transaction: statements with named parameters, rows as dicts."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        from sqlalchemy import text

        return int(self._conn.execute(text(sql), params or {}).rowcount)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from sqlalchemy import text

        return [dict(r._mapping) for r in self._conn.execute(text(sql), params or {})]

    def one(self, sql: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def many(self, sql: str, rows: list[dict[str, Any]]) -> int:
        """One statement for each of ``rows`` (sent together, not a round trip each);
        the rows they touched, summed."""
        from sqlalchemy import text

        return int(self._conn.execute(text(sql), rows).rowcount)


class _SqliteTx(Tx):
    """A transaction on a ``sqlite3`` connection."""

    _conn: sqlite3.Connection

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        return int(self._conn.execute(sql, params or {}).rowcount)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        cursor = self._conn.execute(sql, params or {})
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def many(self, sql: str, rows: list[dict[str, Any]]) -> int:
        return int(self._conn.executemany(sql, rows).rowcount)


class _Sqlite:
    """Connections to one SQLite file, kept for reuse (the heartbeat thread writes too,
    so a connection is used by one transaction at a time, from any thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _take(self, write: bool) -> tuple[sqlite3.Connection, bool]:
        """A connection, and whether it may go back to the pool. On a full disk SQLite
        cannot size its shared-memory file to open the database at all: a reader then
        gets a read-only one that needs no file of its own (:meth:`_frozen`)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        try:
            return self._connect(), True
        except sqlite3.Error as exc:
            if write or not self._frozen_ok(exc):
                raise
            return self._frozen(), False

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions begin where we say, as BEGIN IMMEDIATE for writes.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        try:
            _sqlite_connect(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _frozen_ok(self, exc: sqlite3.Error) -> bool:
        """Whether a reader may open the file as it is on disk: the disk is full (so no
        writer gets far either) and the WAL holds nothing the file lacks."""
        wal = self.path.with_name(self.path.name + "-wal")
        return space.is_full(exc, self.path.parent) and (
            not wal.exists() or wal.stat().st_size == 0)

    def _frozen(self) -> sqlite3.Connection:
        """The database opened read-only and immutable: no lock, journal or shared-memory
        file is created, nothing is written."""
        uri = self.path.resolve().as_uri() + "?mode=ro&immutable=1"
        return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None,
                               check_same_thread=False)

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._idle.append(conn)

    @contextmanager
    def transaction(self, *, write: bool, foreign_keys: bool = True) -> Iterator[_SqliteTx]:
        """One transaction; a writer takes the write lock at BEGIN, so two writers queue
        rather than deadlock (readers never wait for a writer in WAL mode). Without
        ``foreign_keys`` the constraint checks are off for it (a pragma that only works
        outside a transaction)."""
        conn, pooled = self._take(write)
        reusable = False
        try:
            if not foreign_keys:
                conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteTx(conn)
            except Exception:
                # A full disk may have ended the transaction already: then the connection
                # is closed, and the error that matters is the first one.
                reusable = _rolled_back(conn) and foreign_keys and pooled
                raise
            conn.execute("COMMIT")
            reusable = foreign_keys and pooled
        finally:
            if reusable:
                self._give_back(conn)
            else:  # interrupted, broken, or with its pragmas changed: not for reuse
                conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Catalog:
    """Runs, steps, tasks, items, results and sources, in SQLite or PostgreSQL."""

    def __init__(self, url: str, *, create: bool = True, migrate: bool = True) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        if self.dialect == "sqlite":
            path = Path(url.split("///", 1)[1])
            if not create and not path.exists():
                raise ConfigError(f"no h3pipe store at {path.parent}",
                                  hint="run a pipeline first, or pass --project")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # the store setting points somewhere impossible
                raise ConfigError(f"cannot create the store folder {path.parent}: {exc}",
                                  hint="check 'store:' in h3pipe.yaml, --store or "
                                  "H3PIPE_STORE") from exc
            self.where = str(path)
            self._sqlite: _Sqlite | None = _Sqlite(path)
            errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        else:
            extras.require("postgres", "a PostgreSQL store")
            from sqlalchemy import create_engine, event
            from sqlalchemy.exc import SQLAlchemyError

            self._sqlite = None
            self.engine = create_engine(_psycopg(url))
            event.listen(self.engine, "connect", _pg_connect)
            event.listen(self.engine, "checkin", _pg_checkin)
            event.listen(self.engine, "checkout", _pg_checkout)
            self.where = masking.shown(masking.remember(url))
            errors = (SQLAlchemyError,)
        try:
            mark = None
            if self._sqlite is not None:
                with self._sqlite.transaction(write=False) as tx:
                    mark = (self.where, tx.rows("PRAGMA schema_version")[0]["schema_version"])
            else:
                with self.engine.connect():
                    pass
            if migrate and mark not in _CURRENT:
                self.migrate()
                self._remember_current()
        except errors as exc:
            if isinstance(exc, sqlite3.Error):
                self._full(exc)
            if transient(exc):  # no server there (now): the same command works once it is
                raise StoreUnavailable(f"cannot reach the database store at {self.where}: "
                                       f"{_reason(exc)}", where=self.where,
                                       hint="check the store setting and that the database "
                                       "is up") from exc
            raise StoreError(f"cannot open the catalog at {self.where}: {_reason(exc)}",
                             hint="check the store setting and that the database is up"
                             ) from exc

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        else:
            self.engine.dispose()

    def lost(self) -> None:
        """After a connection fault: the pool's connections are all suspect (a restarted
        server ended them all), so the next transaction opens a new one."""
        if self._sqlite is None:
            self.engine.dispose()

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Tx]:
        if self._sqlite is not None:
            try:
                with self._sqlite.transaction(write=not readonly) as tx:
                    yield tx
            except sqlite3.Error as exc:
                self._full(exc)
                raise StoreError(f"catalog {self.where}: {_reason(exc)}") from exc
            return
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                with conn.begin():
                    yield Tx(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"catalog {self.where}: {_reason(exc)}") from exc

    # -- migrations ---------------------------------------------------------------------------

    def _remember_current(self) -> None:
        """A SQLite file whose schema is at this version and fully migrated needs no check
        at its next opening in this process (a server opens one per request): its schema
        version changes with any change to its schema, a new file's starts at 0."""
        if self._sqlite is None:
            return
        with self._sqlite.transaction(write=False) as tx:
            _CURRENT.add((self.where, tx.rows("PRAGMA schema_version")[0]["schema_version"]))

    def _real_migrations(self) -> tuple[Path, ...]:
        return real_migrations(self.dialect)

    @unit
    def applied(self) -> list[str]:
        if self._sqlite is not None:
            if not self.query("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'schema_migrations'"):
                return []
        else:
            from sqlalchemy import inspect

            if not inspect(self.engine).has_table("schema_migrations", schema="h3pipe"):
                return []
        recorded = {_named(r["version"]) for r in
                    self.query("SELECT version FROM schema_migrations")}
        return [f.stem for f in self._real_migrations() if _named(f.stem) in recorded]

    def pending(self) -> list[str]:
        done = set(self.applied())
        return [f.stem for f in self._real_migrations() if f.stem not in done]

    @unit
    def migrate(self) -> list[str]:
        """Apply pending migrations in order, each in its own transaction; return them."""
        done = set(self.applied())
        if all(f.stem in done for f in self._real_migrations()):
            return []
        with self.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                       "(version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        if self.dialect == "postgresql" and "0001_initial" not in done:
            self._ensure_postgis()
        applied = []
        for sql_file in self._real_migrations():
            if sql_file.stem in done:
                continue
            with self._migration_transaction() as tx:
                # Another process may be migrating too: decide under the write lock.
                if self.dialect == "postgresql":
                    tx.execute("SELECT pg_advisory_xact_lock(4242424242)")
                if _named(sql_file.stem) in {_named(r["version"]) for r in tx.rows(
                        "SELECT version FROM schema_migrations")}:
                    continue
                for statement in _statements(sql_file.read_text()):
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_migrations VALUES (:v, :t)",
                           {"v": sql_file.stem, "t": now()})
                if self.dialect == "sqlite":
                    broken = tx.rows("PRAGMA foreign_key_check")
                    if broken:
                        raise StoreError(f"migration {sql_file.stem} would break "
                                         f"{len(broken)} reference(s), first {broken[0]}")
            applied.append(sql_file.stem)
        return applied

    def _ensure_postgis(self) -> None:
        """PostGIS, which the first migration needs: left alone when there, created when
        this role may; else what a database administrator must run, said in one line."""
        with self.transaction(readonly=True) as tx:
            if tx.one("SELECT 1 AS found FROM pg_extension WHERE extname = 'postgis'"):
                return
        try:
            with self.transaction() as tx:
                tx.execute("CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public")
        except StoreError as exc:
            if getattr(getattr(exc.__cause__, "orig", None), "sqlstate", None) != "42501":
                raise
            db = self.engine.url.database
            raise ConfigError(f"the database store at {self.where} has no PostGIS, and user "
                              f"'{self.engine.url.username}' may not add it",
                              hint=f"ask a database administrator to run 'CREATE EXTENSION "
                              f"postgis;' in database {db} (psql -d {db}), then 'h3pipe db "
                              "upgrade' again") from None

    @contextmanager
    def _migration_transaction(self) -> Iterator[Tx]:
        """A write transaction; on SQLite with foreign keys off, as rebuilding a table (the
        only way to change a constraint there) needs, and as that pragma allows only
        outside a transaction."""
        if self._sqlite is None:
            with self.transaction() as tx:
                yield tx
            return
        try:
            with self._sqlite.transaction(write=True, foreign_keys=False) as tx:
                yield tx
        except sqlite3.Error as exc:
            self._full(exc)
            raise StoreError(f"catalog {self.where}: {_reason(exc)}") from exc

    def _full(self, exc: sqlite3.Error) -> None:
        """Raise :class:`~h3pipe.errors.StoreFull` when ``exc`` says the store's disk is
        full (SQLite rolled the transaction back: the catalog is as it was)."""
        assert self._sqlite is not None
        if space.is_full(exc, self._sqlite.path.parent):
            raise space.no_space(self._sqlite.path.parent) from exc

    # -- rows -----------------------------------------------------------------------------------

    def insert(self, table: str, **values: Any) -> None:
        self.insert_many(table, [values])

    @unit
    def insert_many(self, table: str, rows: list[dict[str, Any]], *,
                    keep_existing: bool = False) -> None:
        """Insert rows; with ``keep_existing``, rows whose key is already there are skipped."""
        if not rows:
            return
        cols = list(rows[0])
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) "
               f"VALUES ({', '.join(':' + c for c in cols)})"
               + (" ON CONFLICT DO NOTHING" if keep_existing else ""))
        with self.transaction() as tx:
            tx.many(sql, rows)

    @unit
    def update(self, table: str, key: dict[str, Any], **values: Any) -> None:
        sets = ", ".join(f"{k} = :v_{k}" for k in values)
        where = " AND ".join(f"{k} = :k_{k}" for k in key)
        params = {f"v_{k}": v for k, v in values.items()} | {f"k_{k}": v for k, v in key.items()}
        with self.transaction() as tx:
            count = tx.execute(f"UPDATE {table} SET {sets} WHERE {where}", params)
        if count != 1:
            # A state change that touches no row is a bug, never something to shrug off.
            raise StoreError(f"catalog: expected to update one {table} row for {key}, "
                             f"updated {count}")

    def event(self, run_id: str, kind: str, subject: str, status: str,
              detail: str | None = None) -> None:
        """Record one state change (the timeline 'runs show' draws)."""
        self.insert("events", run_id=run_id, at=now(), kind=kind, subject=subject,
                    status=status, detail=detail)

    @unit
    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.transaction(readonly=True) as tx:
            return tx.rows(sql, params)

    @unit
    def result_entries(self, dataset: str | None = None, resolution: int | None = None,
                       scope_key: str | None = None) -> list[dict[str, Any]]:
        """The published results, filtered by whichever of the three are given."""
        sql, params = "SELECT * FROM results WHERE 1 = 1", {}
        for col, val in (("dataset", dataset), ("resolution", resolution),
                         ("scope_key", scope_key)):
            if val is not None:
                sql += f" AND {col} = :{col}"
                params[col] = val
        return self.query(sql + " ORDER BY dataset, resolution, scope_key", params)

    @unit
    def publish_result(self, *, dataset: str, resolution: int, scope_key: str, scope_label: str,
                       theme: str, run_id: str, path: str, columns: list[str], rows: int,
                       layout: dict[str, Any] | None = None, tx: Tx | None = None
                       ) -> str | None:
        """Point (dataset, resolution, scope) at a new result; return the one it replaced."""
        if tx is None:
            with self.transaction() as own:
                return self.publish_result(dataset=dataset, resolution=resolution,
                                           scope_key=scope_key, scope_label=scope_label,
                                           theme=theme, run_id=run_id, path=path,
                                           columns=columns, rows=rows, layout=layout,
                                           tx=own)
        key = {"d": dataset, "r": resolution, "s": scope_key}
        old = tx.one("SELECT path FROM results WHERE dataset = :d AND resolution = :r "
                     "AND scope_key = :s", key)
        tx.execute(
            "INSERT INTO results (dataset, resolution, scope_key, scope_label, theme, run_id, "
            "path, columns, rows, updated_at, layout) VALUES (:d, :r, :s, :label, :theme, :run, "
            ":path, :cols, :rows, :at, :layout) ON CONFLICT (dataset, resolution, scope_key) DO "
            "UPDATE SET scope_label = excluded.scope_label, theme = excluded.theme, "
            "run_id = excluded.run_id, path = excluded.path, columns = excluded.columns, "
            "rows = excluded.rows, updated_at = excluded.updated_at, layout = excluded.layout",
            key | {"label": scope_label, "theme": theme, "run": run_id, "path": path,
                   "cols": json.dumps(columns), "rows": rows, "at": now(),
                   "layout": json.dumps(layout or {})})
        return old["path"] if old and old["path"] != path else None


def result_keys(entries: list[dict[str, Any]]) -> list[str]:
    """The key columns (besides h3_index) that rows of several results carry: a sweep's
    scenario and dimensions."""
    keys: list[str] = []
    for e in entries:
        keys += [k for k in json.loads(e.get("layout") or "{}").get("keys", []) if k not in keys]
    return keys


def result_columns(entries: list[dict[str, Any]]) -> list[str]:
    """The statistic columns of several published results, in first-seen order."""
    columns: list[str] = []
    for e in entries:
        columns += [c for c in json.loads(e["columns"]) if c not in columns]
    return columns


# SQLITE_BUSY and SQLITE_LOCKED, the primary codes of another connection's lock.
_SQLITE_BUSY = (5, 6)


def _rolled_back(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        return False
    return True


def _sqlite_connect(conn: sqlite3.Connection) -> None:
    import time

    cur = conn.cursor()
    # Switching a new database to WAL needs it to ourselves, and SQLite does not wait for
    # that: two runs started together on a fresh store must take turns here.
    for attempt in range(200):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            # Only the lock is worth waiting for; an I/O error (a full disk) stays one.
            if attempt == 199 or exc.sqlite_errorcode & 0xFF not in _SQLITE_BUSY:
                raise
            time.sleep(0.05)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _pg_connect(dbapi_conn: Any, record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("CREATE SCHEMA IF NOT EXISTS h3pipe")
    cur.execute("SET search_path TO h3pipe, public")
    # A run commits a few short transactions per task; waiting for each to reach the disk
    # cost more than the task's own rows. As with SQLite's synchronous=NORMAL in WAL mode,
    # a crash of the server (not of h3pipe) may lose the last commits, never their order,
    # and a resume redoes what they recorded. A publication waits (PostgresStore.publish).
    cur.execute("SET synchronous_commit TO off")
    cur.close()
    dbapi_conn.commit()
    record.info["idle_since"] = time.monotonic()


# A connection back in the pool this long is pinged before it is used again (the server
# may have restarted, or a firewall dropped it); one in steady use is not: a ping per
# checkout was a round trip per catalog statement.
_PING_AFTER = 5.0


def _pg_checkin(dbapi_conn: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _pg_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    from sqlalchemy.exc import DisconnectionError

    if time.monotonic() - record.info.get("idle_since", 0.0) < _PING_AFTER:
        return
    try:
        dbapi_conn.execute("SELECT 1")
        dbapi_conn.rollback()
    except Exception as exc:  # the pool replaces the connection and tries again
        raise DisconnectionError(str(exc)) from exc


def _psycopg(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    # A driver's message may quote the connection string it was given.
    return masking.scrub(" ".join(str(orig or exc).split()))[:300]


_CURRENT: set[tuple[str, int]] = set()  # (SQLite file, schema version) fully migrated


@cache
def real_migrations(dialect: str) -> tuple[Path, ...]:
    """The migrations that change ``dialect``: a number names the same change in both
    dialects, so one that the other dialect's schema already has is a file of comments,
    never pending. Package data, read once a process: every opening of a store asks (a
    server opens one per request)."""
    files = sorted(MIGRATIONS_DIR.joinpath(dialect).glob("*.sql"))
    return tuple(f for f in files if _statements(f.read_text()))


def _named(version: str) -> str:
    """A migration by its name without its number ('0010_queue': 'queue'): how a version
    recorded before the dialects were numbered alike is known by its file today."""
    return version.split("_", 1)[-1]


def _statements(sql: str) -> list[str]:
    """A migration's statements; a ``$$``-quoted body (a ``DO`` block) stays whole."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    out, current = [], ""
    for i, piece in enumerate("\n".join(lines).split("$$")):
        if i % 2:  # inside $$ ... $$
            current += "$$" + piece + "$$"
            continue
        first, *rest = piece.split(";")
        if rest:
            out.append(current + first)
            *done, current = rest
            out += done
        else:
            current += first
    out.append(current)
    return [s.strip() for s in out if s.strip()]
