"""What this h3pipe is: :func:`version`, the installed distribution's version (what
``h3pipe --version`` prints, ``h3pipe.__version__`` and what records and events name).

Read from the package's metadata when first asked for: that costs about 35 ms, which
``h3pipe --help`` and every command that does not ask need not pay.
"""

from __future__ import annotations

from functools import cache


@cache
def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("h3pipe")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


__all__ = ["version"]
