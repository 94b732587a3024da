"""The YAML loader: line map, duplicate keys, syntax errors located by line and column.

Every expected line and column below is counted by hand from the text next to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from h3pipe.config.yamlio import Document, format_path, load_document, parse_text
from h3pipe.errors import Problem

# Line numbers on the right are 1-based, as reported to users.
PIPELINE = (
    "# a comment line first\n"                           # 1
    "id: demo\n"                                         # 2
    "output:\n"                                          # 3
    "  dataset: ds\n"                                    # 4
    "  theme: terrain\n"                                 # 5
    "steps:\n"                                           # 6
    "  - id: first\n"                                    # 7
    "    params:\n"                                      # 8
    "      stats:\n"                                     # 9
    "        - mean\n"                                   # 10
    "        - max\n"                                    # 11
    "  - {id: second, params: {stats: [min, sum]}}\n"    # 12
    "  - id: third\n"                                    # 13
    "    depends_on: [first,\n"                          # 14
    "      second]\n"                                    # 15
)


@pytest.fixture
def doc() -> Document:
    document, problems = parse_text(PIPELINE, "pipelines/demo.yaml")
    assert problems == []
    assert document is not None
    return document


def test_data_is_parsed_like_safe_load(doc: Document) -> None:
    assert doc.file == "pipelines/demo.yaml"
    assert doc.data == {
        "id": "demo",
        "output": {"dataset": "ds", "theme": "terrain"},
        "steps": [
            {"id": "first", "params": {"stats": ["mean", "max"]}},
            {"id": "second", "params": {"stats": ["min", "sum"]}},
            {"id": "third", "depends_on": ["first", "second"]},
        ],
    }


@pytest.mark.parametrize(("path", "line"), [
    (("id",), 2),
    (("output", "dataset"), 4),
    (("output", "theme"), 5),
    (("steps", 0), 7),
    (("steps", 0, "id"), 7),
    (("steps", 0, "params", "stats", 0), 10),
    (("steps", 0, "params", "stats", 1), 11),
    (("steps", 1), 12),
    (("steps", 1, "id"), 12),
    (("steps", 1, "params", "stats", 1), 12),
    (("steps", 2), 13),
    (("steps", 2, "depends_on", 0), 14),
    (("steps", 2, "depends_on", 1), 15),
])
def test_line_of_scalars_and_list_items(doc: Document, path: tuple, line: int) -> None:
    assert doc.line_of(path) == line
    assert doc.line_of(list(path)) == line


@pytest.mark.parametrize(("path", "line"), [
    # A key that is absent points at the nearest enclosing value that exists.
    (("steps", 0, "source"), 7),
    (("steps", 1, "params", "stats", 7), 12),
    (("steps", 2, "params"), 13),
    (("steps", 0, "params", "stats", 0, "deeper"), 10),
])
def test_missing_key_falls_back_to_the_parent_line(doc: Document, path: tuple,
                                                   line: int) -> None:
    assert doc.line_of(path) == line


def test_missing_top_level_key_falls_back_to_the_document_start(doc: Document) -> None:
    # The root mapping starts with its first key, after the comment.
    assert doc.line_of(()) == 2
    assert doc.line_of(("schema_version",)) == 2


def test_line_of_a_key_with_a_block_value_is_the_key_line(doc: Document) -> None:
    paths = [("output",), ("steps",), ("steps", 0, "params"), ("steps", 0, "params", "stats"),
             # ... and a missing list item falls back to the list's key.
             ("steps", 9, "id")]
    assert {p: doc.line_of(p) for p in paths} == {
        ("output",): 3, ("steps",): 6, ("steps", 0, "params"): 8,
        ("steps", 0, "params", "stats"): 9, ("steps", 9, "id"): 6}


def test_problem_carries_file_line_and_formatted_path(doc: Document) -> None:
    problem = doc.problem(["steps", 0, "params", "stats", 1], "'max' is bad")
    assert problem == Problem("pipelines/demo.yaml", 11, "steps[0].params.stats[1]",
                              "'max' is bad", "semantic")


@pytest.mark.parametrize(("path", "text"), [
    ([], ""),
    (["id"], "id"),
    ([0], "[0]"),
    (["steps", 1, "params", "stats", 0], "steps[1].params.stats[0]"),
    (("defaults", "resolution"), "defaults.resolution"),
    (["a", 0, 1, "b"], "a[0][1].b"),
])
def test_format_path(path: list, text: str) -> None:
    assert format_path(path) == text


# -- duplicate keys --------------------------------------------------------------------------

def test_duplicate_keys_at_every_level_are_each_reported() -> None:
    text = (
        "a: 1\n"          # 1
        "b:\n"            # 2
        "  c: 2\n"        # 3
        "  c: 3\n"        # 4
        "a: 4\n"          # 5
        "list:\n"         # 6
        "  - x: 1\n"      # 7
        "    y: 2\n"      # 8
        "    x: 5\n"      # 9
    )
    doc, problems = parse_text(text, "f.yaml")

    # The document is still returned, so other checks can run in the same pass.
    assert doc is not None
    assert sorted((p.line, p.path, p.message, p.kind) for p in problems) == [
        (4, "b.c", "duplicate key 'c' (first defined at line 3); remove one of them", "yaml"),
        (5, "a", "duplicate key 'a' (first defined at line 1); remove one of them", "yaml"),
        (9, "list[0].x", "duplicate key 'x' (first defined at line 7); remove one of them",
         "yaml"),
    ]
    assert all(p.file == "f.yaml" for p in problems)


def test_duplicate_key_in_a_flow_mapping() -> None:
    doc, problems = parse_text("output: {dataset: a, theme: t, dataset: b}\n", "f.yaml")
    assert [p.format() for p in problems] == [
        "f.yaml:1: output.dataset: duplicate key 'dataset' (first defined at line 1); "
        "remove one of them"]


def test_same_key_in_sibling_mappings_is_not_a_duplicate() -> None:
    doc, problems = parse_text("steps:\n  - id: a\n  - id: b\nid: c\n", "f.yaml")
    assert problems == []
    assert doc is not None and doc.data == {"steps": [{"id": "a"}, {"id": "b"}], "id": "c"}


# -- syntax errors ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "line", "message"), [
    # A tab as the first character of a line: line 4, column 1.
    ("id: x\nsteps:\n  - id: a\n\t- id: b\n", 4,
     "YAML syntax error at column 1: found character '\\t' that cannot start any token"),
    # Two spaces, then a tab: the tab is the 3rd character of line 4.
    ("key: 1\nmap:\n  a: 1\n  \tb: 2\n", 4,
     "YAML syntax error at column 3: found character '\\t' that cannot start any token"),
    # 'id: a: b' -- the second ':' is character 6 of line 1.
    ("id: a: b\n", 1, "YAML syntax error at column 6: mapping values are not allowed here"),
    # ' c' is indented by one space under a mapping indented by two: 'c' is character 2.
    ("a:\n  b: 1\n c: 2\n", 3,
     "YAML syntax error at column 2: expected <block end>, but found '<block mapping start>' "
     "(while parsing a block mapping at line 1)"),
    # 'stats: [1, 2}': the '}' is character 13 of line 2.
    ("id: x\nstats: [1, 2}\n", 2,
     "YAML syntax error at column 13: expected ',' or ']', but got '}' "
     "(while parsing a flow sequence at line 2)"),
])
def test_syntax_error_has_line_and_column(text: str, line: int, message: str) -> None:
    doc, problems = parse_text(text, "pipelines/x.yaml")

    assert doc is None
    assert [(p.file, p.line, p.path, p.message, p.kind) for p in problems] == [
        ("pipelines/x.yaml", line, "", message, "yaml")]


def test_unknown_tag_is_a_yaml_problem_not_a_crash() -> None:
    doc, problems = parse_text("id: x\npath: !include other.yaml\n", "f.yaml")
    assert doc is None
    assert [(p.line, p.kind) for p in problems] == [(2, "yaml")]
    assert "'!include'" in problems[0].message


def test_merge_keys_work_like_safe_load() -> None:
    text = "base: &b {stats: [mean]}\nstep:\n  <<: *b\n  id: x\n"
    doc, problems = parse_text(text, "f.yaml")
    assert problems == []
    assert doc is not None and doc.data["step"] == {"stats": ["mean"], "id": "x"}


def test_date_like_scalars_stay_strings() -> None:
    # h3pipe has no date fields: '2024-13-45' (impossible) and '2024-01-01' are plain text,
    # so neither crashes the loader nor reads back as a datetime.date.
    doc, problems = parse_text("id: x\ntitle: 2024-13-45\nnote: 2024-01-01\n", "f.yaml")
    assert problems == []
    assert doc is not None and doc.data == {"id": "x", "title": "2024-13-45",
                                            "note": "2024-01-01"}


# -- empty files, several documents, unreadable files ---------------------------------------

@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n"])
def test_empty_file(text: str) -> None:
    doc, problems = parse_text(text, "f.yaml")
    assert doc is None
    assert problems == [Problem("f.yaml", 1, "", "file is empty", "yaml")]


def test_several_documents_are_rejected() -> None:
    doc, problems = parse_text("---\na: 1\n---\nb: 2\n", "f.yaml")
    assert doc is None
    assert len(problems) == 1
    assert problems[0].kind == "yaml"
    assert problems[0].message.startswith("expected one YAML document, found several")


def test_one_explicit_document_is_fine() -> None:
    doc, problems = parse_text("---\na: 1\n...\n", "f.yaml")
    assert problems == [] and doc is not None and doc.data == {"a": 1}


def test_load_document_uses_the_display_name(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\na: 2\n")
    doc, problems = load_document(path, "pipelines/x.yaml")
    assert doc is not None and doc.file == "pipelines/x.yaml"
    assert [p.format() for p in problems] == [
        "pipelines/x.yaml:2: a: duplicate key 'a' (first defined at line 1); remove one of them"]


def test_load_document_of_a_missing_file(tmp_path: Path) -> None:
    doc, problems = load_document(tmp_path / "nope.yaml", "pipelines/nope.yaml")
    assert doc is None
    assert problems == [Problem("pipelines/nope.yaml", None, "", "file not found", "io")]


def test_load_document_of_a_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("title: caf\u00e9\n".encode("latin-1"))
    doc, problems = load_document(path, "p.yaml")
    assert doc is None
    # 'é' in Latin-1 is the single byte 0xe9, on line 1.
    assert problems == [Problem("p.yaml", 1, "", "not UTF-8 text: byte 0xe9 cannot be decoded; "
                                "save the file as UTF-8", "io")]


# -- hostile files: one problem each, quickly, in bounded memory ---------------------------
# Each test runs under an address-space limit a little above what the process already uses
# (see the fixture), so a loader that expands a bomb fails with MemoryError instead of
# taking the machine's memory.

TOO_MANY = ("the document holds more than 10000 values, counting each use of an alias or "
            "merge key; look for aliases that expand out of control")
TOO_DEEP = "values are nested more than 64 levels deep; flatten the structure"


@pytest.fixture
def bounded_memory() -> Iterator[None]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + 512 * 2**20, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _timed_parse(text: str) -> tuple[Document | None, list[Problem]]:
    start = time.monotonic()
    out = parse_text(text, "f.yaml")
    assert time.monotonic() - start < 1.0
    return out


def _laughs(levels: int, width: int) -> str:
    """The billion laughs: each level lists the one below ``width`` times."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]"
              for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _merge_bomb(levels: int) -> str:
    """Each level merges both mappings of the level below and keeps one of them as a value,
    so the values double at every level although the text grows by two lines."""
    lines = ["a0: &a0 {k: 1}", "b0: &b0 {j: 1}"]
    for i in range(1, levels):
        lines += [f"a{i}: &a{i} {{<<: [*a{i - 1}, *b{i - 1}], ka{i}: *a{i - 1}}}",
                  f"b{i}: &b{i} {{<<: [*b{i - 1}, *a{i - 1}], kb{i}: *b{i - 1}}}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "line"), [
    # 10**10 values from 10 lines. Counting key, list and items: l0 takes 12, l1 112,
    # l2 1112, l3 11112, so the 10000th comes inside l3, on line 4.
    (_laughs(10, 10), 4),
    # A thousand aliases to a thousand-item list, on line 2.
    (_laughs(2, 1000), 2),
    (_merge_bomb(30), None),
    # Merge keys copy pairs: three thousand merges of a 3000-key mapping.
    ("big: &big {" + ", ".join(f"k{i}: 1" for i in range(3000)) + "}\n"
     "x: {<<: [" + ", ".join(["*big"] * 3000) + "]}\n", None),
    # No alias at all: just too many values.
    ("x: [" + ", ".join(["1"] * 20_000) + "]\n", 1),
], ids=["billion-laughs", "wide-alias", "merge-bomb", "wide-merge", "many-values"])
def test_alias_bombs_are_refused(bounded_memory: None, text: str, line: int | None) -> None:
    doc, problems = _timed_parse(text)

    assert doc is None
    assert [(p.file, p.path, p.message, p.kind) for p in problems] == [
        ("f.yaml", "", TOO_MANY, "yaml")]
    if line is not None:
        assert problems[0].line == line


