"""H3 resolutions: :func:`check`, the one test of 0..15, and :func:`parse`, which reads
``6``, ``4-9`` or ``4,6,9`` as people write them.

Shared by the configuration (a pipeline's ``defaults.resolutions``) and the engine
(``run --resolution``, see :mod:`h3pipe.planning.pyramid`).
"""

from __future__ import annotations

import re

from h3pipe.errors import UsageError

FINEST = 15  # H3's finest resolution; 0 is its coarsest
_RANGE = re.compile(r"^\s*(\d{1,2})\s*-\s*(\d{1,2})\s*$")


def check(resolution: int, where: str = "--resolution") -> int:
    """``resolution`` when H3 has it; else a UsageError naming ``where``."""
    if not 0 <= resolution <= FINEST:
        raise UsageError(f"{where} {resolution} is outside 0..{FINEST}")
    return resolution


def parse(text: str, where: str = "--resolution") -> list[int]:
    """The resolutions ``text`` names, coarsest first, each once; UsageError if none."""
    m = _RANGE.match(text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise UsageError(f"{where} {text}: the range runs backwards",
                             hint=f"write it coarsest first: {hi}-{lo}")
        out = list(range(lo, hi + 1))
    else:
        try:
            out = [int(p) for p in text.split(",")]
        except ValueError:
            raise UsageError(f"{where} '{text}' is not a resolution, a range (4-9) or a "
                             "list (4,6,8)") from None
    for r in out:
        check(r, f"{where} {text}: resolution")
    return sorted(set(out))


def problem(text: str) -> str | None:
    """Why ``text`` names no resolutions (None when it does)."""
    try:
        parse(text, "")
    except UsageError as exc:
        return exc.message.strip()
    return None


__all__ = ["FINEST", "check", "parse", "problem"]
