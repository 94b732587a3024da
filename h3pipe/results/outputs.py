"""Files a command writes where the user said (``export -o``, ``map -o``, ``runs report
-o``): :func:`target` checks the path and follows a symlink, :func:`atomic` writes beside
it and renames, :func:`sweep` removes what interrupted writes left.

A target must be a regular file or not exist yet: a device, FIFO, socket or folder is
refused, since renaming over it would replace it (as root, ``-o /dev/null`` once replaced
the device). A symlink is written through: the file it points to is replaced, in that
file's folder, and the link stays. ``-`` is standard output, for formats that stream.

Temporary files are named ``.<name>.h3pipe-tmp-<pid>-<random>``; one whose process is
gone (a SIGKILLed export) is removed by the next write to that folder and by
``h3pipe clean``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from h3pipe.errors import ConfigError, UsageError
from h3pipe.storage.holders import pid_alive

STDOUT = "-"
TMP_MARK = ".h3pipe-tmp-"
_TMP_NAME = re.compile(r"^\..+" + re.escape(TMP_MARK) + r"(\d+)-[0-9a-f]+")
# GDAL's companions of a GeoPackage (SQLite) being written.
_JOURNALS = ("-journal", "-wal", "-shm")


# The folder name of a partitioned export's parts: h3_parent=<cell>.
PARTITION_KEY = "h3_parent"

def is_stdout(out: Path | str) -> bool:
    return str(out) == STDOUT


def target(out: Path | str, *, folder: bool = False) -> Path:
    """The file to write for the output path ``out``: a symlink's target, checked to be a
    regular file or nothing yet (a folder too when ``folder``); a :class:`UsageError` or
    :class:`ConfigError` (exit 2) otherwise."""
    if not str(out).strip():
        raise UsageError("-o/--output is empty: give the file to write")
    path = Path(out).expanduser()
    real = path.resolve() if path.is_symlink() else path
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc
    kind = _kind(mode)
    if kind == "folder" and folder:
        return real
    if kind:
        raise ConfigError(f"cannot write {path}: it is a {kind}, not a file",
                          hint="give the path of a file to create or replace")
    return real


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def describe(out: Path | str) -> str:
    """How to name the output path in a message: ``-`` as standard output, a symlink with
    the file written through it."""
    if is_stdout(out):
        return "standard output"
    path = Path(out).expanduser()
    return f"{path} (through the symlink, to {path.resolve()})" if path.is_symlink() else str(
        path)


def temporary(out: Path, ending: str = "") -> Path:
    """A recognisable temporary path beside ``out``."""
    return out.with_name(f".{out.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{ending}")


def atomic(out: Path, write_to: Callable[[Path], object], *, ending: str = "",
           folder: bool = False) -> None:
    """Run ``write_to`` on a temporary path beside ``out`` (a folder when ``folder``), then
    rename it to ``out``; on any failure remove it and leave ``out`` as it was. Stale
    temporary files of that folder go first."""
    tmp = temporary(out, ending)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep(out.parent)
    try:
        if folder:
            tmp.mkdir()
        write_to(tmp)
        if folder:
            _replace_folder(tmp, out)
        else:
            os.replace(tmp, out)
    except BaseException:
        remove(tmp)
        raise


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the folder ``tmp`` to ``out``, replacing an earlier partitioned export there,
    and nothing else: a folder holding other files is the user's, not ours to delete."""
    if not out.exists():
        os.replace(tmp, out)
        return
    if not out.is_dir() or any(not (p.is_dir() and p.name.startswith(f"{PARTITION_KEY}="))
                               for p in out.iterdir()):
        raise ConfigError(f"cannot write {out}: it exists and is not an earlier partitioned "
                          "export", hint="give a new folder, or remove it first")
    old = temporary(out, ".old")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def remove(path: Path) -> None:
    """Remove a temporary output (file or folder) and the journals GDAL may leave beside."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        for leftover in (path, *(path.with_name(path.name + e) for e in _JOURNALS)):
            leftover.unlink(missing_ok=True)


def stale(folder: Path) -> Iterator[Path]:
    """Temporary outputs in ``folder`` whose writing process is gone (on this host)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        found = _TMP_NAME.match(name)
        if found and not pid_alive(int(found.group(1))):
            yield folder / name


def sweep(folder: Path, *, dry_run: bool = False) -> list[Path]:
    """Remove (or with ``dry_run`` only list) the stale temporary outputs of ``folder``."""
    gone = sorted(stale(folder))
    if not dry_run:
        for path in gone:
            remove(path)
    return gone


def sweep_tree(root: Path, *, dry_run: bool = False) -> list[Path]:
    """:func:`sweep` ``root`` and its folders, except hidden ones (the store, .git)."""
    gone: list[Path] = []
    for here, dirs, _ in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        gone += sweep(Path(here), dry_run=dry_run)
    return gone


__all__ = ["STDOUT", "TMP_MARK", "atomic", "describe", "is_stdout", "remove", "stale",
           "sweep", "sweep_tree", "target", "temporary"]
