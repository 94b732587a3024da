"""The ``h3pipe`` command line: one small module per command, all thin.

:func:`main` is the single place where exceptions become exit codes: 0 success, 1 a run
failed or files are invalid, 2 bad configuration, input or usage (and bugs), 78 a part of
the install (an extra) missing, 130 Ctrl-C. Tests call ``main([...])`` in-process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import traceback
from typing import Any

import typer

from h3pipe.cli import app as _app_module
from h3pipe.cli import (  # noqa: F401  (registers the commands)
    clean,
    db,
    export,
    map,
    output,
    plan,
    resume,
    run,
    runs,
    schema,
    serve,
    sources,
    validate,
    worker,
)
from h3pipe.errors import Cancelled, H3PipeError, MissingExtra, Terminated
from h3pipe.masking import scrub

app = _app_module.app


class _NoPandas:
    """An import finder that says pandas is not installed, so that this process runs as a
    core install does. pyarrow asks on its first conversion of anything (a NumPy array,
    a list of strings) whether the object is a pandas Series, and when pandas is
    installed imports all of it to know: 0.3 s of CPU and 140 MB, in a run over a few
    dozen cells a third of its time. The command line hands pyarrow no pandas object and
    uses pandas nowhere (``Project.dataset(as_="pandas")`` is for notebooks)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"h3pipe's command line runs without pandas ({name}): "
                                      "use the Python API for DataFrames", name=name)


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv``; without it, this process's own command line, and then
    the process is the command's: it runs without pandas (:class:`_NoPandas`) and ends
    without Python's teardown (:func:`_end`)."""
    if argv is not None:
        return _run(list(argv))
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    code = _run(sys.argv[1:])
    _end(code)
    return code


def _end(code: int) -> None:
    """End the command's process at once with ``code``, once nothing needs the rest of
    Python's shutdown: the atexit handlers run (pools terminated, spill folders removed),
    the standard streams flushed, and no thread but daemons left to wait for. What the
    shutdown would still do is free every module and object one by one, 0.2 s of CPU
    after a run (a fifth of a small one); the command has closed its stores and files by
    now (a file left open at exit would be a bug: garbage collection closes it at no
    predictable time)."""
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return  # a thread of ours still working: let the shutdown wait for it
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _run(args: list[str]) -> int:
    verbose = "-v" in args or "--verbose" in args
    command = typer.main.get_command(app)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:
        result = command.main(args=args, prog_name="h3pipe", standalone_mode=False)
    except Terminated:
        _err("terminated")
        return 143
    except Cancelled:
        _err("cancelled")
        return 130
    except H3PipeError as exc:
        if verbose:
            _traceback()
        if isinstance(exc, MissingExtra):
            exc.in_command(_command_path(command, args))
        _err(f"error: {exc}")
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _err("interrupted")
        return 130
    except typer.exceptions.TyperException as exc:
        # typer's own (vendored click) usage errors: bad options, missing arguments.
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare 'h3pipe' or 'h3pipe runs'
            _err(message)
            return 2
        _err(f"error: {message}")
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            _err(f"Try '{ctx.command_path} --help' for help.")
        return 2
    except Exception as exc:  # a bug: say so in one line unless asked for the traceback
        if verbose:
            _traceback()
        text = " ".join(str(exc).split())
        _err(f"internal error: {type(exc).__name__}: {text} (rerun with -v for the traceback, "
             "and please report it)")
        return 2
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    if result == 130:  # typer turns Ctrl-C into exit code 130 before we can see it
        _err("interrupted")
    output.reset()
    return int(result or 0)


def _command_path(command: Any, args: list[str]) -> str:
    """The command ``args`` invoke, as a person types it (``h3pipe runs report``): the
    words that name subcommands, past the options (and their values) before them.
    typer's own click is duck-typed: a group has ``commands``, an option ``opts``."""
    words = ["h3pipe"]
    tokens = iter(args)
    for token in tokens:
        if token.startswith("-"):
            name = token.split("=")[0]
            option = next((p for p in command.params if name in getattr(p, "opts", ())), None)
            takes_value = option is not None and not getattr(option, "is_flag", True)
            if takes_value and "=" not in token:
                next(tokens, None)  # its value
            continue
        subcommands = getattr(command, "commands", {})
        if token not in subcommands:
            break
        command = subcommands[token]
        words.append(token)
    return " ".join(words)


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _traceback() -> None:
    """The traceback -v asks for; a library's message in it may quote a password."""
    print(scrub(traceback.format_exc()), end="", file=sys.stderr, flush=True)


def _err(message: str) -> None:
    output.error(message)


__all__ = ["app", "main"]
