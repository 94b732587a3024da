"""A full disk told apart from other write failures: :func:`is_full` and :func:`store_error`,
which turns a failed write into :class:`~h3pipe.errors.StoreFull` when space ran out.

The operating system says ENOSPC (or EDQUOT, a quota), SQLite says SQLITE_FULL; but SQLite
reports a shared-memory file it could not grow (its ``-shm``, for WAL) as a plain I/O
error, and DuckDB's errors carry no errno. For those, the disk's free space decides.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from h3pipe.errors import StoreError, StoreFull

# Below this much free space, an I/O error without an errno is taken as a full disk.
LOW_BYTES = 1 << 20
_SQLITE_FULL, _SQLITE_IOERR = 13, 10
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int | None:
    """Bytes this process may still write on ``path``'s file system (root may use the
    reserved blocks too); None when ``path`` and its parents cannot be examined."""
    for where in (path, *path.parents):
        try:
            st = os.statvfs(where)
        except OSError:
            continue
        blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
        return blocks * st.f_frsize
    return None


def low(path: Path) -> bool:
    """Whether ``path``'s file system has under :data:`LOW_BYTES` free."""
    free = free_bytes(path)
    return free is not None and free < LOW_BYTES


def is_full(exc: BaseException, path: Path) -> bool:
    """Whether ``exc`` (or what caused it), raised writing under ``path``, means the disk
    is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, StoreFull):
            return True
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return True
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", 0) & 0xFF
            if code == _SQLITE_FULL or (code == _SQLITE_IOERR and low(path)):
                return True
        if type(seen).__module__.startswith(("duckdb", "_duckdb")) and low(path):
            return True
        if isinstance(seen, OSError) and seen.errno is None and low(path):
            return True  # pyarrow's IOError: the errno is in the message only
        seen = seen.__cause__ or seen.__context__
    return False


def no_space(store: Path) -> StoreFull:
    return StoreFull(f"no space left on the store's disk ({store})",
                     hint="free some space there, then run (or resume) again; 'runs', "
                     "'export' and 'map' still work meanwhile")


def store_error(exc: BaseException, store: Path, message: str) -> StoreError:
    """What to raise for ``exc``, a failed write under the store folder ``store``:
    :func:`no_space` when the disk is full, else a :class:`StoreError` saying ``message``."""
    if is_full(exc, store):
        return no_space(store)
    return StoreError(f"{message}: {exc}")


__all__ = ["LOW_BYTES", "free_bytes", "is_full", "low", "no_space", "store_error"]
