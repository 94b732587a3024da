"""One batch over many scenarios: :func:`compute`.

A step that reads a dimensioned source computes every scenario of the run's matrix from
the one batch it is given: the cells or feature rows are read once, and each scenario's
raster (every band from one read of each window) is handed to the operation in turn. Its
rows carry the scenario's keys (``scenario`` and one column per dimension). A later step
whose input carries those keys keeps them: a row-wise operation passes them on, and an
operation that groups (``h3_weighted_aggregate``) groups within each scenario.

Feature rows kept for a later step are stored wide (``Batch.wide``): one row per feature,
its new columns once per scenario (``s12|rp100_depth_m``), so a feature's geometry and
attributes are stored, read back and placed in a cell once rather than once per scenario.
The step that reads them melts each batch back into rows per scenario (``Batch.melt``).
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from h3pipe.errors import OperationError
from h3pipe.operations.base import Batch, Operation
from h3pipe.sources.dimensions import Scenario

SEP = "|"  # between a scenario's number and a column, in wide rows


def compute(op: Operation, batch: Batch) -> pa.Table:
    """The batch's rows: every scenario of a sweep, or the batch as it is."""
    if batch.melt:
        assert batch.rows is not None
        rows = melt(batch.rows, batch.melt)
        batch = replace(batch, rows=rows, melt=(),
                        keys=tuple(k for k in batch.melt[0].keys() if k in rows.column_names))
    if batch.keys and ((op.group_by and not op.groups_by_keys) or batch.scenarios):
        return _per_group(op, batch)
    if batch.scenarios:
        parts = [op.run_batch(replace(batch, raster=raster, scenarios=()))
                 for _, raster in batch.scenarios]
        if batch.wide and batch.rows is not None:
            return _widen(batch.rows, parts)
        return pa.concat_tables([with_keys(t, sc.keys()) for t, (sc, _) in
                                 zip(parts, batch.scenarios, strict=True)],
                                promote_options="permissive")
    return op.run_batch(batch)


def _widen(rows: pa.Table, parts: list[pa.Table]) -> pa.Table:
    """The input rows, then each scenario's new columns as ``s<k>|<column>``."""
    out = parts[0].select([c for c in parts[0].column_names if c in rows.column_names])
    for k, part in enumerate(parts):
        if part.num_rows != rows.num_rows:
            raise AssertionError("a sweep's row-wise operation changed the number of rows")
        for c in part.column_names:
            if c not in rows.column_names:
                out = out.append_column(f"s{k}{SEP}{c}", part.column(c))
    return out


def melt(rows: pa.Table, scenarios: tuple[Scenario, ...]) -> pa.Table:
    """Wide rows (see :func:`_widen`) as rows per scenario, with the scenario's keys."""
    shared = [c for c in rows.column_names if SEP not in c]
    parts = []
    for k, sc in enumerate(scenarios):
        mine = {c.split(SEP, 1)[1]: rows.column(c) for c in rows.column_names
                if c.startswith(f"s{k}{SEP}")}
        part = rows.select(shared)
        for name, column in mine.items():
            part = part.append_column(name, column)
        parts.append(with_keys(part, sc.keys()))
    return pa.concat_tables(parts, promote_options="permissive")


def with_keys(table: pa.Table, keys: dict[str, str | None]) -> pa.Table:
    """``table`` with a scenario's key columns (those it lacks), after ``h3_index`` or in
    front."""
    at = table.column_names.index("h3_index") + 1 if "h3_index" in table.column_names else 0
    for name, value in keys.items():
        if name not in table.column_names:
            table = table.add_column(at, name, pa.array([value] * table.num_rows, pa.string()))
            at += 1
    return table


def _per_group(op: Operation, batch: Batch) -> pa.Table:
    """Rows that already carry scenario keys, computed one scenario at a time: grouped
    within it, and with its own raster when the step reads a dimensioned source."""
    rows = batch.rows
    assert rows is not None
    rasters = {sc.id: (sc, raster) for sc, raster in batch.scenarios}
    ids = rows.column("scenario").to_numpy(zero_copy_only=False)
    parts = []
    for sid in dict.fromkeys(ids.tolist()):
        group = rows.filter(pa.array(ids == sid))
        sub = replace(batch, rows=group, scenarios=(), keys=())
        if sid in rasters:
            sub = replace(sub, raster=rasters[sid][1])
        elif batch.scenarios:
            continue  # a scenario the source does not have in this run
        keys = {k: group.column(k)[0].as_py() for k in batch.keys}
        parts.append(with_keys(op.run_batch(sub), keys))
    if not parts:
        raise OperationError(f"step '{batch.step_id}': none of its input's scenarios is one "
                             f"its source '{batch.source_id}' has in this run",
                             hint="sweep both sources over the same scenarios")
    return pa.concat_tables(parts, promote_options="permissive")


__all__ = ["SEP", "compute", "melt", "with_keys"]