def test_aliases_below_the_limit_are_expanded() -> None:
    # 3 levels of 10: 10 + 100 + 1000 values plus the lists themselves, well under 10000.
    doc, problems = _timed_parse(_laughs(3, 10))

    assert problems == [] and doc is not None
    assert len(doc.data["l2"]) == 10 and all(len(x) == 10 for x in doc.data["l2"])
    assert doc.data["l2"][9][9] == ["lol"] * 10


@pytest.mark.parametrize("text", ["a: &a [1, *a]\n", "a: &a {b: {c: *a}}\n"])
def test_recursive_alias_is_refused(text: str) -> None:
    doc, problems = _timed_parse(text)

    assert doc is None
    assert [(p.line, p.message) for p in problems] == [
        (1, "an alias refers to a value that contains it (a recursive structure); "
            "remove the alias")]


def _nested(levels: int) -> str:
    # The root mapping is level 1, its list level 2, ... the innermost scalar level 'levels'.
    inner = levels - 2
    return "x: " + "[" * inner + "1" + "]" * inner + "\n"


def test_nesting_up_to_64_levels_is_fine() -> None:
    doc, problems = _timed_parse(_nested(64))

    assert problems == [] and doc is not None
    value = doc.data["x"]
    for _ in range(61):
        value = value[0]
    assert value == [1]


