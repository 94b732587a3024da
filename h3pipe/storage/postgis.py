"""The PostgreSQL/PostGIS store, :class:`PostgresStore`: the catalog in schema ``h3pipe``,
statistics in schema ``h3`` (a wide table per dataset, ``stats_<theme>__<dataset>``, and
a long view per theme, ``stats_<theme>``), cell outlines in ``h3.cells``, and each run's
task outputs as UNLOGGED tables in ``h3_temp``.

Publishing a scope deletes its old rows and inserts the new ones in one transaction, so a
reader sees the old scope or the new one, never a mix. Task outputs arrive by binary COPY
in one transaction per task; a retried task replaces only its own rows. Rows move in bulk
(:mod:`h3pipe.storage.pgcopy`), never a Python call per row.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from h3pipe import faults, masking
from h3pipe.errors import ConfigError, StoreError
from h3pipe.storage import pgcopy
from h3pipe.storage.base import CatalogStore
from h3pipe.storage.catalog import Catalog, Tx, result_columns, result_keys
from h3pipe.storage.embedded import output_gone, read_parquet, write_parquet
from h3pipe.storage.retry import retried

_FILE = "file:"  # a reference to Parquet files rather than a table
_PG_TYPES = {pa.float64(): "double precision", pa.float32(): "double precision",
             pa.int64(): "bigint", pa.int32(): "bigint", pa.int16(): "bigint",
             pa.int8(): "bigint", pa.uint8(): "bigint", pa.uint16(): "bigint",
             pa.uint32(): "bigint", pa.string(): "text", pa.large_string(): "text",
             pa.binary(): "bytea", pa.large_binary(): "bytea", pa.bool_(): "boolean",
             pa.null(): "text"}
_KEYS = {"resolution", "scope_key", "h3_index", "run_id", "task_no", "row_no"}
_NUMERIC = {"double precision", "bigint", "integer", "smallint", "real"}
_CELL_CHUNK = 50_000  # cells whose outlines are built at once
_EMPTY = -1  # the row_no of the row that marks a task output without rows


def _pg_type(t: pa.DataType) -> str:
    if t in _PG_TYPES:
        return _PG_TYPES[t]
    raise StoreError(f"cannot keep a column of type {t} in PostgreSQL",
                     hint="cast it in a transform step first")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _short(name: str, limit: int = 60) -> str:
    """PostgreSQL cuts identifiers at 63 bytes: keep names unique when they are long."""
    if len(name) <= limit:
        return name
    return name[: limit - 9] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]


def stats_table(theme: str, dataset: str) -> str:
    """The name (unquoted) of a dataset's wide table in schema ``h3``."""
    return _short(f"stats_{theme}__{dataset}")


