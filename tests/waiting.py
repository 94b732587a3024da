"""Waiting in tests: :func:`wait_until`, a condition polled until it holds or a deadline
passes. Never a bare sleep hoping that something has happened by then: a loaded machine
makes such a test fail (too short) or slow (too long); a condition is met as soon as it
holds and fails with what was awaited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, *,
               every: float = 0.05) -> T:
    """``condition()``'s first truthy value, asked every ``every`` seconds; AssertionError
    naming ``what`` if none comes within ``timeout`` seconds. An exception from
    ``condition`` propagates (ask for what may legitimately be missing without raising)."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}, in vain")
        time.sleep(every)


def within(timeout: float, what: str, call: Callable[[], T]) -> T:
    """``call()``'s result if it comes within ``timeout`` seconds, else AssertionError
    naming ``what``; for a call that blocks with no deadline of its own (a pipe's
    readline). It runs on a daemon thread, left blocked if it never returns (end its
    source, a process, to free it); its exception is raised here."""
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(call())
        except BaseException as exc:  # handed to the caller
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if failed:
        raise failed[0]
    if not done:
        raise AssertionError(f"waited {timeout:g} s for {what}, in vain")
    return done[0]
