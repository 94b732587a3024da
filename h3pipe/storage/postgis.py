"""The PostgreSQL/PostGIS store, :class:`PostgresStore`: the catalog in schema ``h3pipe``,
per-theme statistics in schema ``h3`` (long format, one list partition per dataset), cell
outlines in ``h3.cells``, and each run's task outputs as UNLOGGED tables in ``h3_temp``.

Publishing a scope deletes its old rows and inserts the new ones in one transaction, so a
reader sees the old scope or the new one, never a mix. Task outputs arrive by COPY; a
retried task replaces only its own rows.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from h3pipe import faults
from h3pipe.errors import ConfigError, StoreError
from h3pipe.storage.base import Closing
from h3pipe.storage.catalog import Catalog, result_columns, safe_url

_FILE = "file:"  # a reference to Parquet files rather than a table
_PG_TYPES = {pa.float64(): "double precision", pa.float32(): "double precision",
             pa.int64(): "bigint", pa.int32(): "bigint", pa.int16(): "bigint",
             pa.int8(): "bigint", pa.uint8(): "bigint", pa.uint16(): "bigint",
             pa.uint32(): "bigint", pa.string(): "text", pa.large_string(): "text",
             pa.binary(): "bytea", pa.large_binary(): "bytea", pa.bool_(): "boolean",
             pa.null(): "text"}
_ARROW_TYPES = {"double precision": pa.float64(), "bigint": pa.int64(), "text": pa.string(),
                "bytea": pa.binary(), "boolean": pa.bool_(), "integer": pa.int64(),
                "real": pa.float64(), "smallint": pa.int64()}


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


class PostgresStore(Closing):
    def __init__(self, url: str, *, create: bool = True, scratch: Path | None = None) -> None:
        self.url = url
        self.scratch = scratch or Path(".h3pipe")
        self.location = safe_url(url)
        self.catalog = Catalog(url, migrate=False)
        pending = self.catalog.pending()
        if pending:
            self.catalog.close()
            raise ConfigError(f"the PostgreSQL store at {self.location} needs "
                              f"{len(pending)} migration(s) ({', '.join(pending)})",
                              hint="run 'h3pipe db upgrade' (with the same --store)")

    def close(self) -> None:
        self.catalog.close()

    # -- task outputs ----------------------------------------------------------------------

    def _temp_table(self, run_id: str, step_id: str) -> str:
        return "h3_temp." + _ident(_short(f"{run_id}__{step_id}"))

    def _scratch_dir(self, run_id: str, step_id: str) -> Path:
        return self.scratch / "runs" / run_id / step_id

    def write_task_output(self, run_id: str, step_id: str, number: int, table: pa.Table,
                          storage: str = "table") -> str:
        if storage == "parquet":
            from h3pipe.storage.embedded import write_parquet

            path = self._scratch_dir(run_id, step_id) / f"task-{number:06d}.parquet"
            write_parquet(table, path)
            return _FILE + str(path)
        name = self._temp_table(run_id, step_id)
        cols = list(table.schema)
        ddl = ", ".join(f"{_ident(f.name)} {_pg_type(f.type)}" for f in cols)
        copy_cols = ", ".join(["task_no", "row_no"] + [_ident(f.name) for f in cols])
        rows = table.to_pylist()
        try:
            with self.catalog.engine.begin() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None  # a checked-out connection always has one
                with raw.cursor() as cur:
                    cur.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {name} "
                                f"(task_no integer NOT NULL, row_no integer NOT NULL, {ddl})")
                    cur.execute(f"DELETE FROM {name} WHERE task_no = %s", (number,))
                    with cur.copy(f"COPY {name} ({copy_cols}) FROM STDIN") as copy:
                        for i, r in enumerate(rows):
                            if i == len(rows) // 2:
                                faults.point("write-partial")
                            copy.write_row([number, i, *(r[f.name] for f in cols)])
        except Exception as exc:
            raise StoreError(f"cannot write task {step_id}#{number} to {self.location}: "
                             f"{' '.join(str(exc).split())[:300]}") from exc
        return f"{name}#{number}"

    def read_outputs(self, refs: list[str]) -> pa.Table:
        """The rows of task outputs, in the order of ``refs``."""
        import pyarrow.parquet as pq

        parts: list[pa.Table] = []
        for ref in refs:
            if ref.startswith(_FILE):
                parts.append(pq.read_table(ref[len(_FILE):]))
                continue
            table, _, number = ref.partition("#")
            schema, _, name = table.partition(".")
            types = self.catalog.query(
                "SELECT column_name, data_type FROM information_schema.columns WHERE "
                "table_schema = :s AND table_name = :t AND column_name NOT IN "
                "('task_no', 'row_no') "
                "ORDER BY ordinal_position", {"s": schema, "t": name.strip('"')})
            rows = self.catalog.query(f"SELECT * FROM {table} WHERE task_no = :n "
                                      "ORDER BY row_no", {"n": int(number)})
            parts.append(pa.table({
                c["column_name"]: pa.array(
                    [bytes(r[c["column_name"]]) if isinstance(r[c["column_name"]], memoryview)
                     else r[c["column_name"]] for r in rows],
                    _ARROW_TYPES.get(c["data_type"], pa.string()))
                for c in types}))
        return _concat(parts)

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

    def scratch_runs(self) -> dict[str, list[str]]:
        """Run id -> tables left in h3_temp (named '<run_id>__<step>')."""
        out: dict[str, list[str]] = {}
        for r in self.catalog.query("SELECT tablename FROM pg_tables "
                                    "WHERE schemaname = 'h3_temp'"):
            run_id = r["tablename"].split("__", 1)[0]
            out.setdefault(run_id, []).append("h3_temp." + _ident(r["tablename"]))
        runs = self.scratch / "runs"
        if runs.exists():
            for d in runs.iterdir():
                out.setdefault(d.name, []).extend(_FILE + str(p) for p in d.iterdir())
        return out

    def drop_scratch(self, run_id: str) -> None:
        with self.catalog.transaction() as tx:
            for r in tx.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'h3_temp' "
                             "AND tablename LIKE :p", {"p": _short(run_id)[:40] + "%"}):
                tx.execute(f"DROP TABLE IF EXISTS h3_temp.{_ident(r['tablename'])}")

    # -- results ---------------------------------------------------------------------------

    def _stats_table(self, theme: str) -> str:
        return "h3." + _ident(f"stats_{theme}")

    def publish(self, *, run_id: str, dataset: str, theme: str, resolution: int, scope_key: str,
                scope_label: str, step_outputs: list[tuple[list[str], list[str]]]) -> int:
        """Replace the scope's rows of ``dataset`` with this run's, in one transaction."""
        import h3

        table = self._stats_table(theme)
        part = "h3." + _ident(_short(f"stats_{theme}__{dataset}"))
        columns = [c for _, cols in step_outputs for c in cols]
        # One temporary table per step: every reference of a step names the same table;
        # a step kept as Parquet is loaded into one first.
        temps = [self._as_table(run_id, i, refs) for i, (refs, _) in enumerate(step_outputs)]
        key = {"d": dataset, "r": resolution, "s": scope_key}
        literal = "'" + dataset.replace("'", "''") + "'"
        with self.catalog.transaction() as tx:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {table} (dataset text NOT NULL, "
                       "resolution smallint NOT NULL, scope_key text NOT NULL, "
                       "h3_index text NOT NULL, stat text NOT NULL, value double precision, "
                       "run_id text NOT NULL) PARTITION BY LIST (dataset)")
            tx.execute(f"CREATE TABLE IF NOT EXISTS {part} PARTITION OF {table} "
                       f"FOR VALUES IN ({literal})")
            index = _ident(_short(f"stats_{theme}__{dataset}_cell"))
            tx.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {part} "
                       "(resolution, scope_key, h3_index)")
            tx.execute(f"DELETE FROM {table} WHERE dataset = :d AND resolution = :r "
                       "AND scope_key = :s", key)
            for temp, (_, cols) in zip(temps, step_outputs, strict=True):
                values = ", ".join(f"('{c}', t.{_ident(c)}::double precision)" for c in cols)
                tx.execute(
                    f"INSERT INTO {table} (dataset, resolution, scope_key, h3_index, stat, "
                    "value, run_id) SELECT :d, :r, :s, t.h3_index, v.stat, v.value, :run "
                    f"FROM {temp} t CROSS JOIN LATERAL (VALUES {values}) AS v(stat, value)",
                    key | {"run": run_id})
            cells = [r["h3_index"] for r in tx.rows(
                f"SELECT DISTINCT h3_index FROM {table} WHERE dataset = :d AND resolution = :r "
                "AND scope_key = :s", key)]
            self._add_cells(tx, cells, resolution, h3)
            self.catalog.publish_result(
                dataset=dataset, resolution=resolution, scope_key=scope_key,
                scope_label=scope_label, theme=theme, run_id=run_id, path=table,
                columns=columns, rows=len(cells), tx=tx)
            faults.point("result-written")
        for (refs, _), temp in zip(step_outputs, temps, strict=True):
            if refs[0].startswith(_FILE):  # loaded only to publish: not an intermediate
                self.drop_intermediate(temp)
        return len(cells)

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
    def _add_cells(tx: Any, cells: list[str], resolution: int, h3: Any) -> None:
        raw = tx._conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS new_cells "
                        "(h3_index text, wkt text) ON COMMIT DROP")
            with cur.copy("COPY new_cells (h3_index, wkt) FROM STDIN") as copy:
                for c in cells:
                    ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(c)]
                    ring.append(ring[0])
                    copy.write_row([c, "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in ring)
                                    + "))"])
            cur.execute("INSERT INTO h3.cells (h3_index, resolution, geom) SELECT h3_index, "
                        "%s, ST_GeomFromText(wkt, 4326) FROM new_cells "
                        "ON CONFLICT (h3_index) DO NOTHING", (resolution,))

    def result_entries(self, dataset: str | None = None, resolution: int | None = None,
                       scope_key: str | None = None) -> list[dict[str, Any]]:
        return self.catalog.result_entries(dataset, resolution, scope_key)

    def read_results(self, entries: list[dict[str, Any]]) -> pa.Table:
        """Rows of the given scopes, wide; a cell in several scopes keeps its newest row."""
        columns = result_columns(entries)
        newest: dict[str, tuple[int, dict[str, Any]]] = {}
        for e in sorted(entries, key=lambda e: e["updated_at"]):
            rows = self.catalog.query(
                f"SELECT h3_index, stat, value FROM {e['path']} WHERE dataset = :d AND "
                "resolution = :r AND scope_key = :s",
                {"d": e["dataset"], "r": e["resolution"], "s": e["scope_key"]})
            scope: dict[str, dict[str, Any]] = {}
            for r in rows:
                scope.setdefault(r["h3_index"], {})[r["stat"]] = r["value"]
            for cell, stats in scope.items():
                newest[cell] = (e["resolution"], stats)
        cells = sorted(newest, key=lambda c: (newest[c][0], c))
        data: dict[str, Any] = {"h3_index": pa.array(cells, pa.string()),
                                "resolution": pa.array([newest[c][0] for c in cells], pa.int8())}
        for col in columns:
            values = [newest[c][1].get(col) for c in cells]
            if col == "variety":
                data[col] = pa.array([None if v is None else int(v) for v in values], pa.int64())
            else:
                data[col] = pa.array(values, pa.float64())
        return pa.table(data)


def _concat(parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive")
