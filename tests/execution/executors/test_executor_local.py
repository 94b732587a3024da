"""The process-pool executor (h3pipe/execution/executors/local.py) with real worker
processes: row batches are shared by rows, results come back whole, and a batch that
cannot be sent is refused before anything starts."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from h3pipe.errors import OperationError
from h3pipe.execution.executors import MachineExecutor, make_executor
from h3pipe.execution.executors.base import run_batches
from h3pipe.execution.executors.local import ProcessPool
from h3pipe.operations import Batch


def _row_batches(sizes: list[int]) -> list[Batch]:
    start, out = 0, []
    for i, n in enumerate(sizes):
        rows = pa.table({"x": list(range(start, start + n))})
        out.append(Batch("r", "f", i, "filter", {"where": "x % 3 = 0"}, rows=rows))
        start += n
    return out


class _Recording:
    """A transport that notes which worker each batch was sent to."""

    def __init__(self, pool: ProcessPool) -> None:
        self.pool = pool
        self.slots, self.depth = pool.slots, pool.depth
        self.sent: list[tuple[int, int]] = []

    def submit(self, worker, batch):
        self.sent.append((worker, batch.number))
        self.pool.submit(worker, batch)

    def take_back(self):
        return self.pool.take_back()

    def poll(self, timeout):
        return self.pool.poll(timeout)

    def check(self, running):
        self.pool.check(running)


def test_row_batches_go_to_both_workers_by_their_rows():
    # 6 row batches, 60 rows: worker 0's share is batches 0-2 (the first 30 rows), worker
    # 1's starts at batch 3. Row batches have no cells: counted by cells, worker 1's share
    # was empty, and it started on the last batch, stolen from worker 0's.
    batches = _row_batches([20, 5, 5, 10, 10, 10])
    pool = ProcessPool(2)
    try:
        t = _Recording(pool)
        out = list(run_batches(t, batches))
    finally:
        pool.close()
    first = {w: next(b for v, b in t.sent if v == w) for w in (0, 1)}
    assert first == {0: 0, 1: 3}
    got = {o.batch.number: o.table.column("x").to_pylist() for o in out}
    expected = {b.number: [x for x in b.rows.column("x").to_pylist() if x % 3 == 0]
                for b in batches}
    assert got == expected


def test_a_batch_that_cannot_be_pickled_is_refused_before_any_is_sent():
    lock = threading.Lock()  # no pickling a lock
    batches = [Batch("r", "f", i, "filter", {"where": "true", "lock": lock},
                     rows=pa.table({"x": [i]})) for i in range(2)]
    with make_executor(2) as ex:  # a filter's batches: on processes, not threads
        assert isinstance(ex, MachineExecutor) and ex.workers == 2
        with pytest.raises(OperationError, match="step 'f' cannot be sent to a worker"):
            list(ex.run(batches))
