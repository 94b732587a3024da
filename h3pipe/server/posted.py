"""A source document sent over HTTP (``POST /sources``, ``PUT /sources/{id}``):
:func:`register_posted` writes the body to a server-owned temporary file, holds it to what
a caller may point a source at (:func:`reach_problems`), then registers it with
``Project.register_sources``, the validation ``h3pipe sources register FILE`` runs.

What a source sent over HTTP may point at (docs/security.md, "HTTP server"): a file inside
the project folder, named by a relative path without ``..``, or an ``http(s)://`` URL
(also as ``/vsicurl/``); no absolute path, ``~``, ``..``, other scheme (``s3://``,
``postgresql://``, ``/vsis3/``: those would use the server's credentials) or GDAL syntax
with a colon (``NETCDF:"/etc/x.nc":v``), and no ``${VAR}`` anywhere (the server's
environment is not the caller's to read). The CLI, run on the server by its owner, may
register anything."""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from fastapi import HTTPException

from h3pipe.api import Project
from h3pipe.config.yamlio import Document, load_document
from h3pipe.errors import ConfigError, Problem, ValidationFailed

LABEL = "request body"  # the file name problems of a posted document carry
RECORDED_AS = "(sent to h3pipe serve)"  # the catalog's file of a posted source
MEDIA_TYPES = {"application/yaml": "yaml", "application/x-yaml": "yaml",
               "text/yaml": "yaml", "text/x-yaml": "yaml", "application/json": "json"}
