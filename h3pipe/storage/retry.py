"""Database blips absorbed: :func:`retrying` runs one unit of work on the PostgreSQL store
again, with exponential backoff and jitter, while the server restarts or fails over, for at
most :func:`bound` seconds (``H3PIPE_STORE_RETRY_SECONDS``, default 60).

A unit is a whole method of the catalog, the run log, the queue log or the store (one or a
few transactions, written to be safe to run again: task outputs replace their own rows in
the transaction that writes them, state changes are updates, inserts keep existing rows).
Units nest (a run log method calls the catalog's): only the outermost one retries, so a
transaction cut by a restart is run again whole, never continued half way.

Only faults of the connection are retried: the connection lost or refused, the server
"starting up" or "shutting down", an administrator's termination (SQLSTATE classes 08 and
57P0x), and serialization failures or deadlocks; a bad statement or a full disk fails at
once. Past the bound, :class:`~h3pipe.errors.StoreUnavailable` names the store.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from h3pipe.errors import ConfigError, StoreUnavailable

DEFAULT_SECONDS = 60.0
SETTING = "H3PIPE_STORE_RETRY_SECONDS"
FIRST_PAUSE_S, LONGEST_PAUSE_S = 0.2, 5.0
# Connection exceptions, and admin shutdown, crash shutdown, cannot connect now; a
# serialization failure or deadlock is worth running again too.
_TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01")

log = logging.getLogger(__name__)
T = TypeVar("T")
_inside = threading.local()


def bound() -> float:
    """Seconds a unit of work is tried for, from ``H3PIPE_STORE_RETRY_SECONDS``."""
    given = os.environ.get(SETTING, "").strip()
    if not given:
        return DEFAULT_SECONDS
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{SETTING}={given!r} is not a number of seconds",
                          hint=f"set it to 0 or more (default {DEFAULT_SECONDS:g})")
    return seconds


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a fault of the database connection."""
    dbapi_error = _driver("sqlalchemy.exc", "DBAPIError")
    seen: BaseException | None = exc
    while seen is not None:
        if dbapi_error and isinstance(seen, dbapi_error) and seen.connection_invalidated:
            return True
        if _driver_fault(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _driver(module: str, name: str) -> Any:
    """``module.name`` if ``module`` has been imported, else None. An exception of a
    library never imported cannot have been raised: the SQLite catalog asks without
    paying SQLAlchemy's import (0.3 s) or needing the 'postgres' extra installed."""
    found = sys.modules.get(module)
    return getattr(found, name) if found is not None else None


def _driver_fault(exc: BaseException) -> bool:
    psycopg = sys.modules.get("psycopg")  # see _driver
    if psycopg is None or not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = exc.sqlstate
    # No SQLSTATE: the client's own report (connection refused, closed, lost).
    return state is None or state.startswith(_TRANSIENT_STATES)


@contextmanager
def once() -> Iterator[None]:
    """Units started in this block are tried once (a heartbeat, a failing run's last
    records): their caller has its own answer to a fault."""
    before = getattr(_inside, "active", False)
    _inside.active = True
    try:
        yield
    finally:
        _inside.active = before


def retrying(work: Callable[[], T], where: str, lost: Callable[[], None] | None = None,
             seconds: float | None = None) -> T:
    """``work()``, run again while it fails with a connection fault, for at most
    ``seconds`` (:func:`bound`); ``lost`` is called after each fault (to drop pooled
    connections). Inside another unit, or :func:`once`, it runs once."""
    if getattr(_inside, "active", False):
        return work()
    limit = bound() if seconds is None else seconds
    deadline = time.monotonic() + limit
    pause, faults = FIRST_PAUSE_S, 0
    with once():
        while True:
            try:
                return work()
            except Exception as exc:
                if not transient(exc):
                    raise
                faults += 1
                if lost is not None:
                    lost()
                if time.monotonic() + pause > deadline:
                    raise StoreUnavailable(
                        f"the database store at {where} cannot be reached: {_reason(exc)} "
                        f"(tried {faults} time(s) over {limit:g} s)", where=where,
                        hint=f"check that the database is up; {SETTING} sets how long "
                        "h3pipe waits for it") from exc
                log.warning("store %s: %s; trying again in %.1f s", where, _reason(exc), pause)
                time.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(pause * 2, LONGEST_PAUSE_S)


def retried(cls: type[T]) -> type[T]:
    """Every public method of ``cls`` a unit of :func:`retrying` (its instances reach
    their catalog as ``self.catalog``, or are one)."""
    for name, method in list(vars(cls).items()):
        if (name.startswith("_") or name == "close" or not callable(method)
                or isinstance(method, staticmethod | classmethod)):
            continue
        setattr(cls, name, unit(method))
    return cls


def unit(method: Callable[..., Any]) -> Callable[..., Any]:
    """One method a unit of :func:`retrying` (see :func:`retried`)."""

    @functools.wraps(method)
    def again(self: Any, *args: Any, **kwargs: Any) -> Any:
        catalog = getattr(self, "catalog", self)
        if getattr(catalog, "dialect", "") != "postgresql":
            return method(self, *args, **kwargs)
        return retrying(lambda: method(self, *args, **kwargs), catalog.where, catalog.lost)

    return again


def _reason(exc: BaseException) -> str:
    """What the driver said (its first line), rather than what wrapped it."""
    driver_error = _driver("psycopg", "Error") or ()
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, driver_error):
        seen = seen.__cause__ or seen.__context__
    text = str(seen or exc).strip().splitlines()
    return " ".join((text[0] if text else type(exc).__name__).split())[:200]
