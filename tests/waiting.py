"""Waiting in tests: :func:`wait_until`, a condition polled until it holds or a deadline
passes. Never a bare sleep hoping that something has happened by then: a loaded machine
makes such a test fail (too short) or slow (too long); a condition is met as soon as it
holds and fails with what was awaited.
"""

from __future__ import annotations

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