# Validation lists every combination of a sweep's dimensions: far more than any real source
# has (a few hundred), far fewer than a hostile product of them would take to list.
MAX_SCENARIOS = 10_000
_URL = re.compile(r"^(?:/vsicurl/)?https?://[^/\s]", re.I)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def media_kind(content_type: str | None) -> str:
    """``yaml`` or ``json`` from a Content-Type header (parameters such as charset aside)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise HTTPException(415, f"a source is sent as YAML or JSON, not "
                            f"{media or 'a body without Content-Type'}; send Content-Type: "
                            + ", ".join(MEDIA_TYPES))
    return MEDIA_TYPES[media]


def register_posted(project: Project, body: bytes, content_type: str | None, *,
                    source_id: str | None = None) -> list[dict[str, Any]]:
    """Register the source in ``body`` as ``h3pipe sources register`` would a file of it;
    ``source_id``: the id the body must have (``PUT /sources/{id}``)."""
    kind = media_kind(content_type)
    with tempfile.TemporaryDirectory(prefix="h3pipe-posted-") as folder:
        file = Path(folder) / "request-body.yaml"
        file.write_bytes(_as_yaml(body) if kind == "json" else body)
        doc, found = load_document(file, LABEL)
        if doc is not None and not found:
            _check_id(doc, source_id)
            refused = reach_problems(doc)
            if refused:
                raise ValidationFailed(refused)
        try:
            return project.register_sources([file], recorded_as=RECORDED_AS)
        except ValidationFailed as exc:
            raise _relabelled(exc, project.display(file), lines=kind == "yaml") from None


def _as_yaml(body: bytes) -> bytes:
    """A JSON body as the YAML the loader reads (JSON's '1e5' is a number, YAML 1.1's a
    string); its syntax errors as problems of the request body."""
    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise ValidationFailed([Problem(LABEL, None, "", f"not UTF-8 text: byte "
                                        f"0x{body[exc.start]:02x} cannot be decoded",
                                        "json")]) from None
    except json.JSONDecodeError as exc:
        raise ValidationFailed([Problem(LABEL, exc.lineno, "", f"JSON syntax error at "
                                        f"column {exc.colno}: {exc.msg}", "json")]) from None
    except RecursionError:
        raise ValidationFailed([Problem(LABEL, None, "", "values are nested too deep; "
                                        "flatten the structure", "json")]) from None
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise json.JSONDecodeError(f"duplicate key '{key}'; remove one of them", "", 0)
        seen[key] = value
    return seen


def _check_id(doc: Document, source_id: str | None) -> None:
    given = doc.data.get("id") if isinstance(doc.data, dict) else None
    if source_id is not None and given != source_id:
        raise ConfigError(f"the body's id {given!r} is not '{source_id}', the id in the URL",
                          hint=f"send the document of '{source_id}' to PUT /sources/"
                          f"{source_id}, or register another source with POST /sources")


def reach_problems(doc: Document) -> list[Problem]:
    """What the document points at that a source sent over HTTP may not (see the module's
    docstring), and a sweep with more combinations than validation may list."""
    data = doc.data
    if not isinstance(data, dict):
        return []  # not a source at all: validation says what is wrong
    out = [doc.problem(path, "${VAR} is not expanded in a source sent over HTTP (the "
                       "server's environment is not the caller's to read); write the value "
                       "itself, or register the file on the server with 'h3pipe sources "
                       "register'") for path in _env_references(data, [])]
    stac = data.get("stac")
    pointers: list[tuple[tuple[str, ...], Any]] = [
        (("path",), data.get("path")),
        (("stac", "url"), stac.get("url") if isinstance(stac, dict) else None)]
    for path, value in pointers:
        if isinstance(value, str):
            why = _unreachable(value)
            out += [doc.problem(path, why)] if why else []
    out += _dimension_problems(doc)
    return out


def _env_references(node: Any, path: list[str | int]) -> list[list[str | int]]:
    if isinstance(node, str):
        return [path] if "${" in node else []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    return [p for key, value in items for p in _env_references(value, [*path, key])]


def _unreachable(location: str) -> str | None:
    """Why a source sent over HTTP may not point at ``location``; None when it may."""
    if _URL.match(location):
        return None
    if _SCHEME.match(location) or location.lower().startswith("/vsi"):
        return ("a source sent over HTTP may name an http(s) URL or a file inside the "
                f"project, not another scheme, which would use the server's credentials "
                f"(here {location!r}); register it on the server with 'h3pipe sources "
                "register'")
    for text in (location, _PLACEHOLDER.sub("", location)):
        if (text.startswith(("/", "~")) or "\\" in text or ":" in text
                or ".." in text.split("/")):
            return ("a source sent over HTTP may name a file inside the project only, by a "
                    f"relative path without '..', '~', '\\' or ':' (here {location!r})")
    return None


def _dimension_problems(doc: Document) -> list[Problem]:
    """Values that would make a path template leave its folder (all dots, a slash), and
    more combinations than :data:`MAX_SCENARIOS`, before validation lists them."""
    dims = doc.data.get("dimensions")
    if not isinstance(dims, dict):
        return []
    out = [doc.problem(["dimensions", name, i], f"value {value!r} may not be made of dots "
                       "or hold a slash in a source sent over HTTP")
           for name, values in dims.items() if isinstance(values, list)
           for i, value in enumerate(values)
           if isinstance(value, str) and (set(value) <= {"."} or "/" in value or "\\" in value)]
    sizes = [len(v) if isinstance(v, list) else 1 for v in dims.values()]
    groups = doc.data.get("combinations")
    count = math.prod(sizes) * (len(groups) if isinstance(groups, list) and groups else 1)
    if count > MAX_SCENARIOS:
        out.append(doc.problem(["dimensions"], f"up to {count:,} combinations of dimensions, "
                               f"more than the {MAX_SCENARIOS:,} a source sent over HTTP may "
                               "have; register it on the server with 'h3pipe sources "
                               "register'"))
    return out


def _relabelled(exc: ValidationFailed, file: str, *, lines: bool) -> ValidationFailed:
    """The problems of the temporary file as the request body's; a JSON body's line
    numbers are those of its YAML rendition, so they are left out."""
    return ValidationFailed([replace(p, file=LABEL, line=p.line if lines else None)
                             if p.file == file else p for p in exc.problems])
