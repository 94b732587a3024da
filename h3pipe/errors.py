"""Every error h3pipe raises on purpose derives from :class:`H3PipeError`.

Each class also inherits the builtin it resembles, so callers that catch ``ValueError``
or ``OSError`` keep working. ``exit_code`` is what the CLI exits with; the CLI never
inspects message text.
"""

from __future__ import annotations

from dataclasses import dataclass


class H3PipeError(Exception):
    """Root of h3pipe's errors. ``hint`` says how to fix it, when we know. ``transient``
    errors (network, a server's 5xx) are worth retrying; the others fail at once."""

    exit_code = 1
    transient = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Errors cross process boundaries from workers; keep the hint and extra fields.
        return (_rebuild, (type(self), self.__dict__))

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


def _rebuild(cls: type[H3PipeError], state: dict) -> H3PipeError:  # type: ignore[type-arg]
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ConfigError(H3PipeError, ValueError):
    """Bad configuration or input given by the user: fix the input, not the data."""

    exit_code = 2


class UsageError(ConfigError):
    """A command-line option is malformed or missing."""


class NotFound(ConfigError):
    """What was named (a run, source, pipeline, dataset or job) is not there."""


class NotRunning(ConfigError):
    """A run asked to stop is not running (ended, or its process is gone)."""


class ScopeError(ConfigError):
    """The requested scope (ISO3, bbox, AOI file) cannot be resolved or is empty."""


@dataclass(frozen=True)
class Problem:
    """One finding of validation, located in a file and a path inside the document."""

    file: str
    line: int | None
    path: str
    message: str
    kind: str = "schema"

    def format(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line else self.file
        return f"{loc}: {self.path}: {self.message}" if self.path else f"{loc}: {self.message}"


class ValidationFailed(ConfigError):
    """A project, pipeline or source file is invalid; ``problems`` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0].format() if problems else "invalid configuration"
        more = f" (and {len(problems) - 1} more problem(s); run 'h3pipe validate')" if len(
            problems
        ) > 1 else ""
        super().__init__(first + more)
        self.problems = problems


class Locked(H3PipeError):
    """The same run is being executed by another live process."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class QueueError(H3PipeError, ConnectionError):
    """The queue backend's broker cannot be reached, or a message cannot be sent."""

    exit_code = 69  # EX_UNAVAILABLE: a service is down; the same command works once it is up
    transient = True


class SourceError(H3PipeError, OSError):
    """A data source cannot be opened or read (missing file, corrupt raster, no overlap)."""

    exit_code = 2


class NoDataInScope(SourceError):
    """A source has no pixels in the run's scope (no tile overlaps it, no item intersects
    it): an error for a plain source, a scenario missing there for a sweep."""


class RemoteReadError(SourceError):
    """Reading a remote file failed (HTTP error, timeout): may well work on a retry."""

    exit_code = 1
    transient = True


class StoreError(H3PipeError, OSError):
    """The store (catalog or result files) cannot be read or written."""


class StoreUnavailable(StoreError, ConnectionError):
    """The database store cannot be reached (down, restarting past the retry bound):
    the same command works once it is up; a run it cut short resumes."""

    exit_code = 69  # EX_UNAVAILABLE, as for the queue's broker
    transient = True

    def __init__(self, message: str, *, where: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.where = where


class StoreFull(StoreError):
    """A write to the store failed for lack of space (ENOSPC, SQLite's SQLITE_FULL): what
    was being written is removed, the catalog is as before; read commands still work."""

    exit_code = 74  # EX_IOERR: free space on the store's disk, then run (or resume) again


class OperationError(H3PipeError, RuntimeError):
    """An operation failed while computing a batch."""


class ConservationError(OperationError):
    """An extensive variable's cell sums do not add up to the raster's sum over the cells:
    nothing is published."""


class TooManyNulls(H3PipeError):
    """``run --strict``: a published dataset has more null cells (no valid pixel) than
    ``max_null_share`` allows. Raised after the data is published; it stays published."""

    exit_code = 65  # EX_DATAERR: the run worked, the data does not cover the scope


class MissingExtra(H3PipeError, ImportError):
    """A command needs an optional part of h3pipe that is not installed (the PostgreSQL
    store, the queue, maps, STAC): ``extra`` names what to install, ``what`` what needed
    it, and the CLI adds the command (:meth:`in_command`)."""

    exit_code = 78  # EX_CONFIG: the install lacks a part; pip install 'h3pipe[EXTRA]'

    def __init__(self, extra: str, what: str | None = None) -> None:
        self.extra = extra
        self.what = what
        super().__init__(self._say(None))

    def in_command(self, command: str) -> None:
        """Say which command needed the extra: ``h3pipe map needs the 'report' extra``."""
        self.message = self._say(command)
        self.args = (self.message,)

    def _say(self, command: str | None) -> str:
        who = command or "h3pipe"
        why = f" for {self.what}" if self.what else ""
        return f"{who} needs the '{self.extra}' extra{why}: pip install 'h3pipe[{self.extra}]'"


class RunFailed(H3PipeError):
    """A run ended with a failed task; the run record holds the details."""

    def __init__(self, message: str, *, run_id: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.run_id = run_id


class Cancelled(BaseException):
    """'h3pipe runs cancel' asked this run to stop: unwind like Ctrl-C, exit 130."""


class Terminated(BaseException):
    """SIGTERM arrived (cron's timeout, a service stop): unwind like Ctrl-C, exit 143."""
