"""The packaged, versioned JSON Schemas for source, pipeline and project files."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

# Package data: shipped inside the wheel beside this module.
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KINDS = ("source", "pipeline", "project")
VERSION = 1


@cache
def schema(kind: str, version: int = VERSION) -> dict[str, Any]:
    path = SCHEMA_DIR / f"{kind}.v{version}.json"
    return json.loads(path.read_text())


@cache
def validator(kind: str, version: int = VERSION) -> Draft202012Validator:
    return Draft202012Validator(schema(kind, version))