@pytest.mark.parametrize(("text", "line"), [
    (_nested(65), 1),
    # 100000 brackets: PyYAML's own composer would hit the recursion limit.
    ("x: " + "[" * 100_000 + "]" * 100_000 + "\n", 1),
    ("x: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n", 1),
    # Block style, one level a line: the key of line 64 is the first value at level 65.
    ("".join(" " * i + f"k{i}:\n" for i in range(100)), 64),
    # a_i (on line i + 1) holds 10 lists around a_(i-1), and a0 a list of one scalar: the
    # deepest value of a_i is at level 1 + 10i + 2, so a7 (73 levels) is the first too deep.
    ("a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} " + "[" * 10 + f"*a{i - 1}" + "]" * 10 + "\n"
                               for i in range(1, 20)), 8),
], ids=["65-levels", "deep-flow-list", "deep-flow-map", "deep-block", "deep-by-alias"])
def test_deep_nesting_is_refused(text: str, line: int) -> None:
    doc, problems = _timed_parse(text)

    assert doc is None
    assert [(p.line, p.message, p.kind) for p in problems] == [(line, TOO_DEEP, "yaml")]


def test_control_characters_are_one_located_problem() -> None:
    doc, problems = _timed_parse("id: p\nsteps: []\ntitle: a\x01b\n")

    assert doc is None
    assert problems == [Problem("f.yaml", 3, "", "unacceptable character #x0001: control "
                                "characters are not allowed in YAML", "yaml")]


