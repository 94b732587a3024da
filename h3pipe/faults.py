"""Fault injection for the crash and stop tests: :func:`point` marks a moment of a run.

``H3PIPE_FAULTS`` lists what happens at which point, comma-separated:

- ``NAME:kill@N`` -- the process kills itself with SIGKILL the Nth time it reaches NAME
  (counted per process), as a power cut or the OOM killer would;
- ``NAME:sleep=S`` -- it pauses S seconds there each time (a slow task, a slow write);
- ``NAME:fail@N`` -- the Nth time, it raises a permanent error (a step that fails).

The points: ``batch`` and ``batch.STEP_ID`` (a worker starts a batch), ``write-partial``
(a task's output or a result is half written), ``task-output-written`` (written, not yet
recorded),
``task-recorded``, ``stage-completed``, ``result-written`` (the result file is in place,
the catalog does not point at it yet) and ``published``. Unset, as it always is outside
tests, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

from h3pipe.errors import ConfigError, OperationError


def _parse(spec: str) -> dict[str, tuple[str, float]]:
    actions: dict[str, tuple[str, float]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = part.partition(":")
        kind, _, arg = action.replace("@", "=").partition("=")
        if kind not in ("kill", "sleep", "fail") or not arg:
            raise ConfigError(f"H3PIPE_FAULTS: cannot read '{part}'",
                              hint="use NAME:kill@N, NAME:fail@N or NAME:sleep=SECONDS")
        actions[name] = (kind, float(arg))
    return actions


_ACTIONS = _parse(os.environ.get("H3PIPE_FAULTS", ""))
_REACHED: dict[str, int] = {}


def point(name: str) -> None:
    action = _ACTIONS.get(name)
    if action is None:
        return
    kind, arg = action
    _REACHED[name] = _REACHED.get(name, 0) + 1
    if kind == "sleep":
        time.sleep(arg)
    elif _REACHED[name] == int(arg) and kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif _REACHED[name] == int(arg):
        raise OperationError(f"fault injected at {name} (H3PIPE_FAULTS)")
