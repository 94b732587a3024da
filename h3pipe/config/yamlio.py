"""The one YAML loader: safe, rejects duplicate keys, and remembers the line of every value.

:func:`load_document` returns a :class:`Document` whose ``line_of(path)`` lets a schema
or semantic error point at ``FILE:LINE`` for a path such as ``steps[1].params.stats[0]``.

Hostile files (alias bombs, deep nesting, huge or binary files) become one problem each,
in bounded time and memory: every file h3pipe reads comes through here, and a pipeline
file is small, so the limits below are far above any real one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from h3pipe.errors import ConfigError, Problem

PathKey = tuple[str | int, ...]

MAX_BYTES = 1024 * 1024
# Values in a document, counted once per use of an alias or merge key: real pipeline
# files hold a few hundred, an alias bomb billions.
MAX_NODES = 10_000
# Nesting levels; far below Python's recursion limit, which PyYAML's composer, our
# builder and the schema validator all recurse towards.
MAX_DEPTH = 64

_TOO_MANY = (f"the document holds more than {MAX_NODES} values, counting each use of an "
             "alias or merge key; look for aliases that expand out of control")
_TOO_DEEP = f"values are nested more than {MAX_DEPTH} levels deep; flatten the structure"


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


class _Refused(ConfigError):
    """A document past one of the limits above; never leaves this module."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps date-like scalars as strings: h3pipe has no date fields, and an
    impossible date such as 2024-13-45 must be a validation message, not a crash.

    It also counts what it composes and merges (see :data:`MAX_NODES`, :data:`MAX_DEPTH`)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._left = MAX_NODES
        self._depth = 0

    def spend(self, n: int, line: int | None) -> None:
        self._left -= n
        if self._left < 0:
            raise _Refused(line, _TOO_MANY)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # PyYAML's composer recurses once per level: '[[[[...' 100k deep would end in a
        # RecursionError here, before the builder could say anything.
        line = self.peek_event().start_mark.line + 1
        self.spend(1, line)
        if self._depth >= MAX_DEPTH:
            raise _Refused(line, _TOO_DEEP)
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Merge keys copy pairs, so '<<: [*a, *a, ...]' grows without any new text; charge
        # each flattened mapping (nested merges come back through here) before going on.
        super().flatten_mapping(node)
        self.spend(len(node.value), node.start_mark.line + 1)


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
        self._open: set[int] = set()  # ids of the nodes being built, to spot recursion

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        # Aliases are expanded here, so this is where an alias bomb or a recursive alias
        # ('a: &a [*a]') would explode. The node itself may be defined anywhere; the
        # top-level value that expands it is where to look.
        line = self.lines.get(path[:1], node.start_mark.line + 1)
        self._scalars.spend(1, line)
        if id(node) in self._open:
            raise _Refused(line, "an alias refers to a value that contains it "
                           "(a recursive structure); remove the alias")
        if len(path) >= MAX_DEPTH:  # the root is level 1
            raise _Refused(line, _TOO_DEEP)
        self._open.add(id(node))
        try:
            return self._build(node, path)
        finally:
            self._open.discard(id(node))

    def _build(self, node: yaml.Node, path: PathKey) -> Any:
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
        with path.open("rb") as f:
            # Never more than the limit allows, whatever the file (or /dev/zero) holds.
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None, [Problem(name, None, "", "file not found", "io")]
    except OSError as exc:
        return None, [Problem(name, None, "", f"cannot read file: {exc}", "io")]
    if len(raw) > MAX_BYTES:
        return None, [Problem(name, None, "", f"file is larger than {MAX_BYTES // 1024 // 1024}"
                              " MiB; a pipeline, source or project file is never that big",
                              "io")]
    text, problem = _decode(raw, name)
    if problem is not None:
        return None, [problem]
    return parse_text(text, name)


def _decode(raw: bytes, name: str) -> tuple[str, Problem | None]:
    nul = raw.find(b"\0")
    if nul >= 0:
        return "", Problem(name, raw.count(b"\n", 0, nul) + 1, "", "binary file (NUL byte); "
                           "expected YAML text in UTF-8", "io")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "", Problem(name, raw.count(b"\n", 0, exc.start) + 1, "",
                           f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded; "
                           "save the file as UTF-8", "io")
    # Universal newlines, as reading in text mode gives.
    return text.replace("\r\n", "\n").replace("\r", "\n"), None


def parse_text(text: str, name: str) -> tuple[Document | None, list[Problem]]:
    try:
        # Two documents are enough to know the file has too many.
        nodes = list(itertools.islice(yaml.compose_all(text, Loader=_Loader), 2))
    except _Refused as exc:
        return None, [Problem(name, exc.line, "", exc.message, "yaml")]
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(name, text, exc)]
    except yaml.reader.ReaderError as exc:
        # Its text spans two lines and counts characters; say it in one, by line.
        return None, [Problem(name, text.count("\n", 0, exc.position) + 1, "",
                              f"unacceptable character #x{exc.character:04x}: control "
                              "characters are not allowed in YAML", "yaml")]
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
    except _Refused as exc:
        return None, [Problem(name, exc.line, "", exc.message, "yaml")]
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
    starts = (e.start_mark.line + 1 for e in yaml.parse(text, Loader=_Loader)
              if isinstance(e, yaml.DocumentStartEvent))
    return next(itertools.islice(starts, 1, None), None)
