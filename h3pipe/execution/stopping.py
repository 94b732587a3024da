"""Stopping a run gracefully: :class:`StopRequest` and :func:`graceful`.

The first SIGINT or SIGTERM (or a cancel request read from the catalog) does not raise:
it asks the run to stop taking new tasks and gives the tasks already running a grace
period to finish, so their outputs are kept for the resume. When the grace period runs
out, or a second signal arrives, the stop happens at once, as it would have without a
grace period. Either way the run ends as 'interrupted', never 'completed'.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from h3pipe.errors import Cancelled, Terminated
from h3pipe.spec import DEFAULT_GRACE_SECONDS

_EXCEPTIONS: dict[str, Callable[[], BaseException]] = {
    "SIGINT": KeyboardInterrupt, "SIGTERM": Terminated, "cancel": Cancelled}


class StopRequest:
    """Whether and why the run has been asked to stop, and its grace period."""

    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds
        self.reason: str | None = None  # 'SIGINT', 'SIGTERM' or 'cancel'
        self._timer = False

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def ask(self, reason: str) -> None:
        """Stop taking new tasks; stop outright once the grace period is over (at once when
        there is none, or when this is the second request)."""
        if self.reason is not None or self.grace_seconds <= 0:
            self.reason = self.reason or reason
            raise self.exception()
        self.reason = reason
        if self._timer:
            signal.setitimer(signal.ITIMER_REAL, self.grace_seconds)

    def exception(self) -> BaseException:
        return _EXCEPTIONS[self.reason or "SIGINT"]()

    def check(self) -> None:
        """Raise the stop now, if one was asked for."""
        if self.reason is not None:
            raise self.exception()


@contextmanager
def graceful(stop: StopRequest) -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM go to ``stop.ask``, and the grace period is a timer
    that raises the stop (KeyboardInterrupt or :class:`Terminated`) wherever the run is.
    Outside the main thread signals cannot be caught, and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum: int, frame: Any) -> None:
        stop.ask(signal.Signals(signum).name)

    def on_timer(signum: int, frame: Any) -> None:
        raise stop.exception()

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_timer)
    stop._timer = True
    try:
        yield stop
    finally:
        stop._timer = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in previous.items():
            signal.signal(s, handler)
