"""The packaged, versioned JSON Schemas for source, pipeline and project files."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from h3pipe.resources import data_dir

KINDS = ("source", "pipeline", "project")
VERSION = 1


@cache
def schema(kind: str, version: int = VERSION) -> dict[str, Any]:
    path = data_dir("schemas") / f"{kind}.v{version}.json"
    return json.loads(path.read_text())


@cache
def validator(kind: str, version: int = VERSION) -> Draft202012Validator:
    return Draft202012Validator(schema(kind, version))
