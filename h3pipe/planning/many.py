"""One command, many countries: :func:`countries` reads ``--iso3 RWA,BDI`` and
``--iso3 @eac`` (a group in h3pipe.yaml), and :func:`run_each` runs each country as its own
run (its own lock, record and resume), going on past a country that fails, so that one
summary at the end says how every country went.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from h3pipe.errors import H3PipeError, UsageError


@dataclass(frozen=True)
class Outcome:
    """How one country's run ended: its result (None if it failed) or its error."""

    code: str
    exit_code: int
    seconds: float
    result: Any = None
    error: H3PipeError | None = None


def countries(value: str, settings: dict[str, Any]) -> list[str]:
    """The country codes ``--iso3`` names: codes separated by commas, each possibly a
    ``@group`` of h3pipe.yaml's ``groups``; in order, each once."""
    groups = settings.get("groups", {})
    out: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            raise UsageError(f"--iso3 '{value}' has an empty entry",
                             hint="separate codes by commas: --iso3 RWA,BDI")
        if part.startswith("@"):
            if part[1:] not in groups:
                known = ", ".join(f"@{g}" for g in groups) or "none"
                raise UsageError(f"--iso3 {part}: no group '{part[1:]}' in h3pipe.yaml "
                                 f"(groups: {known})", hint="add it under 'groups:'")
            out += [c.upper() for c in groups[part[1:]]]
        else:
            out.append(part.upper())
    return list(dict.fromkeys(out))


def run_each(codes: list[str], one: Callable[[str], Any],
             failed: Callable[[str, H3PipeError], None]) -> list[Outcome]:
    """``one(code)`` for every country in turn; an error of ours is told by ``failed`` and
    recorded, and the next country runs. A stop (Ctrl-C, SIGTERM) stops them all."""
    out = []
    for code in codes:
        start = time.monotonic()
        try:
            result = one(code)
        except H3PipeError as exc:
            failed(code, exc)
            out.append(Outcome(code, exc.exit_code, time.monotonic() - start, error=exc))
            continue
        out.append(Outcome(code, 0, time.monotonic() - start, result=result))
    return out


def worst(outcomes: list[Outcome]) -> int:
    """The exit code of the whole: the highest of the countries'."""
    return max((o.exit_code for o in outcomes), default=0)


__all__ = ["Outcome", "countries", "run_each", "worst"]
