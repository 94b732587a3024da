"""The optional parts of h3pipe's install, :func:`require`: each extra, the packages it
brings, and the one error (:class:`~h3pipe.errors.MissingExtra`, exit 78) when one is
missing.

``pip install h3pipe`` computes on the embedded store; the extras add a PostgreSQL store,
the queue backend, maps and reports, and STAC sources. Every place that imports an extra's
package calls :func:`require` first, so a missing one is a one-line error naming the extra
rather than a ``ModuleNotFoundError``. Checking costs a lookup, not an import.
"""

from __future__ import annotations

import importlib.util
import sys

from h3pipe.errors import MissingExtra

# The top-level modules of each extra's packages, as pyproject.toml's
# [project.optional-dependencies] install them.
MODULES: dict[str, tuple[str, ...]] = {
    "postgres": ("psycopg", "sqlalchemy"),
    "queue": ("celery",),
    "report": ("matplotlib",),
    "stac": ("pystac_client", "pystac", "planetary_computer"),
    "dataframes": ("pandas", "geopandas"),
    "server": ("fastapi", "uvicorn"),
}

def require(extra: str, what: str | None = None) -> None:
    """Return if ``extra``'s packages are installed, else raise :class:`MissingExtra`;
    ``what`` says what needs it ("the STAC source 'dem'"), when the command does not."""
    if not installed(extra):
        raise MissingExtra(extra, what)


def installed(extra: str) -> bool:
    """Whether every package of ``extra`` can be imported: found, not imported (once
    imported, it is in ``sys.modules``, where None means an import that failed)."""
    return all(sys.modules[m] is not None if m in sys.modules
               else importlib.util.find_spec(m) is not None for m in MODULES[extra])


__all__ = ["MODULES", "installed", "require"]