def test_many_documents_stop_at_the_second() -> None:
    doc, problems = _timed_parse("---\na: 1\n" * 100_000)

    assert doc is None
    # The second '---' is line 3.
    assert [(p.line, p.kind) for p in problems] == [(3, "yaml")]


def test_file_over_1_mib_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * (2**20 - 4))  # one byte over 1 MiB

    doc, problems = load_document(path, "pipelines/big.yaml")

    assert doc is None
    assert problems == [Problem("pipelines/big.yaml", None, "", "file is larger than 1 MiB; a "
                                "pipeline, source or project file is never that big", "io")]


def test_file_of_exactly_1_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: 1\n#" + b"x" * (2**20 - 7) + b"\n")
    assert path.stat().st_size == 2**20

    doc, problems = load_document(path, "big.yaml")

    assert problems == [] and doc is not None and doc.data == {"a": 1}


def test_endless_file_is_refused(bounded_memory: None) -> None:
    doc, problems = load_document(Path("/dev/zero"), "zero.yaml")

    assert doc is None
    assert [(p.file, p.kind) for p in problems] == [("zero.yaml", "io")]
    assert problems[0].message.startswith("file is larger than 1 MiB")


def test_binary_file_is_one_located_problem(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    # A NUL on line 3 (what a UTF-16 file or an image is full of).
    path.write_bytes(b"id: p\nsteps: []\n\x89PNG\x00\x00\xff\n")

    doc, problems = load_document(path, "pipelines/x.yaml")

    assert doc is None
    assert problems == [Problem("pipelines/x.yaml", 3, "", "binary file (NUL byte); expected "
                                "YAML text in UTF-8", "io")]


def test_windows_line_endings_read_as_before(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"id: p\r\nsteps:\r\n  - a\r\n")

    doc, problems = load_document(path, "x.yaml")

    assert problems == [] and doc is not None
    assert doc.data == {"id": "p", "steps": ["a"]} and doc.line_of(("steps", 0)) == 3
