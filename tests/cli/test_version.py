"""``h3pipe --version`` and ``h3pipe.__version__``: the installed distribution's version."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import h3pipe

DECLARED = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
VERSION = DECLARED["project"]["version"]


def test_version_option_prints_the_declared_version(cli) -> None:
    r = cli("--version")
    assert (r.exit_code, r.stdout, r.stderr) == (0, f"h3pipe {VERSION}\n", "")


def test_the_package_attribute_is_the_same_and_costs_help_nothing() -> None:
    assert h3pipe.__version__ == VERSION
    # Reading distribution metadata costs ~35 ms: --help and plain imports skip it.
    # Said at exit: the command ends its own process (cli._end), after the atexit handlers.
    code = ("import atexit, sys, h3pipe.cli; sys.argv = ['h3pipe', '--help']\n"
            "atexit.register(lambda: print('importlib.metadata' in sys.modules))\n"
            "h3pipe.cli.main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.splitlines()[-1] == "False", r.stdout + r.stderr
