"""A missing extra is one line naming it and the command, exit 78 (h3pipe/extras.py).

An import that failed is what Python records as None in ``sys.modules``; these tests put
that there for one package of an extra, in process. tests/test_install.py checks the same
messages from a real install without the extras (``make smoke``).
"""

from __future__ import annotations

import pickle
import sys

import pytest
import typer

from h3pipe import extras
from h3pipe.cli import _command_path, app
from h3pipe.errors import MissingExtra


def test_every_extra_of_pyproject_has_its_modules() -> None:
    import tomllib
    from pathlib import Path

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    optional = declared["project"]["optional-dependencies"]
    assert set(extras.MODULES) <= set(optional)
    (everything,) = optional["all"]
    assert set(everything.removeprefix("h3pipe[").removesuffix("]").split(",")) == set(
        extras.MODULES)
    assert all(extras.installed(name) for name in extras.MODULES)  # the dev install has all


@pytest.mark.parametrize("module", ["matplotlib", "celery", "psycopg", "sqlalchemy",
                                    "pystac_client", "pystac", "planetary_computer"])
def test_a_package_that_failed_to_import_is_its_extra_missing(
        module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (extra,) = [e for e, modules in extras.MODULES.items() if module in modules]
    monkeypatch.setitem(sys.modules, module, None)
    assert not extras.installed(extra)
    with pytest.raises(MissingExtra) as err:
        extras.require(extra, "this")
    assert (err.value.extra, err.value.exit_code) == (extra, 78)
    assert str(err.value) == f"h3pipe needs the '{extra}' extra for this: " \
                             f"pip install 'h3pipe[{extra}]'"
    assert isinstance(err.value, ImportError)


def test_the_error_crosses_processes_with_its_command() -> None:
    err = MissingExtra("stac", "the STAC source 'dem'")
    err.in_command("h3pipe run")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.extra, back.exit_code) == (
        "h3pipe run needs the 'stac' extra for the STAC source 'dem': "
        "pip install 'h3pipe[stac]'", "stac", 78)


@pytest.mark.parametrize(("args", "path"), [
    (["map", "ds", "mean", "--iso3", "RWA"], "h3pipe map"),
    (["-p", "map", "runs", "report", "latest"], "h3pipe runs report"),  # a project named map
    (["--store", "postgresql://h/db", "-v", "db", "status"], "h3pipe db status"),
    (["--project=runs", "-q", "sources", "inspect", "x.tif"], "h3pipe sources inspect"),
    (["--log-file", "worker", "worker", "-c", "2"], "h3pipe worker"),
    ([], "h3pipe"),
])
def test_the_command_is_named_as_typed(args: list[str], path: str) -> None:
    assert _command_path(typer.main.get_command(app), args) == path


def test_map_without_matplotlib_names_the_extra_and_writes_nothing(
        cli, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "m.png"
    r = cli("--project", tmp_path, "map", "ds", "mean", "--bbox", "29,-2,29.1,-1.9", "-o", out)
    assert (r.exit_code, r.stdout) == (78, "")
    assert r.stderr == "error: h3pipe map needs the 'report' extra: pip install 'h3pipe[report]'\n"
    assert not out.exists()


def test_a_postgresql_store_without_the_driver_names_the_extra(
        cli, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    r = cli("--project", tmp_path, "--store", "host=127.0.0.1 dbname=none", "runs", "list")
    assert r.exit_code == 78
    assert r.stderr == ("error: h3pipe runs list needs the 'postgres' extra for a PostgreSQL "
                        "store: pip install 'h3pipe[postgres]'\n")
