"""The embedded store, :class:`EmbeddedStore`: a folder (``<project>/.h3pipe``) holding the
SQLite run catalog, per-task Parquet outputs and the published Parquet results.

Results are replaced, never appended: a run writes a new file for its scope, then one
catalog transaction points the scope at it, then the old file is deleted. A reader sees
either the old rows or the new rows, never a mix and never both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from h3pipe import faults
from h3pipe.errors import StoreError
from h3pipe.storage import space
from h3pipe.storage.base import CatalogStore
from h3pipe.storage.catalog import Catalog, Tx, result_columns, result_keys

CATALOG_FILE = "catalog.sqlite"
# DuckDB's memory while it joins and sorts a run's results; past it, it spills to disk.
_DUCKDB_MEMORY = "256MB"


def read_parquet(path: Path | str, skip: tuple[str, ...] = ()) -> pa.Table:
    """A Parquet file's rows, without the columns ``skip`` (never read)."""
    if not skip:
        return pq.read_table(path)
    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in names if c not in skip])


class EmbeddedStore(CatalogStore):
    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        self.location = str(root)
        self.catalog = Catalog(f"sqlite:///{root / CATALOG_FILE}", create=create)


    # -- task outputs ---------------------------------------------------------------------

    def scratch_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def task_output_path(self, run_id: str, step_id: str, number: int) -> Path:
        return self.scratch_dir(run_id) / step_id / f"task-{number:06d}.parquet"

    def write_table(self, table: pa.Table, path: Path) -> None:
        # Scratch, read once by the next stage: quick to write over small.
        write_parquet(table, path, compression="snappy", store=self.root)

    def write_task_output(self, run_id: str, step_id: str, number: int, table: pa.Table,
                          storage: str = "parquet") -> str:
        """Store one task's rows, replacing that task's earlier output; return a reference.
        Always Parquet here, whatever ``storage`` asks for."""
        path = self.task_output_path(run_id, step_id, number)
        self.write_table(table, path)
        return str(path.relative_to(self.root))

    def commit_task_output(self, run_id: str, step_id: str, number: int, table: pa.Table,
                           storage: str = "parquet",
                           record: Callable[[Tx, str], bool] | None = None) -> str | None:
        """Write one task's rows, then ``record`` them in a catalog transaction (a queue
        worker marks its task completed); None when ``record`` says no, and then neither
        the rows nor what ``record`` wrote are kept (another delivery's output stays as it
        was). The rows wait under a name of their own, renamed into place inside the
        transaction."""
        if record is None:
            return self.write_task_output(run_id, step_id, number, table, storage)
        path = self.task_output_path(run_id, step_id, number)
        ref = str(path.relative_to(self.root))
        staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.staged")
        self.write_table(table, staged)
        try:
            with self.catalog.transaction() as tx:
                if not record(tx, ref):
                    raise _Refused  # rolls back what record wrote
                os.replace(staged, path)
        except _Refused:
            return None
        finally:
            staged.unlink(missing_ok=True)
        return ref

    def read_outputs(self, refs: list[str], skip: tuple[str, ...] = ()) -> pa.Table:
        """The rows of task outputs, in the order of ``refs``, without ``skip``."""
        parts = []
        for ref in refs:
            try:
                parts.append(read_parquet(self.root / ref, skip))
            except FileNotFoundError as exc:
                raise output_gone(ref, self.location) from exc
        if not parts:
            return pa.table({})
        return pa.concat_tables(parts, promote_options="permissive")

    def output_exists(self, ref: str) -> bool:
        return (self.root / ref).is_file()

    def intermediate_location(self, run_id: str, step_id: str, storage: str = "parquet") -> str:
        return str((self.scratch_dir(run_id) / step_id).relative_to(self.root))

    def drop_intermediate(self, location: str) -> None:
        target = self.root / location
        shutil.rmtree(target, ignore_errors=True)
        parent = target.parent
        if parent != self.root and parent.exists() and not any(parent.iterdir()):
            parent.rmdir()

    def scratch_runs(self) -> dict[str, list[str]]:
        """Run id -> locations of everything left in the scratch area."""
        base = self.root / "runs"
        if not base.exists():
            return {}
        return {d.name: [str(p.relative_to(self.root)) for p in d.iterdir()] or
                [str(d.relative_to(self.root))] for d in base.iterdir() if d.is_dir()}

    def drop_scratch(self, run_id: str) -> None:
        shutil.rmtree(self.scratch_dir(run_id), ignore_errors=True)

    # -- results --------------------------------------------------------------------------

    def publish(self, *, run_id: str, dataset: str, theme: str, resolution: int, scope_key: str,
                scope_label: str, step_outputs: list[tuple[list[str], list[str]]],
                layout: dict[str, Any] | None = None, keep: list[str] | None = None) -> int:
        """Join the steps' task outputs (references from :meth:`write_task_output`) on
        ``h3_index`` into the scope's new result file."""
        rel = (Path("results") / dataset / f"res={resolution}" / _safe(scope_key)
               / f"{run_id}.parquet")
        target = self.root / rel
        columns = [c for _, cols in step_outputs for c in cols]
        meta = json.dumps({"dataset": dataset, "theme": theme, "run_id": run_id,
                           "scope": scope_label, "resolution": resolution})
        kept = self._kept(dataset, resolution, scope_key, keep or [])
        if len(step_outputs) == 1:
            rows = self._concat_to_file(run_id, resolution, step_outputs[0], target, meta,
                                        kept)
        else:
            rows = self._join_to_file(run_id, resolution, step_outputs, target, meta)
        faults.point("result-written")
        old = self.catalog.publish_result(
            dataset=dataset, resolution=resolution, scope_key=scope_key, scope_label=scope_label,
            theme=theme, run_id=run_id, path=str(rel), columns=columns, rows=rows, layout=layout,
        )
        if old:
            (self.root / old).unlink(missing_ok=True)
        return rows

    def _kept(self, dataset: str, resolution: int, scope_key: str, keep: list[str]
              ) -> tuple[Path, list[str]] | None:
        """The scope's current result file and the scenarios of it to keep, if any."""
        if not keep:
            return None
        entries = self.catalog.result_entries(dataset, resolution, scope_key)
        return (self.root / entries[0]["path"], keep) if entries else None

    def _concat_to_file(self, run_id: str, resolution: int, step_output: tuple[list[str],
                        list[str]], target: Path, meta: str,
                        kept: tuple[Path, list[str]] | None = None) -> int:
        """One published step: its task files one after another into ``target`` (Parquet,
        atomically), a row group at a time, so memory does not grow with the scope. Rows
        keep the run's order (spatial, as the batches were); then the rows of ``kept``'s
        scenarios from the current result."""
        files, cols = step_output
        paths = [self.root / f for f in files]
        fields = pa.unify_schemas([pq.read_schema(p) for p in paths],
                                  promote_options="permissive")
        schema = pa.schema([fields.field("h3_index"),
                            pa.field("resolution", pa.int8(), nullable=False),
                            *(fields.field(c) for c in cols)],
                           metadata={"h3pipe": meta})
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        rows = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with pq.ParquetWriter(tmp, schema, compression="zstd",
                                  use_dictionary=dictionary_columns(schema)) as writer:
                for part in _row_groups(paths, schema, resolution):
                    writer.write_table(part)
                    rows += part.num_rows
                for part in _kept_rows(kept, schema):
                    writer.write_table(part)
                    rows += part.num_rows
            faults.point("write-partial")
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise space.store_error(exc, self.root, f"cannot write {target}") from exc
        return rows

    def _join_to_file(self, run_id: str, resolution: int,
                      step_outputs: list[tuple[list[str], list[str]]], target: Path,
                      meta: str) -> int:
        """Write the steps' outputs joined on ``h3_index`` straight to ``target`` (Parquet,
        atomically), within a bounded amount of memory: DuckDB streams the task files and
        spills its sort to disk rather than holding the result. Returns the rows written."""
        import duckdb
        import pyarrow.parquet as pq

        selects = []
        for i, (files, cols) in enumerate(step_outputs):
            file_list = ", ".join(_sql_str(str(self.root / f)) for f in files)
            selects.append((f"s{i}", f"read_parquet([{file_list}])", cols))
        first = selects[0][0]
        # The merged key of the USING joins: a cell only a later step has keeps its id.
        sql = f"SELECT h3_index, {resolution}::TINYINT AS resolution"
        for alias, _, cols in selects:
            sql += "".join(f", {alias}.{_ident(c)}" for c in cols)
        sql += f" FROM {selects[0][1]} {first}"
        for alias, src, _ in selects[1:]:
            sql += f" FULL OUTER JOIN {src} {alias} USING (h3_index)"
        sql += " ORDER BY h3_index"
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        spill = self.root / "tmp" / f"duckdb-{uuid.uuid4().hex[:8]}"
        con = duckdb.connect(config={"memory_limit": _DUCKDB_MEMORY,
                                     "temp_directory": str(spill), "threads": 2,
                                     "preserve_insertion_order": False})
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            spill.mkdir(parents=True, exist_ok=True)
            con.execute(f"COPY ({sql}) TO {_sql_str(str(tmp))} (FORMAT parquet, "
                        f"COMPRESSION zstd, KV_METADATA {{h3pipe: {_sql_str(meta)}}})")
            faults.point("write-partial")
            os.replace(tmp, target)
        except (duckdb.Error, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise space.store_error(exc, self.root,
                                    f"cannot assemble results of run {run_id}") from exc
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
        return int(pq.read_metadata(target).num_rows)


    def read_results(self, entries: list[dict[str, Any]]) -> pa.Table:
        """Rows of the given result files; a cell in several scopes keeps its newest row."""
        import duckdb

        if not entries:
            return pa.table({"h3_index": pa.array([], pa.string()),
                             "resolution": pa.array([], pa.int8())})
        columns = result_columns(entries)
        keys = result_keys(entries)
        newest_first = sorted(entries, key=lambda e: e["updated_at"], reverse=True)
        parts = " UNION ALL BY NAME ".join(
            f"SELECT *, {rank} AS _rank FROM read_parquet({_sql_str(str(self.root / e['path']))})"
            for rank, e in enumerate(newest_first)
        )
        cols = ", ".join(_ident(c) for c in columns)
        by = ", ".join(_ident(c) for c in ("h3_index", *keys))
        con = duckdb.connect()
        try:
            return con.sql(
                f"SELECT h3_index, resolution, {cols} FROM ({parts}) "
                f"QUALIFY row_number() OVER (PARTITION BY {by} ORDER BY _rank) = 1 "
                f"ORDER BY resolution, {by}"
            ).to_arrow_table()
        except duckdb.Error as exc:
            raise StoreError(f"cannot read results: {exc}") from exc
        finally:
            con.close()


class _Refused(Exception):
    """A commit's record said no: the catalog transaction rolls back."""


def output_gone(ref: str, where: str) -> StoreError:
    """A task output that is not there any more (cleaned, or deleted by hand)."""
    return StoreError(f"the output of task {ref} is gone from the store at {where}",
                      hint="resume the run: a task whose output is gone is computed again")


# Rows per row group of a published result: task files are concatenated up to this.
_ROW_GROUP = 32_768


def _kept_rows(kept: tuple[Path, list[str]] | None, schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows of some scenarios of a result file, in ``schema``, a row group at a time."""
    if kept is None:
        return
    import pyarrow.compute as pc

    path, scenarios = kept
    wanted = pa.array(scenarios, pa.string())
    with pq.ParquetFile(path) as f:
        for i in range(f.num_row_groups):
            part = f.read_row_group(i)
            part = part.filter(pc.is_in(part.column("scenario"), wanted))
            if part.num_rows:
                yield part.select(schema.names).cast(schema)


def _row_groups(paths: list[Path], schema: pa.Schema, resolution: int) -> Iterator[pa.Table]:
    """The task files' rows in ``schema`` (with the run's resolution), in groups of about
    _ROW_GROUP rows."""
    pending: list[pa.Table] = []
    held = 0
    for path in paths:
        table = pq.read_table(path, use_threads=False)  # small files: threads cost more
        table = pa.table({f.name: (pa.array(np.full(table.num_rows, resolution, np.int8))
                                   if f.name == "resolution" else
                                   table.column(f.name).cast(f.type))
                          for f in schema}, schema=schema)
        pending.append(table)
        held += table.num_rows
        if held >= _ROW_GROUP:
            yield pa.concat_tables(pending)
            pending, held = [], 0
    if pending:
        yield pa.concat_tables(pending)


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "=_-." else "_" for ch in key)


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: all but ``h3_index``, whose values are unique
    (trying made writing a result four times slower, and its file larger)."""
    return [f.name for f in schema if f.name != "h3_index"]


def write_parquet(table: pa.Table, path: Path, compression: str = "zstd",
                  store: Path | None = None) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one.
    A full disk is :class:`~h3pipe.errors.StoreFull`, naming ``store`` (the store's
    folder; by default the file's)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, compression=compression,
                       use_dictionary=dictionary_columns(table.schema))
        faults.point("write-partial")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise space.store_error(exc, store or path.parent, f"cannot write {path}") from exc
