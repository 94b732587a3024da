"""The shared loop of the executors (h3pipe/execution/executors/base.py), driven through a
scripted transport: who gets which batch, retries, the first permanent failure, stops and
dead workers; then the in-process executor, which is that loop over this process."""

from __future__ import annotations

import time
from collections import deque

import pyarrow as pa
import pytest

from h3pipe.errors import OperationError, SourceError, Terminated
from h3pipe.execution.executors import Stopping, make_executor
from h3pipe.execution.executors.base import Finished, key_of, run_batches, split
from h3pipe.execution.stopping import StopRequest
from h3pipe.operations import Batch, BatchResult
from h3pipe.spec import Retry


class _Flaky(SourceError):
    transient = True


def _cells(n: int, size: int = 10, step: str = "s") -> list[Batch]:
    return [Batch("r", step, i, "zonal_stats", {}, cells=tuple(f"c{i}-{j}" for j in range(size)))
            for i in range(n)]


def _rows(sizes: list[int]) -> list[Batch]:
    return [Batch("r", "f", i, "h3_assign", {}, rows=pa.table({"x": list(range(n))}))
            for i, n in enumerate(sizes)]


class Scripted:
    """A transport of ``slots`` workers: each runs the first batch it holds when polled
    (round robin), the one behind it is queued; ``errors[(number, attempt)]`` fails an
    attempt; a ``stuck`` worker finishes nothing while another has work, a ``dead`` one
    nothing at all."""

    depth = 2

    def __init__(self, slots: int, errors: dict[tuple[int, int], Exception] | None = None,
                 stuck: int | None = None, dead: int | None = None) -> None:
        self.slots = slots
        self.stuck = stuck
        self.errors = errors or {}
        self.dead = dead
        self.held: list[deque[Batch]] = [deque() for _ in range(slots)]
        self.sent: list[tuple[int, int]] = []  # (worker, batch number), in order
        self.tries: dict[int, int] = {}
        self.turn = 0

    def submit(self, worker: int, batch: Batch) -> None:
        self.held[worker].append(batch)
        self.sent.append((worker, batch.number))

    def take_back(self):
        taken = []
        for held in self.held:
            while len(held) > 1:  # the first one is running
                taken.append(key_of(held.pop()))
        return taken

    def poll(self, timeout: float) -> Finished | None:
        others_busy = any(h for w, h in enumerate(self.held) if w != self.stuck)
        for _ in range(self.slots):
            w, self.turn = self.turn, (self.turn + 1) % self.slots
            if self.held[w] and w != self.dead and not (w == self.stuck and others_busy):
                batch = self.held[w].popleft()
                attempt = self.tries[batch.number] = self.tries.get(batch.number, 0) + 1
                error = self.errors.get((batch.number, attempt))
                if error is not None:
                    return Finished(w, key_of(batch), None, error, 0.0)
                table = pa.table({"n": [batch.number]})
                return Finished(w, key_of(batch), BatchResult(table), None, 0.0)
        return None

    def check(self, running) -> None:
        if self.dead is not None and running.get(self.dead):
            raise OperationError(f"worker {self.dead} died: batch {running[self.dead][0].number}")


def test_row_batches_are_shared_by_rows_not_cells():
    # Row batches carry no cells; their size is their row count: 120 rows, 60 each.
    shares = split(_rows([30, 10, 10, 10, 20, 20, 10, 10]), 2)
    assert [[b.number for b in s] for s in shares] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_each_worker_starts_on_its_own_contiguous_share_then_steals_from_the_far_end():
    t = Scripted(2)
    out = list(run_batches(t, _rows([10] * 6)))
    assert sorted(o.batch.number for o in out) == list(range(6))
    first = {w: [n for v, n in t.sent if v == w][:2] for w in (0, 1)}
    assert first == {0: [0, 1], 1: [3, 4]}
    # Shares of 8 batches, worker 1 stuck: worker 0 does its share, then 1's from the end.
    stuck = Scripted(2, stuck=1)
    list(run_batches(stuck, _cells(8)))
    assert [n for w, n in stuck.sent if w == 0] == [0, 1, 2, 3, 7, 6]
    assert [n for w, n in stuck.sent if w == 1] == [4, 5]


def test_transient_errors_are_retried_as_the_step_says_and_each_attempt_is_yielded():
    t = Scripted(2, errors={(1, 1): _Flaky("503"), (1, 2): _Flaky("503")})
    out = list(run_batches(t, _cells(4), {"s": Retry(retries=2, backoff=0.0)}))
    tries = [(o.attempt, o.retrying, o.error is None) for o in out if o.batch.number == 1]
    assert tries == [(1, True, False), (2, True, False), (3, False, True)]
    assert sorted(o.batch.number for o in out if o.error is None) == [0, 1, 2, 3]


def test_retries_run_out_and_permanent_errors_are_not_retried():
    t = Scripted(1, errors={(0, a): _Flaky("503") for a in (1, 2, 3)})
    out = list(run_batches(t, _cells(1), {"s": Retry(retries=1, backoff=0.0)}))
    assert [(o.attempt, o.retrying) for o in out] == [(1, True), (2, False)]
    t = Scripted(1, errors={(0, 1): SourceError("truncated")})
    out = list(run_batches(t, _cells(1), {"s": Retry(retries=3, backoff=0.0)}))
    assert [(o.attempt, o.retrying) for o in out] == [(1, False)]


