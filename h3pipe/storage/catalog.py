"""The embedded store's run catalog, :class:`Catalog`: one SQLite file in WAL mode.

WAL lets ``h3pipe runs list`` in a second terminal read while a run writes. Every write
is its own short transaction so readers see progress as it happens.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from h3pipe.errors import ConfigError, StoreError
from h3pipe.resources import data_dir


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Catalog:
    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise ConfigError(f"no h3pipe store at {path.parent}",
                             hint="run a pipeline first, or pass --project")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run catalog {path}: {exc}",
                             hint="check the folder is writable") from exc
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {path.parent}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"run catalog {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {r[0] for r in self._db.execute("SELECT version FROM schema_migrations")}
        for sql_file in sorted(data_dir("migrations").joinpath("sqlite").glob("*.sql")):
            version = sql_file.stem
            if version in done:
                continue
            with self.transaction() as db:
                # executescript would commit on its own; run statement by statement instead.
                for statement in _statements(sql_file.read_text()):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, now()))

    # -- runs -----------------------------------------------------------------------------

    def insert(self, table: str, **values: Any) -> None:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.transaction() as db:
            db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values.values()))

    def insert_many(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = list(rows[0])
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        with self.transaction() as db:
            db.executemany(sql, [tuple(r[c] for c in cols) for r in rows])

    def update(self, table: str, key: dict[str, Any], **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        where = " AND ".join(f"{k} = ?" for k in key)
        with self.transaction() as db:
            cur = db.execute(f"UPDATE {table} SET {sets} WHERE {where}",
                             tuple(values.values()) + tuple(key.values()))
            if cur.rowcount != 1:
                # A state change that touches no row is a bug, never something to shrug off.
                raise StoreError(f"run catalog: expected to update one {table} row for {key}, "
                                 f"updated {cur.rowcount}")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            return [dict(r) for r in self._db.execute(sql, params)]
        except sqlite3.Error as exc:
            raise StoreError(f"run catalog {self.path}: {exc}") from exc

    def publish_result(self, *, dataset: str, resolution: int, scope_key: str, scope_label: str,
                       theme: str, run_id: str, path: str, columns: list[str], rows: int
                       ) -> str | None:
        """Point (dataset, resolution, scope) at a new file; return the file it replaced."""
        with self.transaction() as db:
            old = db.execute("SELECT path FROM results WHERE dataset = ? AND resolution = ? "
                             "AND scope_key = ?", (dataset, resolution, scope_key)).fetchone()
            db.execute(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (dataset, resolution, scope_key) DO UPDATE SET "
                "scope_label = excluded.scope_label, theme = excluded.theme, "
                "run_id = excluded.run_id, path = excluded.path, columns = excluded.columns, "
                "rows = excluded.rows, updated_at = excluded.updated_at",
                (dataset, resolution, scope_key, scope_label, theme, run_id, path,
                 json.dumps(columns), rows, now()),
            )
        return old["path"] if old and old["path"] != path else None


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
