"""What the engine asks of a store, :class:`Store`: the seam between running a pipeline and
where its rows live (:class:`~h3pipe.storage.embedded.EmbeddedStore` or
:class:`~h3pipe.storage.postgis.PostgresStore`).

A store hands out opaque references for task outputs and intermediates; only the store
that made a reference can read or drop it. Every store is a context manager that closes
its catalog on the way out, so a failing command never leaves a connection pool behind.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

import pyarrow as pa

from h3pipe.storage.catalog import Catalog, Tx


class Store(Protocol):
    location: str  # where it is, as it may be shown (never a password)
    catalog: Catalog

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    # -- task outputs and intermediates ------------------------------------------------------

    def write_task_output(self, run_id: str, step_id: str, number: int, table: pa.Table,
                          storage: str = ...) -> str:
        """Store one task's rows, replacing that task's earlier output; return a reference."""
        ...

    def commit_task_output(self, run_id: str, step_id: str, number: int, table: pa.Table,
                           storage: str = ...,
                           record: Callable[[Tx, str], bool] | None = None) -> str | None:
        """Store one task's rows and, with them (in one transaction where the store can),
        ``record`` them: when ``record`` returns False nothing is kept and None returned."""
        ...

    def read_outputs(self, refs: list[str], skip: tuple[str, ...] = ()) -> pa.Table:
        """The rows of task outputs, in the order of ``refs``, without the columns ``skip``
        (a geometry a step does not need)."""
        ...

    def output_exists(self, ref: str) -> bool: ...

    def intermediate_location(self, run_id: str, step_id: str, storage: str = ...) -> str:
        """Where a step's task outputs go, as recorded for cleaning up."""
        ...

    def drop_intermediate(self, location: str) -> None: ...

    def scratch_runs(self) -> dict[str, list[str]]:
        """Run id -> locations of everything left in the scratch area."""
        ...

    def drop_scratch(self, run_id: str) -> None: ...

    # -- results -----------------------------------------------------------------------------

    def publish(self, *, run_id: str, dataset: str, theme: str, resolution: int, scope_key: str,
                scope_label: str, step_outputs: list[tuple[list[str], list[str]]],
                layout: dict[str, Any] | None = None, keep: list[str] | None = None) -> int:
        """Replace the scope's result with the steps' outputs joined on ``h3_index``;
        return the number of rows. ``layout``: a sweep's key columns and bands (see
        ``results.layout``); ``keep``: scenarios whose rows in the scope's current result
        stay, beside the new ones."""
        ...

    def result_entries(self, dataset: str | None = None, resolution: int | None = None,
                       scope_key: str | None = None) -> list[dict[str, Any]]: ...

    def read_results(self, entries: list[dict[str, Any]]) -> pa.Table:
        """Rows of the given results, wide; a cell in several scopes keeps its newest row."""
        ...


class CatalogStore:
    """What both stores share: their catalog, closed with the store (``with``: however the
    block ends), and the results it lists."""

    catalog: Catalog

    def close(self) -> None:
        self.catalog.close()

    def result_entries(self, dataset: str | None = None, resolution: int | None = None,
                       scope_key: str | None = None) -> list[dict[str, Any]]:
        return self.catalog.result_entries(dataset, resolution, scope_key)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def kept_tasks(store: Store, completed: list[dict[str, Any]]
               ) -> dict[tuple[str, int], dict[str, Any]]:
    """Of a run's completed tasks, those whose outputs are still there, by (step, number)."""
    return {(t["step_id"], t["task_no"]): t for t in completed
            if store.output_exists(t["output_path"])}
