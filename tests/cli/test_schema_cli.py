"""``h3pipe schema``: the packaged JSON Schemas, printed or written out for editors; and a
walk over every command, so none ships without an example or a line in the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
import yaml
from jsonschema import Draft202012Validator

from h3pipe.cli import app

REPO = Path(__file__).resolve().parents[2]
# Read straight from the package folder, not through h3pipe.config.schemas.
PACKAGED = REPO / "h3pipe" / "config" / "schemas"
FILES = ["source.v1.json", "pipeline.v1.json", "project.v1.json"]


def test_out_writes_the_three_packaged_schemas_byte_for_byte(cli, tmp_path: Path) -> None:
    out = tmp_path / "editor" / "schemas"

    result = cli("schema", "--out", out)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [f"wrote {out / name}" for name in FILES]
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (out / name).read_bytes() == (PACKAGED / name).read_bytes()


def test_written_schemas_accept_the_example_project_and_reject_a_typo(cli,
                                                                      tmp_path: Path) -> None:
    cli("schema", "--out", tmp_path)
    pipeline = Draft202012Validator(json.loads((tmp_path / "pipeline.v1.json").read_text()))
    source = Draft202012Validator(json.loads((tmp_path / "source.v1.json").read_text()))
    Draft202012Validator.check_schema(pipeline.schema)

    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        assert list(pipeline.iter_errors(yaml.safe_load(path.read_text()))) == [], path
    doc = yaml.safe_load((REPO / "sources" / "worldpop.yaml").read_text())
    assert list(source.iter_errors(doc)) == []
    doc["theem"] = doc.pop("theme")
    assert sorted(e.validator for e in source.iter_errors(doc)) == ["additionalProperties",
                                                                     "required"]


def test_one_kind_only(cli, tmp_path: Path) -> None:
    result = cli("schema", "source", "--out", tmp_path)

    assert result.exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["source.v1.json"]


@pytest.mark.parametrize("kind", ["source", "pipeline", "project"])
def test_kind_alone_prints_that_schema(cli, kind: str) -> None:
    result = cli("schema", kind)

    assert result.exit_code == 0
    assert result.stdout == (PACKAGED / f"{kind}.v1.json").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["schema"], "error: Invalid value for KIND: name a KIND to print, or give --out DIR to "
                 "write them all"),
    (["schema", "pipelines"], "error: Invalid value for KIND: 'pipelines' is not one of "
                              "source, pipeline, project"),
])
def test_usage_errors_exit_2(cli, args: list[str], message: str) -> None:
    result = cli(*args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == message


def test_a_folder_that_cannot_be_made_is_one_error_line(cli, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")

    result = cli("schema", "--out", tmp_path / "file.txt" / "schemas")

    assert result.exit_code == 2
    assert result.stderr == (f"error: cannot write the schemas to {tmp_path / 'file.txt'}"
                             "/schemas: Not a directory; choose a folder you can write to\n")


# -- every command -------------------------------------------------------------------------

def _commands() -> list[str]:
    """Every leaf command, as typed after 'h3pipe' ('validate', 'runs show', ...)."""
    def walk(group, prefix: str) -> list[str]:
        out = []
        for name, cmd in sorted(group.commands.items()):
            if hasattr(cmd, "commands"):
                out += walk(cmd, f"{prefix}{name} ")
            else:
                out.append(f"{prefix}{name}")
        return out

    return walk(typer.main.get_command(app), "")


def test_the_walk_finds_the_commands() -> None:
    names = _commands()
    assert {"validate", "run", "schema", "runs show", "sources register", "db upgrade"} <= set(
        names)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_an_example(cli, command: str) -> None:
    result = cli(*command.split(), "--help")

    assert result.exit_code == 0
    assert "Example:" in result.stdout


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_a_line_in_the_readme(command: str) -> None:
    table = (REPO / "README.md").read_text().split("\n## Commands\n", 1)[1].split("\n## ")[0]
    # As `h3pipe runs show ...`, or after a comma as `sources show ID`.
    assert re.search(rf"`(h3pipe )?{re.escape(command)}[ `]", table), (
        f"'h3pipe {command}' is missing from the README's Commands table")
