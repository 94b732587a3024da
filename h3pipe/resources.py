"""Locate files shipped beside the package: JSON Schemas and catalog migrations.

A wheel carries them in ``h3pipe/_data``; a source checkout keeps them at the top level.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"h3pipe installation is missing its '{name}' folder")