def test_nothing_new_is_sent_after_a_permanent_failure_but_running_batches_come_in():
    t = Scripted(2, errors={(0, 1): SourceError("bad")})
    out = list(run_batches(t, _cells(10)))
    # At the failure 4 batches were in flight (2 per worker): 0 failed, 1 was queued
    # behind it; 5 ran on worker 1 and 6 was queued behind it. No more were sent.
    assert sorted(n for _, n in t.sent) == [0, 1, 5, 6]
    assert [o.batch.number for o in out] == [0, 5, 1, 6]
    assert [o.error is not None for o in out] == [True, False, False, False]


def test_a_stop_takes_back_queued_batches_lets_running_ones_finish_then_raises():
    t = Scripted(2)
    stop = StopRequest(grace_seconds=30)
    seen = []
    with pytest.raises(Terminated):
        for item in run_batches(t, _cells(10), stop=stop):
            seen.append(item)
            if len(seen) == 1:
                stop.ask("SIGTERM")  # the first result in: one running on each worker
    assert seen[1] == Stopping(running=2)
    assert [type(x).__name__ for x in seen] == ["Outcome", "Stopping", "Outcome", "Outcome"]
    # 0 done before the stop; 1 (queued behind 0, so running now) and 5 were running;
    # 6, queued behind 5, was taken back and never ran.
    assert [x.batch.number for x in seen if not isinstance(x, Stopping)] == [0, 5, 1]
    assert 6 not in t.tries


def test_a_dead_worker_fails_the_run_naming_its_batch():
    t = Scripted(2, dead=1)
    with pytest.raises(OperationError, match="worker 1 died: batch 2"):
        list(run_batches(t, _cells(4)))


def test_the_in_process_executor_runs_retries_and_stops_between_batches(monkeypatch):
    import h3pipe.execution.executors.base as base

    ran: list[int] = []
    failures = {1: 1}  # batch 1 fails once, transiently

    def run_batch(batch: Batch) -> BatchResult:
        ran.append(batch.number)
        if failures.get(batch.number):
            failures[batch.number] -= 1
            raise _Flaky("503")
        return BatchResult(pa.table({"n": [batch.number]}))

    monkeypatch.setattr(base, "run_batch", run_batch)
    with make_executor(1) as ex:
        assert ex.workers == 1
        out = list(ex.run(_cells(3), {"s": Retry(retries=1, backoff=0.0)}))
        # No backoff: the retry is due at once, and due retries go first.
        assert [(o.batch.number, o.retrying) for o in out] == [
            (0, False), (1, True), (1, False), (2, False)]
        stop, seen = StopRequest(grace_seconds=30), []
        ran.clear()
        with pytest.raises(KeyboardInterrupt):
            for item in ex.run(_cells(3), stop=stop):
                seen.append(item)
                stop.ask("SIGINT")
        # Nothing was running when the stop was seen: no Stopping, and no second batch.
        assert ran == [0] and len(seen) == 1


def test_a_python_error_in_a_batch_becomes_an_operation_error_naming_it(monkeypatch):
    import h3pipe.execution.executors.base as base

    def run_batch(batch: Batch) -> BatchResult:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(base, "run_batch", run_batch)
    with make_executor(1) as ex:
        (out,) = list(ex.run(_cells(1, step="zs")))
    assert isinstance(out.error, OperationError)
    assert str(out.error) == "step 'zs' batch 0: ZeroDivisionError: division by zero"


@pytest.mark.parametrize("attempt, low", [(1, 0.4), (2, 0.8), (3, 1.6)])
def test_retry_waits_double_with_up_to_half_again_of_jitter(attempt, low):
    delays = [Retry(retries=3, backoff=0.4).delay(attempt) for _ in range(200)]
    assert low <= min(delays) and max(delays) <= low * 1.5
    assert max(delays) - min(delays) > 0  # jittered


def test_in_process_the_operations_warm_up_before_the_first_batch_and_off_its_clock(
        monkeypatch):
    import h3pipe.execution.executors.base as base
    import h3pipe.execution.executors.sequential as sequential

    events: list[str] = []
    monkeypatch.setattr(sequential, "warm_up", lambda names: (
        events.append(f"warm {sorted(names)}"), time.sleep(0.3)))

    def run_batch(batch: Batch) -> BatchResult:
        events.append(f"batch {batch.number}")
        return BatchResult(pa.table({"n": [batch.number]}))

    monkeypatch.setattr(base, "run_batch", run_batch)
    with make_executor(1) as ex:
        out = list(ex.run([*_cells(1), *_rows([3])]))
    # Once per stage, for the operations its batches run, as a worker does at its start:
    # the load is not counted in any task's seconds (what plan's rates are made of).
    assert events == ["warm ['h3_assign', 'zonal_stats']", "batch 0", "batch 0"]
    assert all(o.seconds < 0.3 for o in out)
