"""What the runner sees of an executor (:class:`Executor`), what an executor needs from a
place that computes batches (:class:`Transport`), and the one loop between them
(:func:`run_batches`).

The loop owns every decision that does not depend on where batches run, so each backend
writes only its transport: which worker gets which batch (contiguous shares of the
spatially ordered batches, stolen from the far end of the longest share when a worker runs
dry), the per-step retry of transient errors with backoff and jitter, no new batch after
the first permanent failure, and stopping (see :mod:`h3pipe.execution.stopping`): on a stop
request the batches sent but not started are taken back, :class:`Stopping` is yielded
once, the running ones are still collected, and then the stop is raised. The grace period
is the :class:`~h3pipe.execution.stopping.StopRequest`'s own timer; nothing here waits on it.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, Self

from h3pipe.errors import H3PipeError, OperationError
from h3pipe.execution.stopping import StopRequest
from h3pipe.operations import Batch, BatchResult, run_batch
from h3pipe.planning.feeds import fed, trimmed
from h3pipe.spec import Retry

if TYPE_CHECKING:
    import pyarrow as pa

# How long the loop waits for a result before it looks again at stops, retries and the
# workers' liveness.
POLL_SECONDS = 0.1

BatchKey = tuple[str, int]  # (step id, batch number): unique within a stage


def key_of(batch: Batch) -> BatchKey:
    return (batch.step_id, batch.number)


@dataclass(frozen=True)
class Outcome:
    """One attempt at a batch: its table, or the error it ended with; which worker slot
    made it, named as the catalog records it, and when (epoch seconds) it started."""

    batch: Batch
    table: pa.Table | None
    error: H3PipeError | None
    seconds: float
    attempt: int = 1
    retrying: bool = False  # the error was transient: the batch runs again
    tile_seconds: dict[str, float] | None = None  # time spent reading each raster tile
    worker: int = 0
    started: float | None = None
    worker_name: str | None = None  # the transport's name for ``worker`` ('main', 'w2')


@dataclass(frozen=True)
class Stopping:
    """Yielded once when a requested stop is first seen: ``running`` batches are finishing."""

    running: int


_NO_RETRY = Retry(0, 0.0)


@dataclass(frozen=True)
class Finished:
    """A batch back from a worker: its result, or the error it raised; ``started`` is the
    attempt's wall-clock start (epoch seconds, for a timeline; ``seconds`` is measured
    on a monotonic clock)."""

    worker: int
    key: BatchKey
    result: BatchResult | None
    error: H3PipeError | None
    seconds: float
    started: float | None = None


def compute(worker: int, batch: Batch,
            passthrough: tuple[type[BaseException], ...] = ()) -> Finished:
    """Run one batch where this is called (a worker process, or the run's own); errors of
    the ``passthrough`` types are raised, not returned (a queue task's time limit)."""
    started, start = time.time(), time.perf_counter()
    try:
        result = trimmed(run_batch(fed(batch)), batch.drop)
    except passthrough:
        raise
    except Exception as exc:
        return Finished(worker, key_of(batch), None, as_error(batch, exc),
                        time.perf_counter() - start, started)
    return Finished(worker, key_of(batch), result, None, time.perf_counter() - start, started)


def as_error(batch: Batch, exc: BaseException) -> H3PipeError:
    if isinstance(exc, H3PipeError):
        return exc
    return OperationError(f"step '{batch.step_id}' batch {batch.number}: "
                          f"{type(exc).__name__}: {exc}")


class Transport(Protocol):
    """Where batches are computed: ``slots`` workers, each given up to ``depth`` batches at
    a time (so none waits on the loop between two). Whether a worker is alive, and how
    that is known, is the transport's business."""

    @property
    def slots(self) -> int: ...

    @property
    def depth(self) -> int: ...

    def submit(self, worker: int, batch: Batch) -> None:
        """Send ``batch`` to ``worker``; it must not block on the worker being busy."""

    def take_back(self) -> list[BatchKey]:
        """Withdraw the batches submitted but not started, and say which they were."""

    def poll(self, timeout: float) -> Finished | None:
        """The next finished batch, or None if none finished within ``timeout`` seconds."""

    def check(self, running: Mapping[int, Sequence[Batch]]) -> None:
        """Raise :class:`~h3pipe.errors.OperationError`, naming the worker, step and batch,
        if a worker holding ``running[worker]`` batches is gone and will not deliver."""

    def worker_name(self, worker: int) -> str:
        """What the catalog calls slot ``worker`` (a row of a run's timeline)."""


class Executor(Protocol):
    """What the runner uses: ``with make_executor(n) as ex: for o in ex.run(...)``."""

    @property
    def workers(self) -> int: ...

    def run(self, batches: Sequence[Batch], retry: Mapping[str, Retry] | None = None,
            stop: StopRequest | None = None) -> Iterator[Outcome | Stopping]:
        """Outcomes as batches finish, and :class:`Stopping` once if a stop is requested
        (then the stop is raised once the running batches are in)."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class TransportExecutor:
    """The executors' template (Kedro's ``AbstractRunner``): the shared loop over the
    transport that a subclass gives for a stage's batches."""

    workers = 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the workers; nothing by default."""

    def run(self, batches: Sequence[Batch], retry: Mapping[str, Retry] | None = None,
            stop: StopRequest | None = None) -> Iterator[Outcome | Stopping]:
        if not batches:
            return
        transport = self.transport(batches)
        # The loop knows slots only; which process a slot is, the transport says (a pool
        # may run a lone batch in this process).
        for o in run_batches(transport, batches, retry, stop):
            yield o if isinstance(o, Stopping) else replace(
                o, worker_name=transport.worker_name(o.worker))

    def transport(self, batches: Sequence[Batch]) -> Transport:
        raise NotImplementedError


def drain(queues: Iterable[Any]) -> list[BatchKey]:
    """The keys of the batches still waiting in ``queues`` (thread or process task queues),
    taken out of them; the end marker None is dropped."""
    taken = []
    for tasks in queues:
        while True:
            try:
                batch = tasks.get_nowait()
            except queue.Empty:
                break
            if batch is not None:
                taken.append(key_of(batch))
    return taken


class _Closable(Transport, Protocol):
    def close(self) -> None: ...


class PoolOfItsOwn(TransportExecutor):
    """An executor whose transport it starts itself, at once (``start``), and ends when it
    closes: the worker processes' and the worker threads'."""

    def __init__(self, workers: int, warm: Iterable[str] | None = None) -> None:
        self.workers = max(1, workers)
        self._pool: _Closable | None = self.start(self.workers, warm)

    def start(self, workers: int, warm: Iterable[str] | None) -> _Closable:
        raise NotImplementedError

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def pool(self) -> Transport:
        """The transport, while the executor is open."""
        if self._pool is None:
            raise OperationError("the executor is closed")  # a bug of ours
        return self._pool


def run_batches(transport: Transport, batches: Sequence[Batch],
                retry: Mapping[str, Retry] | None = None, stop: StopRequest | None = None
                ) -> Iterator[Outcome | Stopping]:
    """The loop: feed ``transport`` the batches, retry, stop; yield what comes back."""
    stop = stop or StopRequest()
    loop = _Loop(transport, batches, retry or {})
    withdrawn = False
    checked = time.monotonic()
    while True:
        if stop.requested and not withdrawn:
            withdrawn = True
            loop.take_back()
            # Nothing running (one in-process worker, between batches): no one to wait for.
            if loop.running:
                yield Stopping(loop.running)
        if stop.requested and not loop.running:
            raise stop.exception()
        if not stop.requested:
            loop.fill()
        if not loop.running:
            if loop.wait_for_retry():
                continue
            return
        if time.monotonic() - checked > POLL_SECONDS:
            # On a clock, not only when results stop coming: the other workers may keep
            # delivering for minutes while a dead one's batches never return.
            checked = time.monotonic()
            transport.check(loop.held())
        done = transport.poll(POLL_SECONDS)
        if done is not None:
            yield loop.settle(done)


class _Loop:
    """The loop's state: who holds what, what waits for a retry, and whether a batch has
    failed for good (then nothing new is sent)."""

    def __init__(self, transport: Transport, batches: Sequence[Batch],
                 retry: Mapping[str, Retry]) -> None:
        self.transport = transport
        self.retry = retry
        self.shares = split(batches, transport.slots)
        self.in_flight: dict[int, dict[BatchKey, Batch]] = {
            w: {} for w in range(transport.slots)}
        self.attempts: dict[BatchKey, int] = {}
        self.later: list[tuple[float, int, Batch]] = []  # (when, tie-breaker, batch)
        self._order = itertools.count()  # batches of two steps may share a number
        self.failed = False

    @property
    def running(self) -> int:
        return sum(len(held) for held in self.in_flight.values())

    def held(self) -> dict[int, list[Batch]]:
        return {w: list(held.values()) for w, held in self.in_flight.items()}

    def fill(self) -> None:
        """Top every worker up to the transport's depth: due retries first."""
        for w, held in self.in_flight.items():
            while not self.failed and len(held) < self.transport.depth:
                batch = self._next(w)
                if batch is None:
                    break
                held[key_of(batch)] = batch
                self.transport.submit(w, batch)

    def _next(self, worker: int) -> Batch | None:
        if self.later and self.later[0][0] <= time.monotonic():
            return heapq.heappop(self.later)[2]
        return next_for(worker, self.shares)

    def wait_for_retry(self) -> bool:
        """Sleep (a little) towards the next retry; False when there is none to wait for."""
        if not self.later or self.failed:
            return False
        time.sleep(min(POLL_SECONDS, max(0.0, self.later[0][0] - time.monotonic())))
        return True

    def take_back(self) -> None:
        for step_id, number in self.transport.take_back():
            for held in self.in_flight.values():
                held.pop((step_id, number), None)

    def settle(self, done: Finished) -> Outcome:
        """The outcome of a finished attempt; a transient failure is scheduled again."""
        batch = self.in_flight[done.worker].pop(done.key)
        attempt = self.attempts.get(done.key, 1)
        if done.error is None:
            assert done.result is not None  # a worker sends a result or an error
            return Outcome(batch, done.result.table, None, done.seconds, attempt,
                           tile_seconds=done.result.tile_seconds, worker=done.worker,
                           started=done.started)
        policy = self.retry.get(batch.step_id, _NO_RETRY)
        if done.error.transient and attempt <= policy.retries and not self.failed:
            self.attempts[done.key] = attempt + 1
            heapq.heappush(self.later, (time.monotonic() + policy.delay(attempt),
                                        next(self._order), batch))
            return Outcome(batch, None, done.error, done.seconds, attempt, retrying=True,
                           worker=done.worker, started=done.started)
        self.failed = True
        return Outcome(batch, None, done.error, done.seconds, attempt, worker=done.worker,
                       started=done.started)


def split(batches: Sequence[Batch], n: int) -> list[deque[Batch]]:
    """``n`` contiguous shares of the batches with about the same size (cells or rows)."""
    total = sum(b.size for b in batches)
    shares: list[deque[Batch]] = [deque() for _ in range(n)]
    seen = 0
    for b in batches:
        shares[min(n - 1, seen * n // max(total, 1))].append(b)
        seen += b.size
    return shares


def next_for(worker: int, shares: list[deque[Batch]]) -> Batch | None:
    if shares[worker]:
        return shares[worker].popleft()
    # Steal from the end of the longest share: the batches farthest from its owner's
    # current position, so both keep reading neighbouring windows.
    victim = max(shares, key=len)
    return victim.pop() if victim else None
