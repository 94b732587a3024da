"""The house's imports: no loop between h3pipe's modules, and no import of one inside a
function without a comment saying why (the start-up time it spares: a heavy library a
light command such as ``h3pipe --help`` or ``h3pipe validate`` should not pay for).

Imports inside functions count as imports here (grimp reads them too): one that only hides
a loop from the module level is still a loop. The layers themselves are import-linter's
contracts in pyproject.toml (``make lint``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

import grimp
import networkx as nx

import h3pipe

PACKAGE = Path(h3pipe.__file__).resolve().parent
# A comment that is only a directive for a tool says nothing about why.
_DIRECTIVE = re.compile(r"^(noqa\b.*|type:\s*ignore\b.*|pragma\b.*)$")

# Imports inside functions that spare no start-up yet are allowed for now, as (file, module):
# none since issue 27 moved the last of them to the top of their modules. An entry that no
# longer matches fails the test, so a list made here can only shrink.
NOT_YET_HOISTED: set[tuple[str, str]] = set()


def import_cycles(package: str) -> list[list[str]]:
    """Each loop of ``package``'s imports (inside functions too; those only a type checker
    reads are no dependency), as the modules along it from the first by name, which is
    repeated at the end."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    edges = nx.DiGraph((m, i) for m in graph.modules
                       for i in graph.find_modules_directly_imported_by(m))
    loops = []
    for component in nx.strongly_connected_components(edges):
        if len(component) > 1:
            path = [a for a, _ in nx.find_cycle(edges.subgraph(component))]
            first = path.index(min(path))
            path = path[first:] + path[:first]
            loops.append([*path, path[0]])
    return sorted(loops)


def _described(loop: list[str], package: str) -> str:
    graph = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    steps = []
    for a, b in zip(loop, loop[1:], strict=False):
        lines = sorted(d["line_number"] for d in graph.get_import_details(importer=a, imported=b))
        steps.append(f"{a} (line {', '.join(map(str, lines))})")
    return " -> ".join([*steps, loop[-1]])


class Found(NamedTuple):
    file: str  # from the package's parent: h3pipe/cli/run.py
    line: int
    text: str
    modules: frozenset[str]  # what it imports

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def unexplained(root: Path) -> list[Found]:
    """Each import of the package at ``root`` made inside a function with no comment above
    it or on its line, unless an earlier commented one of its file imports the same module
    (one comment per reason and file: the CLI's commands each import the API)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        explained: set[str] = set()
        for node in _imports_in_functions(ast.parse(source)):
            targets = _own_targets(node, module, root)
            if not targets:
                continue
            if _says_why(lines, node.lineno, node.end_lineno or node.lineno):
                explained |= targets
                continue
            if targets <= explained:
                continue
            found.append(Found(path.relative_to(root.parent).as_posix(), node.lineno,
                               lines[node.lineno - 1].strip(), frozenset(targets)))
    return found


def _imports_in_functions(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if inside and isinstance(child, ast.Import | ast.ImportFrom):
                out.append(child)
            visit(child, inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return sorted(out, key=lambda n: n.lineno)


def _own_targets(node: ast.Import | ast.ImportFrom, module: str, root: Path) -> set[str]:
    """The package's modules (or the package itself) that ``node`` imports."""
    package = root.name
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == package}
    base = node.module or ""
    if node.level:  # from the file's package (``module`` ends in __init__ for a package's)
        package_parts = module.split(".")[:-1]
        parent = package_parts[:len(package_parts) - node.level + 1]
        base = ".".join(parent + ([base] if base else []))
    if base.split(".")[0] != package:
        return set()
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        as_path = root.parent.joinpath(*sub.split("."))
        out.add(sub if as_path.with_suffix(".py").exists() or as_path.is_dir() else base)
    return out


def _says_why(lines: list[str], first: int, last: int) -> bool:
    """A comment (not only a tool's directive) on the line above ``first``, or on a line
    of the statement."""
    texts = []
    if first > 1 and lines[first - 2].strip().startswith("#"):
        texts.append(lines[first - 2].strip()[1:])
    texts += [line.split("#", 1)[1] for line in lines[first - 1:last] if "#" in line]
    return any(t.strip() and not _DIRECTIVE.match(t.strip()) for t in texts)


