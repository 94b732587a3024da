"""The packaged, versioned JSON Schemas for source, pipeline and project files, and
:func:`problems`, which turns a schema's errors into problems located in a document;
:func:`checked` skips documents this machine has seen pass the same schema.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from h3pipe.about import version as h3pipe_version
from h3pipe.config.yamlio import Document, format_path
from h3pipe.errors import ConfigError, Problem

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError as SchemaError

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
    # jsonschema (0.1 s of CPU with referencing, attrs and rpds) for a document new here.
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(kind, version))


def checked(doc: Document, against: str | dict[str, Any],
            prefix: list[str | int] | None = None, data: Any = None) -> list[Problem]:
    """:func:`problems` of ``data`` (default: the whole document) against the schema of
    a kind (``'source'``) or a schema itself (an operation's parameters), but none, and
    no jsonschema loaded, for data this machine has seen pass the same schema before.

    Validation is a pure function of the data and the schema, and every command checks
    the project's files, which rarely change between two runs; importing jsonschema and
    building its validators is most of a check's cost. What passed is remembered as an
    empty file named by the SHA-256 of h3pipe's version, the schema and the data (each
    value with its type: 1, 1.0, true and '1' differ) in ``$XDG_CACHE_HOME/h3pipe/valid``;
    nothing is remembered of data that fails, or that is not plain YAML (a date)."""
    instance = doc.data if data is None else data
    key = _digest(text(against) if isinstance(against, str)
                  else json.dumps(against, sort_keys=True), instance)
    if key is not None and (VALID_DIR / key).exists():
        return []
    found = problems(doc, validator(against) if isinstance(against, str)
                     else _validator_of(against), prefix, data)
    if not found and key is not None:
        _remember(key)
    return found


VALID_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "h3pipe" / "valid"


def _validator_of(params_schema: dict[str, Any]) -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # as in validator()

    return Draft202012Validator(params_schema)


def _digest(schema_text: str, instance: Any) -> str | None:
    try:
        data = json.dumps(_typed(instance), separators=(",", ":"))
    except TypeError:
        return None
    return hashlib.sha256(f"{h3pipe_version()}\0{schema_text}\0{data}".encode()).hexdigest()


def _typed(value: Any) -> Any:
    """``value`` with the type of every scalar and key beside it, in a canonical order."""
    if isinstance(value, dict):
        return ["map", sorted(([_typed(k), _typed(v)] for k, v in value.items()),
                              key=lambda kv: json.dumps(kv[0]))]
    if isinstance(value, list):
        return ["list", [_typed(v) for v in value]]
    if value is None or isinstance(value, bool | int | float | str):
        return [type(value).__name__, value]
    raise TypeError(type(value).__name__)


def _remember(key: str) -> None:
    try:
        VALID_DIR.mkdir(parents=True, exist_ok=True)
        (VALID_DIR / key).touch()
    except OSError:
        pass  # a read-only home: every command checks again, as before


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
