"""The packaged, versioned JSON Schemas for source, pipeline and project files."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from h3pipe.errors import ConfigError

# Package data: shipped inside the wheel beside this module.
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KINDS = ("source", "pipeline", "project")
VERSION = 1


def file_name(kind: str, version: int = VERSION) -> str:
    return f"{kind}.v{version}.json"


def text(kind: str, version: int = VERSION) -> str:
    """The schema as shipped, byte for byte (what an editor should see)."""
    return (SCHEMA_DIR / file_name(kind, version)).read_text(encoding="utf-8")


@cache
def schema(kind: str, version: int = VERSION) -> dict[str, Any]:
    return json.loads(text(kind, version))


@cache
def validator(kind: str, version: int = VERSION) -> Draft202012Validator:
    return Draft202012Validator(schema(kind, version))


def write(folder: Path, kinds: tuple[str, ...] = KINDS) -> list[Path]:
    """Copy the schemas of ``kinds`` into ``folder`` (created if needed), for editors and
    the YAML language server; returns the files written."""
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            path = folder / file_name(kind)
            path.write_text(text(kind), encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise ConfigError(f"cannot write the schemas to {folder}: {exc.strerror or exc}",
                          hint="choose a folder you can write to") from exc
    return written
