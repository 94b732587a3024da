"""Runs a stage's batches: in this process for one worker, else on a process pool.

:func:`execute` yields each batch's outcome as it finishes. Batches are checked to pickle
before any worker starts, and on the first failure nothing new is started.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from h3pipe.errors import H3PipeError, OperationError
from h3pipe.operations import Batch, run_batch


@dataclass
class Outcome:
    batch: Batch
    table: Any | None  # pyarrow.Table
    error: H3PipeError | None
    seconds: float


def _timed(batch: Batch) -> tuple[Any, float]:
    start = time.perf_counter()
    table = run_batch(batch)
    return table, time.perf_counter() - start


def _as_error(batch: Batch, exc: BaseException) -> H3PipeError:
    if isinstance(exc, H3PipeError):
        return exc
    return OperationError(f"step '{batch.step_id}' batch {batch.number}: "
                          f"{type(exc).__name__}: {exc}")


def execute(batches: list[Batch], workers: int) -> Iterator[Outcome]:
    if not batches:
        return
    if workers <= 1 or len(batches) == 1:
        yield from _sequential(batches)
        return
    try:
        pickle.dumps(batches[0])
    except Exception as exc:  # a bug of ours, not the user's: say so plainly
        raise OperationError(f"batch of step '{batches[0].step_id}' cannot be sent to a worker "
                             f"process: {exc}") from exc
    yield from _parallel(batches, workers)


def _sequential(batches: list[Batch]) -> Iterator[Outcome]:
    for batch in batches:
        start = time.perf_counter()
        try:
            table = run_batch(batch)
        except Exception as exc:
            yield Outcome(batch, None, _as_error(batch, exc), time.perf_counter() - start)
            return
        yield Outcome(batch, table, None, time.perf_counter() - start)


def _parallel(batches: list[Batch], workers: int) -> Iterator[Outcome]:
    # spawn, not fork: GDAL and DuckDB keep threads and caches that do not survive fork.
    ctx = multiprocessing.get_context("spawn")
    pending = list(reversed(batches))
    running: dict[Future[tuple[Any, float]], Batch] = {}
    failed = False
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        try:
            while pending or running:
                # Keep a short queue per worker: enough to stay busy, small enough that a
                # failure or Ctrl-C does not leave hundreds of batches submitted.
                while pending and not failed and len(running) < workers * 2:
                    batch = pending.pop()
                    running[pool.submit(_timed, batch)] = batch
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    batch = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        failed = True
                        yield Outcome(batch, None, _as_error(batch, exc), 0.0)
                    else:
                        table, seconds = fut.result()
                        yield Outcome(batch, table, None, seconds)
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
