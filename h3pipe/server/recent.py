"""What many requests ask at once, made once: :class:`Once` (the first asker makes it, the
others wait for it) and :class:`Recent` (a value kept for a short time per key, made at
most once per interval). A hundred clients polling one job's status cost the store one
read per interval, not a hundred; many dashboards asking for a map a run has just replaced
cost one reading of the new result."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
V = TypeVar("V")


class Once:
    """What many ask for at once, made once: the first asker makes it and the others wait
    for it (or for its error)."""

    def __init__(self) -> None:
        self._making: dict[Hashable, Future[Any]] = {}
        self._lock = threading.Lock()

    def run(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            making = self._making.get(key)
            mine = making is None
            if making is None:
                making = self._making[key] = Future()
        if not mine:
            return cast(T, making.result())
        try:
            made = make()
        except BaseException as exc:
            making.set_exception(exc)
            raise
        else:
            making.set_result(made)
            return made
        finally:
            with self._lock:
                del self._making[key]


class Recent(Generic[V]):
    def __init__(self, seconds: float, most: int = 1024) -> None:
        self.seconds, self.most = seconds, most
        self._kept: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._once = Once()
        self._lock = threading.Lock()

    def get(self, key: Hashable, read: Callable[[], V]) -> V:
        """``read()``'s value, or one it gave less than ``seconds`` ago; an error is not
        kept (the next caller reads again)."""
        found = self._fresh(key)
        if found is not None:
            return found[1]

        def read_and_keep() -> V:  # unless the asker before this one has just read it
            again = self._fresh(key)
            if again is not None:
                return again[1]
            value = read()
            with self._lock:
                self._kept[key] = (time.monotonic(), value)
                self._kept.move_to_end(key)
                while len(self._kept) > self.most:
                    self._kept.popitem(last=False)
            return value

        return self._once.run(key, read_and_keep)

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
