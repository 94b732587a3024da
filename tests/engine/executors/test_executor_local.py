"""The process-pool executor (h3pipe/engine/executors/local.py) with real worker
processes: a batch that cannot be sent is refused before anything starts."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from h3pipe.engine.executors import PoolExecutor, make_executor
from h3pipe.errors import OperationError
from h3pipe.operations import Batch


def test_a_batch_that_cannot_be_pickled_is_refused_before_any_is_sent():
    lock = threading.Lock()  # no pickling a lock
    batches = [Batch("r", "f", i, "filter", {"where": "true", "lock": lock},
                     rows=pa.table({"x": [i]})) for i in range(2)]
    with make_executor(2) as ex:
        assert isinstance(ex, PoolExecutor) and ex.workers == 2
        with pytest.raises(OperationError, match="step 'f' cannot be sent to a worker"):
            list(ex.run(batches))
