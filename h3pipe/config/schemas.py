"""The packaged, versioned JSON Schemas for source, pipeline and project files, and
:func:`problems`, which turns a schema's errors into problems located in a document."""

from __future__ import annotations

import difflib
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from h3pipe.config.yamlio import Document, format_path
from h3pipe.errors import ConfigError, Problem

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


def suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return ""


def problems(doc: Document, validator: Draft202012Validator,
             prefix: list[str | int] | None = None, data: Any = None) -> list[Problem]:
    """``validator``'s errors for ``data`` (default: the whole document) as problems located
    in ``doc``; ``prefix`` is where ``data`` sits in the document."""
    prefix = prefix or []
    instance = doc.data if data is None else data
    out = []
    errors = sorted(validator.iter_errors(instance),
                    key=lambda e: (list(map(str, e.absolute_path)), e.message))
    for err in errors:
        path = prefix + list(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = list(err.schema.get("properties", {}))
            for key in (k for k in err.instance if k not in known):
                hint = suggest(str(key), known) or f" (allowed: {', '.join(known)})"
                out.append(Problem(doc.file, doc.line_of(path + [key]), format_path(path),
                                   f"unknown key '{key}'{hint}", "schema"))
            continue
        at = path
        if err.validator == "not" and isinstance(err.validator_value, dict):
            at = path + list(err.validator_value.get("required", [])[:1])
        out.append(Problem(doc.file, doc.line_of(at), format_path(path), _message(err),
                           "schema"))
    return out


_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "null"}


def _type_name(value: Any) -> str:
    for kind, py in (("boolean", bool), ("object", dict), ("array", list), ("string", str),
                     ("integer", int), ("number", float)):
        if isinstance(value, py):
            return _TYPE_NAMES[kind]
    return "null" if value is None else type(value).__name__


def _message(err: SchemaError) -> str:
    if err.validator == "not" and isinstance(err.validator_value, dict) and isinstance(
            err.instance, dict):
        keys = ", ".join(f"'{k}'" for k in err.validator_value.get("required", []))
        return f"{keys} does not go with kind '{err.instance.get('kind')}'"
    if err.validator == "pattern" and "x-pattern" in err.schema:
        # The pattern's meaning in words, where a regular expression would read as noise.
        return f"{err.instance!r} is not {err.schema['x-pattern']}"
    if err.validator == "enum":
        return f"{err.instance!r} is not one of [{', '.join(repr(v) for v in err.validator_value)}]"
    if err.validator == "type":
        wanted = err.validator_value if isinstance(err.validator_value, list) else [
            err.validator_value]
        expected = " or ".join(_TYPE_NAMES.get(str(w), str(w)) for w in wanted)
        got = _type_name(err.instance)
        if isinstance(err.instance, str | int | float) and not isinstance(err.instance, bool):
            got += f" ({err.instance!r})"
        return f"expected {expected}, got {got}"
    return err.message
