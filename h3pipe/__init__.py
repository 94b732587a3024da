"""h3pipe: declarative pipelines from geospatial data to exact statistics on the H3 grid.

The documented Python API is :class:`h3pipe.Project` (:mod:`h3pipe.api`); ``ScopeRef``
names a scope. Both are imported when first asked for, so ``h3pipe --help`` does not load
the libraries a run needs.

``h3pipe.__version__`` is the installed distribution's version (:mod:`h3pipe.about`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h3pipe.about import version

if TYPE_CHECKING:
    from h3pipe.api import Project, ScopeRef

_API = ("Project", "ScopeRef")


def __getattr__(name: str) -> Any:
    if name in _API:
        # The API pulls in every library a run uses: loaded when first asked for.
        from h3pipe import api

        return getattr(api, name)
    if name != "__version__":
        raise AttributeError(f"module 'h3pipe' has no attribute {name!r}")
    return version()


__all__ = ["Project", "ScopeRef", "__version__"]
