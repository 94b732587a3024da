"""Recent: one read per key per interval, shared by concurrent callers; errors not kept;
forget() reads again at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from h3pipe.server.recent import Recent


def test_concurrent_callers_share_one_read():
    reads = []
    release = threading.Event()

    def read() -> int:
        reads.append(1)
        release.wait(5)  # every caller arrives while the first one is reading
        return 42

    recent: Recent[int] = Recent(60)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(recent.get, "job", read) for _ in range(16)]
        deadline = time.monotonic() + 5
        while not reads and time.monotonic() < deadline:
            time.sleep(0.001)
        release.set()
        assert [f.result() for f in futures] == [42] * 16
    assert len(reads) == 1


def test_a_value_is_read_again_once_old_or_forgotten():
    clock = iter(range(100))
    recent: Recent[int] = Recent(seconds=0.05)
    first = recent.get("k", lambda: next(clock))
    assert recent.get("k", lambda: next(clock)) == first  # fresh
    recent.forget("k")
    second = recent.get("k", lambda: next(clock))
    assert second != first
    time.sleep(0.06)  # past the interval: a clock, not a hope
    assert recent.get("k", lambda: next(clock)) != second


def test_an_error_is_not_kept_and_the_oldest_key_goes_first():
    recent: Recent[str] = Recent(60, most=2)

    def fail() -> str:
        raise LookupError("no run")

    with pytest.raises(LookupError):
        recent.get("gone", fail)
    assert recent.get("gone", lambda: "now there") == "now there"
    recent.get("b", lambda: "b")
    recent.get("c", lambda: "c")  # 'gone' is the oldest of three: dropped
    assert recent.get("gone", lambda: "read again") == "read again"
