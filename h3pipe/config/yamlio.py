"""The one YAML loader: safe, rejects duplicate keys, and remembers the line of every value.

:func:`load_document` returns a :class:`Document` whose ``line_of(path)`` lets a schema
or semantic error point at ``FILE:LINE`` for a path such as ``steps[1].params.stats[0]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from h3pipe.errors import Problem

PathKey = tuple[str | int, ...]


def format_path(path: PathKey | list[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """A parsed YAML file, its display name, and the line of each path inside it."""

    file: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: PathKey | list[str | int]) -> int | None:
        key = tuple(path)
        # A missing key has no line; point at the nearest enclosing value instead.
        while key not in self.lines and key:
            key = key[:-1]
        return self.lines.get(key)

    def problem(self, path: PathKey | list[str | int], message: str,
                kind: str = "semantic") -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), message, kind)


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps date-like scalars as strings: h3pipe has no date fields, and an
    impossible date such as 2024-13-45 must be a validation message, not a crash."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[PathKey, int] = {}
        self.problems: list[Problem] = []
        self._scalars = _Loader("")

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            self._scalars.flatten_mapping(node)  # resolve '<<: *anchor' merge keys
            out: dict[Any, Any] = {}
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, path + ("<key>",))
                if not isinstance(key, str | int | float | bool) and key is not None:
                    self.problems.append(
                        Problem(self.file, key_node.start_mark.line + 1, format_path(path),
                                "mapping keys must be plain scalars", "yaml")
                    )
                    continue
                if key in out:
                    self.problems.append(
                        Problem(
                            self.file,
                            key_node.start_mark.line + 1,
                            format_path(path + (str(key),)),
                            f"duplicate key '{key}' (first defined at line {first_line[key]}); "
                            "remove one of them",
                            "yaml",
                        )
                    )
                    continue
                first_line[key] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, path + (str(key),))
                # A problem with this key's value points at the key, even when the value is
                # a block that starts on the next line.
                self.lines[path + (str(key),)] = first_line[key]
            self.lines.pop(path + ("<key>",), None)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)


def load_document(path: Path, display: str | None = None) -> tuple[Document | None, list[Problem]]:
    """Parse ``path``; return the document (None when unparseable) and any problems found."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem(name, None, "", "file not found", "io")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, None, "", f"cannot read file: {exc}", "io")]
    return parse_text(text, name)


def parse_text(text: str, name: str) -> tuple[Document | None, list[Problem]]:
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(name, text, exc)]
    except yaml.YAMLError as exc:
        return None, [Problem(name, None, "", f"YAML error: {exc}", "yaml")]
    if len(nodes) > 1:
        return None, [Problem(name, _second_document_line(text), "", "expected one YAML "
                              "document, found several (remove the '---' separator)", "yaml")]
    if not nodes or nodes[0] is None:
        return None, [Problem(name, 1, "", "file is empty", "yaml")]
    builder = _Builder(name)
    try:
        data = builder.build(nodes[0], ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        return None, [Problem(name, mark.line + 1 if mark else None, "",
                              f"YAML error: {exc.problem}", "yaml")]
    return Document(name, data, builder.lines), builder.problems


def _syntax_problem(name: str, text: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark, context = exc.problem_mark, exc.context_mark
    last_line = len(text.splitlines())
    # At the end of the file the problem mark lies past the last line; where the unclosed
    # construct opened is the useful place.
    if context is not None and (mark is None or mark.line >= last_line):
        mark = context
    what = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.context_mark is not None and mark is not exc.context_mark:
        what += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if mark is None:
        return Problem(name, None, "", f"YAML syntax error: {what}", "yaml")
    return Problem(name, mark.line + 1, "", f"YAML syntax error at column {mark.column + 1}: "
                   f"{what}", "yaml")


def _second_document_line(text: str) -> int | None:
    starts = [e.start_mark.line + 1 for e in yaml.parse(text, Loader=_Loader)
              if isinstance(e, yaml.DocumentStartEvent)]
    return starts[1] if len(starts) > 1 else None
