"""Where the CLI's words go: the terminal, and with ``--log-file`` a log too; ``--quiet``
keeps the terminal for errors only, so a cron line needs no wrapper script. Every line
passes :func:`h3pipe.masking.scrub` on its way out: no password reaches either."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from h3pipe.errors import UsageError
from h3pipe.masking import scrub

if TYPE_CHECKING:
    from h3pipe.api import Coverage

_quiet = False
_log: TextIO | None = None


def configure(*, quiet: bool = False, log_file: Path | None = None) -> None:
    global _quiet, _log
    _quiet = quiet
    if _log is not None:
        _log.close()
        _log = None
    if log_file is not None:
        _log = _open_log(log_file)


def _open_log(path: Path) -> TextIO:
    """The log, appended to. A missing folder is more likely a typo than a wish: say so
    rather than create it (a cron line run as root would make folders anywhere)."""
    if not path.parent.is_dir():
        raise UsageError(f"--log-file {path}: the folder {path.parent} does not exist",
                         hint="create it first, or give a file in an existing folder")
    try:
        return path.open("a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise UsageError(f"--log-file {path}: cannot append to it ({exc.strerror})",
                         hint="give a file this user may write") from None


def reset() -> None:
    configure()


def _to_log(text: str) -> None:
    if _log is not None:
        text = scrub(text)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        for line in text.splitlines() or [""]:
            _log.write(f"{stamp} {line}\n")


def say(text: str) -> None:
    """A result line: stdout, unless quiet; always the log."""
    _to_log(text)
    if not _quiet:
        print(scrub(text), file=sys.stdout, flush=True)


def info(text: str, *, stamped: bool = False) -> None:
    """Progress and notes: stderr (timestamped when ``stamped``), unless quiet; always the
    log."""
    _to_log(text)
    if not _quiet:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}" if stamped else text
        print(scrub(line), file=sys.stderr, flush=True)


def warn(text: str) -> None:
    """A warning: one yellow line on stderr (plain when it is not a terminal), unless
    quiet; always the log."""
    _to_log(f"warning: {text}")
    if not _quiet:
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"warning: {scrub(text)}", style="yellow", markup=False)


def coverage(found: Coverage | None) -> None:
    """What a finished run's rasters covered of its scope: a line per source that misses
    part of it, and a warning per published dataset with too many null cells."""
    if found is None:
        return
    for line in found.notes():
        say(f"coverage: {line}")
    for line in found.warnings():
        warn(line)


def error(text: str) -> None:
    """Errors: always stderr, and the log."""
    _to_log(text)
    print(scrub(text), file=sys.stderr, flush=True)


def quiet() -> bool:
    return _quiet


def logging_to_file() -> bool:
    return _log is not None