def test_no_import_loop_between_h3pipe_modules():
    loops = import_cycles("h3pipe")
    assert not loops, ("import loops (move what both need to a module below them, or "
                       "split a module):\n" + "\n".join(_described(x, "h3pipe") for x in loops))


def test_every_import_of_h3pipe_inside_a_function_says_why():
    found = unexplained(PACKAGE)
    listed = {f for f in found if {(f.file, m) for m in f.modules} <= NOT_YET_HOISTED}
    new = [str(f) for f in found if f not in listed]
    assert not new, ("imports of h3pipe's modules inside functions, with no comment saying "
                     "which start-up they spare (move them to the top of the module if none):"
                     "\n" + "\n".join(new))
    gone = NOT_YET_HOISTED - {(f.file, m) for f in listed for m in f.modules}
    assert not gone, ("moved to the top of their module (well done): take them off "
                      f"NOT_YET_HOISTED in {Path(__file__).name}: {sorted(gone)}")


# -- the checks themselves, on small packages made here ----------------------------------------

def _package(tmp_path: Path, name: str, modules: dict[str, str]) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    for module, text in modules.items():
        (root / f"{module}.py").write_text(text)
    return root


def test_a_loop_through_an_import_inside_a_function_is_found(tmp_path, monkeypatch):
    _package(tmp_path, "loopy", {
        "a": "def f():\n    from loopy import b\n    return b\n",
        "b": "import loopy.a\n",
        "c": "import loopy.b\n",  # depends on the loop, is not in it
        # A loop only a type checker sees is no loop.
        "d": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import loopy.e\n",
        "e": "import loopy.d\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    loops = import_cycles("loopy")
    assert loops == [["loopy.a", "loopy.b", "loopy.a"]]
    assert _described(loops[0], "loopy") == "loopy.a (line 2) -> loopy.b (line 1) -> loopy.a"


def test_an_import_inside_a_function_without_a_reason_is_found(tmp_path):
    root = _package(tmp_path, "lazy", {
        "n": "", "o": "", "p": "",
        "m": (
            "import os\n"                                    # 1
            "from lazy import p\n"                           # 2 module level: fine
            "def f():\n"                                     # 3
            "    import json\n"                              # 4 not the package's
            "    from lazy import n\n"                       # 5 no reason
            "    return n\n"                                 # 6
            "def g():\n"                                     # 7
            "    # numba (0.1 s): only batches need it\n"    # 8
            "    from lazy import o\n"                       # 9 explained
            "    from lazy.p import x\n"                     # 10 a comment is for one import
            "def h():\n"                                     # 11
            "    from lazy import o\n"                       # 12 as explained above
            "    from . import n  # noqa: F401\n"            # 13 a directive is no reason
            "    class C:\n"                                 # 14
            "        def k(self):\n"                         # 15
            "            import lazy.n  # spares x\n"        # 16 explained on its line
        ),
    })
    assert [str(f) for f in unexplained(root)] == [
        "lazy/m.py:5: from lazy import n", "lazy/m.py:10: from lazy.p import x",
        "lazy/m.py:13: from . import n  # noqa: F401"]
    assert [f.modules for f in unexplained(root)] == [{"lazy.n"}, {"lazy.p"}, {"lazy.n"}]


def test_every_package_and_top_level_module_is_in_a_layer():
    """A new package or module outside the layers contract would import what it likes."""
    import tomllib

    contracts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    layers = next(c["layers"] for c in contracts["tool"]["importlinter"]["contracts"]
                  if c["type"] == "layers")
    named = {m.strip() for layer in layers for m in layer.split("|")}
    found = {f"h3pipe.{p.stem if p.is_file() else p.name}" for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py")
             or (p.is_dir() and (p / "__init__.py").exists())}
    assert found - named == set(), "not in any layer of pyproject.toml's contract"
    assert named - found == set(), "a layer names what is not there"
