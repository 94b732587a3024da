"""Fault injection for the crash and stop tests: :func:`point` marks a moment of a run.

``H3PIPE_FAULTS`` lists what happens at which point, comma-separated:

- ``NAME:kill@N`` -- the process kills itself with SIGKILL the Nth time it reaches NAME
  (counted per process), as a power cut or the OOM killer would;
- ``NAME:sleep=S`` -- it pauses S seconds there each time (a slow task, a slow write);
- ``NAME:busy=S`` -- it says so on stderr, then computes for about S seconds in one C
  call each time, where no signal handler runs (a long GDAL read);
- ``NAME:fail@N`` -- the Nth time, it raises a permanent error (a step that fails).

The points are declared once, in :data:`POINTS`. Unset, as it always is outside tests, a
point costs one dictionary lookup and one set lookup.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from h3pipe.errors import ConfigError, OperationError

POINTS: dict[str, str] = {
    "batch": "a worker starts a batch (of any step)",
    "write-partial": "a task's output or a result is half written",
    "task-output-written": "a task's output is written, not yet recorded",
    "task-recorded": "a task is recorded as done in the catalog",
    "stage-completed": "every task of a stage is done",
    "result-written": "the result file is in place; the catalog does not point at it yet",
    "published": "the run's results are published",
}
# A family: 'batch.STEP_ID' is the 'batch' point of one step only.
FAMILIES: dict[str, str] = {
    "batch.": "a worker starts a batch of the step named after the dot",
    "task.": "a queue worker starts task STEP_ID#N (named after the dot)",
}


def declared(name: str) -> bool:
    return name in POINTS or any(name.startswith(f) and len(name) > len(f) for f in FAMILIES)


def _parse(spec: str) -> dict[str, tuple[str, float]]:
    actions: dict[str, tuple[str, float]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = part.partition(":")
        kind, _, arg = action.replace("@", "=").partition("=")
        if kind not in ("kill", "sleep", "busy", "fail") or not arg:
            raise ConfigError(f"H3PIPE_FAULTS: cannot read '{part}'",
                              hint="use NAME:kill@N, NAME:fail@N, NAME:sleep=SECONDS or "
                              "NAME:busy=SECONDS")
        if not declared(name):
            # A misspelt point would otherwise never fire, and the crash test pass blindly.
            known = ", ".join([*POINTS, *(f"{f}STEP_ID" for f in FAMILIES)])
            raise ConfigError(f"H3PIPE_FAULTS: unknown fault point '{name}'",
                              hint=f"known points: {known}")
        actions[name] = (kind, float(arg))
    return actions


_ACTIONS = _parse(os.environ.get("H3PIPE_FAULTS", ""))
_REACHED: dict[str, int] = {}


def point(name: str) -> None:
    if not declared(name):
        # A bug in h3pipe, not in the input: every point must be declared in POINTS.
        raise AssertionError(f"fault point '{name}' is not declared in h3pipe.faults.POINTS")
    action = _ACTIONS.get(name)
    if action is None:
        return
    kind, arg = action
    _REACHED[name] = _REACHED.get(name, 0) + 1
    if kind == "sleep":
        time.sleep(arg)
    elif kind == "busy":
        print(f"fault: busy for {arg:g} s at {name}", file=sys.stderr, flush=True)
        _busy(arg)
    elif _REACHED[name] == int(arg) and kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif _REACHED[name] == int(arg):
        raise OperationError(f"fault injected at {name} (H3PIPE_FAULTS)")


def _busy(seconds: float) -> None:
    """About ``seconds`` of work in one C call (key stretching, measured first)."""
    import hashlib

    start = time.perf_counter()
    hashlib.pbkdf2_hmac("sha256", b"h3pipe", b"busy", 20_000)
    rate = 20_000 / max(time.perf_counter() - start, 1e-6)
    hashlib.pbkdf2_hmac("sha256", b"h3pipe", b"busy", max(1, int(rate * seconds)))
