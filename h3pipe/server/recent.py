"""What many requests ask at once, read once: :class:`Recent`, values kept for a short
time per key and shared by concurrent callers (one reads, the others wait for its value).
A hundred clients polling one job's status cost the store one read per interval, not a
hundred."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Recent(Generic[V]):
    def __init__(self, seconds: float, most: int = 1024) -> None:
        self.seconds, self.most = seconds, most
        self._kept: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._reading: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, read: Callable[[], V]) -> V:
        """``read()``'s value, or one it gave less than ``seconds`` ago; an error is not
        kept (the next caller reads again)."""
        found = self._fresh(key)
        if found is not None:
            return found[1]
        with self._lock:
            reading = self._reading.setdefault(key, threading.Lock())
        with reading:  # one caller reads; the others find its value when it is done
            found = self._fresh(key)
            if found is not None:
                return found[1]
            value = read()
            with self._lock:
                self._kept[key] = (time.monotonic(), value)
                self._kept.move_to_end(key)
                while len(self._kept) > self.most:
                    self._kept.popitem(last=False)
                self._reading.pop(key, None)
            return value

    def forget(self, key: Hashable) -> None:
        """Read ``key`` again next time (it is known to have changed)."""
        with self._lock:
            self._kept.pop(key, None)

    def _fresh(self, key: Hashable) -> tuple[float, V] | None:
        with self._lock:
            found = self._kept.get(key)
        if found is not None and time.monotonic() - found[0] < self.seconds:
            return found
        return None