@retried
class PostgresStore(CatalogStore):
    def __init__(self, url: str, *, create: bool = True, scratch: Path | None = None) -> None:
        self.url = url
        self.scratch = scratch or Path(".h3pipe")
        self.location = masking.shown(url)
        self.catalog = Catalog(url, migrate=False)
        pending = self.catalog.pending()
        if pending:
            self.catalog.close()
            raise ConfigError(f"the PostgreSQL store at {self.location} needs "
                              f"{len(pending)} migration(s) ({', '.join(pending)})",
                              hint="run 'h3pipe db upgrade' (with the same --store)")
        # Task output tables made (or found) by this store -> the tasks it wrote there since
        # it made it (None: found there, made by another store).
        self._made: dict[str, set[int] | None] = {}


    # -- task outputs ----------------------------------------------------------------------

    def _temp_table(self, run_id: str, step_id: str) -> str:
        return "h3_temp." + _ident(_short(f"{run_id}__{step_id}"))

    def _scratch_dir(self, run_id: str, step_id: str) -> Path:
        return self.scratch / "runs" / run_id / step_id

    def write_task_output(self, run_id: str, step_id: str, number: int, table: pa.Table,
                          storage: str = "table") -> str:
        ref = self.commit_task_output(run_id, step_id, number, table, storage)
        assert ref is not None  # nothing to record, so nothing can refuse it
        return ref

    def commit_task_output(self, run_id: str, step_id: str, number: int, table: pa.Table,
                           storage: str = "table",
                           record: Callable[[Tx, str], bool] | None = None) -> str | None:
        """Write one task's rows and, in the same transaction, ``record`` them (a queue
        worker marks its task completed); when ``record`` says no (another delivery of
        the task completed it first) nothing is kept and None is returned."""
        if storage == "parquet":
            path = self._scratch_dir(run_id, step_id) / f"task-{number:06d}.parquet"
            write_parquet(table, path)  # the same rows for every delivery: safe to replace
            ref = _FILE + str(path)
            if record is not None:
                with self.catalog.transaction() as tx:
                    if not record(tx, ref):
                        return None
            return ref
        name = self._temp_table(run_id, step_id)
        ref = f"{name}#{number}"
        try:
            try:
                return self._commit_copy(name, ref, number, table, run_id, record)
            except Exception as exc:
                if name not in self._made or not _no_such_table(exc):
                    raise
                # Dropped since this store made it (a worker serving runs one after the
                # other outlives a run's cleanup): make it again.
                self._made.pop(name, None)
                return self._commit_copy(name, ref, number, table, run_id, record)
        except Exception as exc:
            raise StoreError(f"cannot write task {step_id}#{number} to {self.location}: "
                             f"{' '.join(str(exc).split())[:300]}") from exc

    def _commit_copy(self, name: str, ref: str, number: int, table: pa.Table, run_id: str,
                     record: Callable[[Tx, str], bool] | None) -> str | None:
        """Replace task ``number``'s rows in table ``name`` by binary COPY, and ``record``
        them in the same transaction; a task without rows leaves a marker row (row_no -1,
        every column null), so its output exists."""
        cols = list(table.schema)
        types = [_pg_type(f.type) for f in cols]
        n = table.num_rows
        payload, starts = pgcopy.encode(
            [(pa.array(np.full(n, number, dtype=np.int32)), "integer"),
             (pa.array(np.arange(n, dtype=np.int32)), "integer"),
             *((table.column(i), t) for i, t in enumerate(types))])
        names = ", ".join(["task_no", "row_no"] + [_ident(f.name) for f in cols])
        copy = f"COPY {name} ({names}) FROM STDIN (FORMAT binary)"
        if name not in self._made:
            self._made[name] = self._create_output_table(name, ", ".join(
                f"{_ident(f.name)} {t}" for f, t in zip(cols, types, strict=True)), run_id)
        written = self._made[name]
        with self.catalog.engine.connect() as conn:
            if record is None and written is not None and number not in written:
                # Made by this store, for a run it holds, and without this task's rows: none
                # to replace, so the COPY is the whole write and its own transaction.
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                _copy_rows(conn, name, number, copy, payload, starts[n // 2], n, replace=False)
                written.add(number)
                return ref
            work = conn.begin()
            _copy_rows(conn, name, number, copy, payload, starts[n // 2], n, replace=True)
            if record is not None and not record(Tx(conn), ref):
                work.rollback()
                return None
            work.commit()
        return ref

    def _create_output_table(self, name: str, ddl: str, run_id: str) -> set[int] | None:
        """The step's output table, created in a transaction of its own under an advisory
        lock on its name: workers on several machines write a step's first tasks at the
        same moment, and concurrent CREATE ... IF NOT EXISTS statements collide (on the
        table's row type, or its name). Made once per store (``_made``): a write that
        finds it gone (a run's cleanup in another process dropped it) makes it again.
        Its comment is the run's id, which a long one's name no longer holds whole
        (:func:`_short`). Returns an empty set when this call created it (the tasks this
        store writes to it are then counted there), None when it was there already."""
        with self.catalog.engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%(n)s))", {"n": name})
            there = conn.exec_driver_sql("SELECT to_regclass(%(n)s) IS NOT NULL",
                                         {"n": name}).scalar()
            if there:
                return None
            # The key lets a retried task find its old rows without reading the whole
            # step's table (each DELETE would otherwise scan it: quadratic).
            conn.exec_driver_sql(f"CREATE UNLOGGED TABLE {name} "
                                 f"(task_no integer NOT NULL, row_no integer NOT NULL, "
                                 f"{ddl}, PRIMARY KEY (task_no, row_no))")
            conn.exec_driver_sql(f"COMMENT ON TABLE {name} IS {_literal(run_id)}")
        return set()

    def read_outputs(self, refs: list[str], skip: tuple[str, ...] = ()) -> pa.Table:
        """The rows of task outputs, in the order of ``refs``, without ``skip``: one COPY
        per table."""
        parts: list[pa.Table] = []
        i = 0
        while i < len(refs):
            if refs[i].startswith(_FILE):
                try:
                    parts.append(read_parquet(refs[i][len(_FILE):], skip))
                except FileNotFoundError as exc:
                    raise output_gone(refs[i], self.location) from exc
                i += 1
                continue
            table = refs[i].partition("#")[0]
            numbers: list[int] = []
            while i < len(refs) and refs[i].partition("#")[0] == table:
                numbers.append(int(refs[i].partition("#")[2]))
                i += 1
            parts.append(self._read_tasks(table, numbers, skip))
        return _concat(parts)

    def _read_tasks(self, table: str, numbers: list[int], skip: tuple[str, ...] = ()
                    ) -> pa.Table:
        order = ",".join(str(n) for n in numbers)
        exists = self.catalog.query("SELECT to_regclass(:t) IS NOT NULL AS ok", {"t": table})
        missing = [int(r["n"]) for r in self.catalog.query(
            f"SELECT u.n FROM unnest('{{{order}}}'::integer[]) AS u(n) WHERE NOT EXISTS "
            f"(SELECT FROM {table} t WHERE t.task_no = u.n)")] if exists[0]["ok"] else numbers
        if missing:
            raise output_gone(f"{table}#{missing[0]}", self.location)
        schema, _, name = table.partition(".")
        columns = [(r["column_name"], r["data_type"]) for r in self.catalog.query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_schema = :s AND table_name = :t AND column_name NOT IN "
            "('task_no', 'row_no') ORDER BY ordinal_position",
            {"s": schema, "t": name.strip('"').replace('""', '"')})
            if r["column_name"] not in skip]
        select = ", ".join(f"encode(t.{_ident(c)}, 'hex')" if pg == "bytea" else
                           f"t.{_ident(c)}" for c, pg in columns)
        sql = (f"COPY (SELECT {select} FROM unnest('{{{order}}}'::integer[]) WITH ORDINALITY "
               f"AS r(task_no, ord) JOIN {table} t USING (task_no) WHERE t.row_no >= 0 "
               "ORDER BY r.ord, t.row_no) TO STDOUT (FORMAT csv)")
        return self._copy_out(sql, columns)

    def _copy_out(self, sql: str, columns: list[tuple[str, str]]) -> pa.Table:
        """The rows a ``COPY (...) TO STDOUT (FORMAT csv)`` selects, typed by ``columns``."""
        with self.catalog.engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur:
                # Shortest exact doubles whatever the server's setting (0 would round).
                cur.execute("SET LOCAL extra_float_digits = 3")
                with cur.copy(sql) as copy:
                    return pgcopy.decode_csv(copy, columns)

    def output_exists(self, ref: str) -> bool:
        if ref.startswith(_FILE):
            return Path(ref[len(_FILE):]).is_file()
        table, _, number = ref.partition("#")
        exists = self.catalog.query("SELECT to_regclass(:t) IS NOT NULL AS ok",
                                    {"t": table})[0]["ok"]
        return bool(exists) and bool(self.catalog.query(
            f"SELECT EXISTS (SELECT 1 FROM {table} WHERE task_no = :n) AS ok",
            {"n": int(number)})[0]["ok"])

    def intermediate_location(self, run_id: str, step_id: str, storage: str = "table") -> str:
        if storage == "parquet":
            return _FILE + str(self._scratch_dir(run_id, step_id))
        return self._temp_table(run_id, step_id)

    def drop_intermediate(self, location: str) -> None:
        if location.startswith(_FILE):
            folder = Path(location[len(_FILE):])
            shutil.rmtree(folder, ignore_errors=True)
            if folder.parent.exists() and not any(folder.parent.iterdir()):
                folder.parent.rmdir()
            return
        with self.catalog.transaction() as tx:
            tx.execute(f"DROP TABLE IF EXISTS {location}")
        self._made.pop(location, None)

    def scratch_runs(self) -> dict[str, list[str]]:
        """Run id -> tables left in h3_temp and Parquet steps' folders in the scratch."""
        out: dict[str, list[str]] = {}
        for run_id, table in self._temp_tables():
            out.setdefault(run_id, []).append(table)
        runs = self.scratch / "runs"
        if runs.exists():
            for d in runs.iterdir():
                out.setdefault(d.name, []).extend(_FILE + str(p) for p in d.iterdir())
        return out

    def _temp_tables(self) -> list[tuple[str, str]]:
        """(run id, table) of every table in h3_temp. The run is the table's comment; a
        table made before comments named its run in its name ('<run_id>__<step>')."""
        return [(r["run"] or r["relname"].split("__", 1)[0], "h3_temp." + _ident(r["relname"]))
                for r in self.catalog.query(
                    "SELECT c.relname, obj_description(c.oid, 'pg_class') AS run FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'h3_temp' "
                    "AND c.relkind IN ('r', 'p')")]

    def drop_scratch(self, run_id: str) -> None:
        """Everything the run left in the scratch: its tables, its Parquet steps' files."""
        with self.catalog.transaction() as tx:
            for run, table in self._temp_tables():
                if run == run_id:
                    tx.execute(f"DROP TABLE IF EXISTS {table}")
                    self._made.pop(table, None)
        shutil.rmtree(self.scratch / "runs" / run_id, ignore_errors=True)

    # -- results ---------------------------------------------------------------------------

    def _stats_table(self, theme: str, dataset: str) -> str:
        return "h3." + _ident(stats_table(theme, dataset))

    def publish(self, *, run_id: str, dataset: str, theme: str, resolution: int, scope_key: str,
                scope_label: str, step_outputs: list[tuple[list[str], list[str]]],
                layout: dict[str, Any] | None = None, keep: list[str] | None = None) -> int:
        """Replace the scope's rows of ``dataset`` with this run's, in one transaction."""
        table = self._stats_table(theme, dataset)
        columns = [c for _, cols in step_outputs for c in cols]
        # One temporary table per step: every reference of a step names the same table;
        # a step kept as Parquet is loaded into one first.
        temps = [self._as_table(run_id, i, refs) for i, (refs, _) in enumerate(step_outputs)]
        key = {"r": resolution, "s": scope_key}
        with self.catalog.transaction() as tx:
            # The result is what a finished run promises: wait for it to be on disk, while
            # the catalog's progress records need not (see catalog._pg_connect).
            tx.execute("SET LOCAL synchronous_commit TO on")
            types: dict[str, str] = {}
            for temp, (_, cols) in zip(temps, step_outputs, strict=True):
                found = _column_types(tx, temp)
                types |= {c: found.get(c, "double precision") for c in cols}
            changed = self._prepare_stats_table(tx, table, types)
            # A sweep keeps the rows of the scenarios it did not compute again.
            kept = " AND NOT (scenario = ANY(:keep))" if keep else ""
            tx.execute(f"DELETE FROM {table} WHERE resolution = :r AND scope_key = :s{kept}",
                       key | ({"keep": list(keep)} if keep else {}))
            first = "s0"
            # Rows only: not the marker of a task without any (see _commit_copy).
            rows_of = [f"(SELECT * FROM {t} WHERE row_no >= 0)" for t in temps]
            source = f"{rows_of[0]} s0" + "".join(
                f" FULL OUTER JOIN {t} s{i} USING (h3_index)" for i, t in enumerate(rows_of[1:], 1))
            picked = ", ".join(f"s{i}.{_ident(c)}" for i, (_, cols) in enumerate(step_outputs)
                               for c in cols)
            cell = "h3_index" if len(temps) > 1 else f"{first}.h3_index"
            rows = tx.execute(
                f"INSERT INTO {table} (resolution, scope_key, h3_index, run_id"
                f"{''.join(', ' + _ident(c) for c in columns)}) "
                f"SELECT :r, :s, {cell}, :run{', ' + picked if picked else ''} FROM {source}",
                key | {"run": run_id})
            if keep:
                held = tx.one(f"SELECT count(*) AS n FROM {table} WHERE resolution = :r AND "
                              "scope_key = :s AND scenario = ANY(:keep)",
                              key | {"keep": list(keep)})
                rows += int(held["n"]) if held else 0
            if changed:
                tx.execute(f"ANALYZE {table}")  # a new table: let the planner know its size
            self._add_cells(tx, table, resolution, scope_key)
            self.catalog.publish_result(
                dataset=dataset, resolution=resolution, scope_key=scope_key,
                scope_label=scope_label, theme=theme, run_id=run_id, path=table,
                columns=columns, rows=rows, layout=layout, tx=tx)
            if changed:
                _theme_view(tx, theme)
            faults.point("result-written")
        for (refs, _), temp in zip(step_outputs, temps, strict=True):
            if refs[0].startswith(_FILE):  # loaded only to publish: not an intermediate
                self.drop_intermediate(temp)
        return rows

    @staticmethod
    def _prepare_stats_table(tx: Any, table: str, types: dict[str, str]) -> bool:
        """Create the dataset's table or add the columns it lacks; True if either happened.
        Nothing is altered when nothing is missing: DDL would lock readers out until the
        publication commits."""
        have = _column_types(tx, table)
        if not have:
            tx.execute(f"CREATE TABLE {table} (resolution smallint NOT NULL, scope_key text "
                       "NOT NULL, h3_index text NOT NULL, run_id text NOT NULL"
                       f"{''.join(f', {_ident(c)} {t}' for c, t in types.items())})")
            # A publication's rows are contiguous, so a BRIN index finds a scope's pages
            # among other scopes' at almost no cost per row; a B-tree on the scope and the
            # cell doubled the time of loading one.
            index = _ident(_short(table.split(".", 1)[1].strip('"') + "_scope", 63))
            tx.execute(f"CREATE INDEX {index} ON {table} USING brin (resolution, scope_key) "
                       "WITH (autosummarize = on)")
            return True
        changed = False
        for col, pg in types.items():
            if col not in have:
                tx.execute(f"ALTER TABLE {table} ADD COLUMN {_ident(col)} {pg}")
                changed = True
            elif have[col] != pg:
                if {have[col], pg} - _NUMERIC:
                    raise StoreError(f"{table}.{col} holds {have[col]}, this run gives {pg}",
                                     hint="rename the statistic, or drop the dataset's table")
                if have[col] != "double precision":  # both numbers: keep every value
                    tx.execute(f"ALTER TABLE {table} ALTER COLUMN {_ident(col)} TYPE double "
                               f"precision")
                    changed = True
        return changed

    def _as_table(self, run_id: str, index: int, refs: list[str]) -> str:
        if not refs[0].startswith(_FILE):
            return refs[0].split("#", 1)[0]
        import pyarrow.parquet as pq

        name = f"publish{index}"
        for number, ref in enumerate(refs, 1):
            table = pq.read_table(ref[len(_FILE):])
            self.write_task_output(run_id, name, number, table)
        return self._temp_table(run_id, name)

    @staticmethod
    def _add_cells(tx: Any, table: str, resolution: int, scope_key: str) -> None:
        """Outlines of the scope's cells that ``h3.cells`` lacks, a chunk at a time: a scope
        may hold millions of cells, most of them often there already."""
        import h3
        import shapely

        raw = tx._conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS new_cells (h3_index text, "
                        "resolution smallint, geom geometry) ON COMMIT DROP")
        with raw.cursor(name="h3pipe_new_cells") as missing, raw.cursor() as cur:
            # A sweep's table holds a row per cell and scenario: each cell once here.
            missing.execute(f"SELECT DISTINCT w.h3_index FROM {table} w WHERE "
                            "w.resolution = %s AND w.scope_key = %s AND NOT EXISTS "
                            "(SELECT FROM h3.cells c WHERE c.h3_index = w.h3_index)",
                            (resolution, scope_key))
            added = 0
            while chunk := [r[0] for r in missing.fetchmany(_CELL_CHUNK)]:
                rings = [h3.cell_to_boundary(c) for c in chunk]
                counts = np.fromiter(map(len, rings), dtype=np.int64, count=len(rings))
                latlng = np.fromiter(chain.from_iterable(chain.from_iterable(rings)),
                                     dtype=np.float64, count=2 * int(counts.sum()))
                polygons = shapely.polygons(shapely.linearrings(
                    latlng.reshape(-1, 2)[:, ::-1], indices=np.repeat(
                        np.arange(len(chunk)), counts)))
                wkb = shapely.to_wkb(polygons)  # the SRID is set in SQL: cheaper there
                payload, _ = pgcopy.encode([
                    (pa.array(chunk, pa.string()), "text"),
                    (pa.array(np.full(len(chunk), resolution, dtype=np.int16)), "smallint"),
                    (pa.array(wkb, pa.binary()), "geometry")])
                with cur.copy("COPY new_cells (h3_index, resolution, geom) FROM STDIN "
                              "(FORMAT binary)") as copy:
                    copy.write(payload)
                added += len(chunk)
        if added:  # the query over h3.cells closed (DDL on the table waits for it)
            with raw.cursor() as cur:
                _insert_cells(cur, added)

    def read_results(self, entries: list[dict[str, Any]]) -> pa.Table:
        """Rows of the given scopes, wide; a cell in several scopes keeps its newest row."""
        columns = result_columns(entries)
        out = [("h3_index", "text"), ("resolution", "smallint")]
        if not entries:
            return _with_resolution(pgcopy.decode_csv([], out))
        have: dict[str, dict[str, str]] = {}
        with self.catalog.transaction(readonly=True) as tx:
            for e in entries:
                if e["path"] not in have:
                    have[e["path"]] = _column_types(tx, e["path"])
        for c in columns:
            pg = next((have[e["path"]][c] for e in entries if c in have[e["path"]]),
                      "double precision")
            out.append((c, pg))
        newest_first = sorted(entries, key=lambda e: e["updated_at"], reverse=True)
        parts = []
        for rank, e in enumerate(newest_first):
            picked = "".join(f", {_ident(c)}" if c in have[e["path"]] else
                             f", NULL::{pg} AS {_ident(c)}" for c, pg in out[2:])
            parts.append(f"SELECT h3_index, resolution{picked}, {rank} AS _rank FROM "
                         f"{e['path']} WHERE resolution = {int(e['resolution'])} AND "
                         f"scope_key = {_literal(e['scope_key'])}")
        # Cells (and a sweep's keys) in byte order, as the embedded store sorts them,
        # whatever the collation.
        by = ", ".join(f'{_ident(c)} COLLATE "C"' for c in ("h3_index", *result_keys(entries)))
        inner = parts[0] if len(parts) == 1 else (
            f"SELECT DISTINCT ON ({by}) * FROM ({' UNION ALL '.join(parts)}) u "
            f"ORDER BY {by}, _rank")
        names = ", ".join(_ident(c) for c, _ in out)
        return _with_resolution(self._copy_out(
            f"COPY (SELECT {names} FROM ({inner}) q ORDER BY resolution, {by}) "
            "TO STDOUT (FORMAT csv)", out))


def _with_resolution(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index("resolution")
    return table.set_column(i, "resolution", table.column(i).cast(pa.int8()))


def _copy_rows(conn: Any, name: str, number: int, copy: str, payload: bytes, half: int, n: int,
               *, replace: bool) -> None:
    """Task ``number``'s rows (``payload``, a binary COPY stream of ``n`` rows) into table
    ``name``, after deleting the rows it had (``replace``)."""
    raw = conn.connection.driver_connection
    assert raw is not None  # a checked-out connection always has one
    with raw.cursor() as cur:
        if replace:
            cur.execute(f"DELETE FROM {name} WHERE task_no = {int(number)}")
        with cur.copy(copy) as stream:
            stream.write(payload[:half])
            faults.point("write-partial")  # a crash test stops the COPY half way through
            stream.write(payload[half:])
        if n == 0:
            cur.execute(f"INSERT INTO {name} (task_no, row_no) VALUES ({int(number)}, {_EMPTY})")


def _insert_cells(cur: Any, added: int) -> None:
    """``new_cells`` (``added`` cells) into ``h3.cells``.
    Where they would at least double it (a first publication at a resolution), its indexes
    are dropped and built again once the rows are in: building a GiST index over 212,079
    outlines took a sixth of the time of inserting them into it one by one. The table is
    locked meanwhile (until the publication commits), so its readers wait; otherwise
    rows go in one by one, and readers and other publications carry on."""
    cur.execute("SELECT count(*) FROM (SELECT FROM h3.cells LIMIT %s) s", (added,))
    if cur.fetchone()[0] >= added:
        # Another publication may add the same cells meanwhile: theirs stand.
        cur.execute("INSERT INTO h3.cells (h3_index, resolution, geom) SELECT h3_index, "
                    "resolution, ST_SetSRID(geom, 4326) FROM new_cells "
                    "ON CONFLICT (h3_index) DO NOTHING")
        return
    cur.execute("LOCK TABLE h3.cells IN ACCESS EXCLUSIVE MODE")
    # The table's keys (but one that a foreign key needs) and its other indexes, as the
    # migrations made them, to be made again as they were.
    cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint c WHERE "
                "conrelid = 'h3.cells'::regclass AND contype IN ('p', 'u') AND NOT EXISTS "
                "(SELECT FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid)")
    keys = cur.fetchall()
    cur.execute("SELECT format('%I.%I', n.nspname, c.relname), pg_get_indexdef(i.indexrelid) "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE i.indrelid = 'h3.cells'::regclass AND NOT "
                "EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)")
    indexes = cur.fetchall()
    for name, _ in keys:
        cur.execute(f"ALTER TABLE h3.cells DROP CONSTRAINT {_ident(name)}")
    for name, _ in indexes:
        cur.execute(f"DROP INDEX {name}")
    # Locked: no one else adds cells now, and those added since they were found missing
    # are left out here.
    cur.execute("INSERT INTO h3.cells (h3_index, resolution, geom) SELECT h3_index, "
                "resolution, ST_SetSRID(geom, 4326) FROM new_cells n WHERE NOT EXISTS "
                "(SELECT FROM h3.cells c WHERE c.h3_index = n.h3_index)")
    for _, ddl in indexes:
        cur.execute(ddl)
    for name, ddl in keys:
        cur.execute(f"ALTER TABLE h3.cells ADD CONSTRAINT {_ident(name)} {ddl}")


def _no_such_table(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is PostgreSQL's undefined_table (42P01)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == "42P01" or \
                getattr(getattr(seen, "orig", None), "sqlstate", None) == "42P01":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _column_types(tx: Any, table: str) -> dict[str, str]:
    """A table's columns and their types (none if it does not exist), keys left out."""
    schema, _, name = table.partition(".")
    return {r["column_name"]: r["data_type"] for r in tx.rows(
        "SELECT column_name, data_type FROM information_schema.columns WHERE "
        "table_schema = :s AND table_name = :t ORDER BY ordinal_position",
        {"s": schema, "t": name.strip('"').replace('""', '"')})
        if r["column_name"] not in _KEYS}


def _theme_view(tx: Any, theme: str) -> None:
    """``h3.stats_<theme>``: every dataset of the theme in long format (dataset, resolution,
    scope_key, h3_index, stat, value, run_id, scenario), over the datasets' own tables."""
    parts = []
    for r in tx.rows("SELECT DISTINCT dataset, path FROM results WHERE theme = :t "
                     "ORDER BY dataset", {"t": theme}):
        types = _column_types(tx, r["path"])
        stats = [c for c, t in types.items() if t in _NUMERIC]
        if not stats:
            continue
        values = ", ".join(f"({_literal(c)}, t.{_ident(c)}::double precision)" for c in stats)
        # A sweep's rows say their scenario (added last: a view only grows at its end).
        scenario = "t.scenario" if "scenario" in types else "NULL::text"
        parts.append(f"SELECT {_literal(r['dataset'])}::text AS dataset, t.resolution, "
                     "t.scope_key, t.h3_index, v.stat, v.value, t.run_id, "
                     f"{scenario} AS scenario FROM "
                     f"{r['path']} t CROSS JOIN LATERAL (VALUES {values}) AS v(stat, value)")
    if parts:
        tx.execute(f"CREATE OR REPLACE VIEW h3.{_ident(f'stats_{theme}')} AS "
                   + " UNION ALL ".join(parts))


def _concat(parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive")
