"""h3pipe: declarative pipelines from geospatial data to exact statistics on the H3 grid.

``h3pipe.__version__`` is the installed distribution's version (``h3pipe --version``),
read from its metadata when first asked for: that read costs about 35 ms, which
``h3pipe --help`` and every command that does not ask need not pay.
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module 'h3pipe' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("h3pipe")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
