"""Reading the validation corpus: broken and valid YAML files with their expected reports.

Each file under ``invalid/`` starts with header comments:

``# expect: FILE:LINE: PATH: message``
    One problem the file must produce. FILE is relative to the project, LINE is counted by
    hand from the file. For problems without a path (YAML syntax, root-level keys) the
    line reads ``FILE:LINE: message``. The message part may be a leading fragment or any
    substring of the real message; file, line and path must be exact.
``# xfail: BUG: ...``
    The file shows a known bug; the test is a strict xfail with this reason.
``# unset: NAME`` / ``# set: NAME=VALUE``
    Environment variables to remove or set while the file is checked.
``# kind: source``
    Place the file in ``sources/`` (files named ``source_*`` go there too); otherwise
    it goes in ``pipelines/``.
``# hashseeds: 0 1 3``
    Check the file in fresh interpreters, one per PYTHONHASHSEED value, instead of in
    process: the report must not depend on the order of sets or dicts of strings.

A problem matches an expectation when the expectation starts with exactly
``FILE:LINE: PATH: `` (or ``FILE:LINE: `` when the problem has no path) and the rest is
a non-empty substring of the problem's message.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from h3pipe.errors import Problem

HERE = Path(__file__).resolve().parent
INVALID = HERE / "invalid"
VALID = HERE / "valid"


@dataclass(frozen=True)
class Case:
    path: Path
    kind: str
    expects: tuple[str, ...]
    xfail: str | None = None
    unset: tuple[str, ...] = ()
    set_env: dict[str, str] = field(default_factory=dict)
    hashseeds: tuple[int, ...] = ()

    @property
    def dest(self) -> str:
        folder = "sources" if self.kind == "source" else "pipelines"
        return f"{folder}/{self.path.name}"

    def install(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Copy the file byte for byte (tabs and all) into the project and set its env."""
        target = root / self.dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, target)
        for name in self.unset:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.set_env.items():
            monkeypatch.setenv(name, value)


def read_case(path: Path) -> Case:
    expects: list[str] = []
    xfail = None
    unset: list[str] = []
    set_env: dict[str, str] = {}
    hashseeds: list[int] = []
    kind = "source" if path.name.startswith("source_") else "pipeline"
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.startswith("#"):
            break
        text = raw[1:].strip()
        key, _, value = text.partition(":")
        value = value.strip()
        if key == "expect":
            expects.append(value)
        elif key == "xfail":
            xfail = value
        elif key == "unset":
            unset.append(value)
        elif key == "set":
            name, _, val = value.partition("=")
            set_env[name] = val
        elif key == "kind" and value == "source":
            kind = "source"
        elif key == "hashseeds":
            hashseeds += [int(v) for v in value.split()]
    return Case(path, kind, tuple(expects), xfail, tuple(unset), set_env, tuple(hashseeds))


def cases(folder: Path) -> list[Case]:
    return [read_case(p) for p in sorted(folder.glob("*.yaml"))]


def params(folder: Path) -> list[object]:
    """pytest params, one per file, with a strict xfail where the file names a bug."""
    out = []
    for case in cases(folder):
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        out.append(pytest.param(case, id=case.path.stem, marks=marks))
    return out


def matches(expect: str, problem: Problem) -> bool:
    head = f"{problem.file}:{problem.line}: "
    if problem.path:
        head += f"{problem.path}: "
    if not expect.startswith(head):
        return False
    rest = expect[len(head):]
    return bool(rest) and rest in problem.message


def mismatches(expects: tuple[str, ...], problems: list[Problem], *,
               strict: bool = True) -> list[str]:
    """Why ``problems`` differ from ``expects``: one line per missing, doubled or extra problem."""
    out = []
    for e in expects:
        n = sum(matches(e, p) for p in problems)
        if n != 1:
            out.append(f"{'missing' if n == 0 else f'matched {n} times'}: {e}")
    if strict:
        out += [f"unexpected: {p.format()}" for p in problems
                if not any(matches(e, p) for e in expects)]
    if out:
        out.append("reported:")
        out += [f"  {p.format()}" for p in problems]
    return out
