"""The wheel as a user installs it: built once, ``pip install h3pipe-*.whl`` into a clean
venv with no extra, on the oldest and the newest supported Python found here; then
``--version``, ``validate``, a small run on the embedded store (its numbers checked against
h3 and the raster made here), and each command that needs a missing extra.

Slow (a venv and about 900 MB of wheels per Python): marked ``wheel``, left out of
``make test`` and run by ``make smoke`` (``.ci/run`` does, after the tests). ``H3PIPE_WHEEL``
names a wheel built already (``make wheel``); ``H3PIPE_SMOKE_PYTHONS`` the interpreters.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h3
import numpy as np
import pyarrow.csv as pcsv
import pytest
import shapely

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[1]
OLDEST = (3, 11)  # requires-python's floor
BBOX = (29.02, -2.18, 29.18, -2.02)
VALUE = 5.0
MISSING = "error: h3pipe {command} needs the '{extra}' extra{why}: pip install 'h3pipe[{extra}]'"


def _version_of(python: str) -> tuple[int, int] | None:
    """From its path (pyenv's versions/3.13.0, python3.13), else by asking it: collecting
    this module (in every 'make test' too) starts no interpreter."""
    named = re.search(r"(?:versions/|python)3\.(\d+)", python)
    if named:
        return 3, int(named[1])
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    major, minor = (out.stdout.split() + ["", ""])[:2]
    return (int(major), int(minor)) if out.returncode == 0 and minor.isdigit() else None


def pythons() -> list[str]:
    """The oldest and the newest supported CPython here: pyenv's, then python3.N on PATH."""
    given = os.environ.get("H3PIPE_SMOKE_PYTHONS", "").split()
    if given:
        return given
    found: dict[tuple[int, int], str] = {}
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    candidates += [p for n in range(11, 20) if (p := shutil.which(f"python3.{n}"))]
    for python in candidates:
        version = _version_of(python)
        if version is not None and version >= OLDEST and os.access(python, os.X_OK):
            found.setdefault(version, python)
    chosen = sorted(found)
    return [found[v] for v in dict.fromkeys([chosen[0], chosen[-1]])] if chosen else []


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built once per session (pip's isolated build with hatchling)."""
    given = os.environ.get("H3PIPE_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(ROOT)], check=True, timeout=600)
    (built,) = out.glob("h3pipe-*.whl")
    return built


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: none of this venv's, none of h3pipe's settings."""
    return {k: v for k, v in os.environ.items()
            if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
            and not k.startswith("H3PIPE_")}


@pytest.fixture(scope="session", params=pythons() or [None], ids=lambda p: _label(p))
def core(request: pytest.FixtureRequest, wheel: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv on one Python with ``pip install WHEEL`` and nothing else: its bin folder."""
    python = request.param
    if python is None:
        pytest.fail("no Python 3.11 or newer found (pyenv's or python3.N on PATH)")
    venv = tmp_path_factory.mktemp(_label(python), numbered=False)
    started = time.monotonic()
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_ = venv / "bin"
    pip = subprocess.run([str(bin_ / "python"), "-m", "pip", "install", "--quiet",
                          "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, timeout=1200, env=_clean_env())
    assert pip.returncode == 0, pip.stdout + pip.stderr
    took = time.monotonic() - started
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 1e6
    print(f"\n{_label(python)}: venv and pip install of {wheel.name} in {took:.0f} s, "
          f"{size:.0f} MB", file=sys.stderr)
    return bin_


def _label(python: str | None) -> str:
    version = _version_of(python) if python else None
    return f"py{version[0]}.{version[1]}" if version else "no-python"


def h3pipe(bin_: Path, *args: str | Path, cwd: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_ / "h3pipe"), *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=_clean_env())


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One raster of a constant value over the scope, and a zonal mean of it."""
    root = tmp_path_factory.mktemp("smoke")
    tif = write_raster(root / "data" / "five.tif", np.full((250, 250), VALUE, "float32"),
                       west=29.0, north=-1.95, res=0.001)
    return write_project(root / "proj", sources={"five": raster_source("five", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "five", ["mean", "count"],
                                                        dataset="five_stats")})


def test_version_is_the_wheels(core: Path, wheel: Path) -> None:
    expected = wheel.name.split("-")[1]
    r = h3pipe(core, "--version")
    assert (r.returncode, r.stdout) == (0, f"h3pipe {expected}\n"), r.stderr
    r = subprocess.run([str(core / "python"), "-c", "import h3pipe; print(h3pipe.__version__)"],
                       capture_output=True, text=True, env=_clean_env())
    assert r.stdout == f"{expected}\n", r.stderr


def test_the_core_install_is_consistent_and_has_no_extra(core: Path) -> None:
    r = subprocess.run([str(core / "python"), "-m", "pip", "check"], capture_output=True,
                       text=True, env=_clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(core / "python"), "-c", "import importlib.util as u; print(*["
                        "m for m in ('matplotlib', 'celery', 'psycopg', 'sqlalchemy', "
                        "'pystac_client', 'pystac', 'planetary_computer') if u.find_spec(m)])"],
                       capture_output=True, text=True, env=_clean_env())
    assert (r.returncode, r.stdout) == (0, "\n"), r.stderr


def test_validate_run_and_export_on_the_embedded_store(core: Path, project: Path,
                                                       tmp_path: Path) -> None:
    store = tmp_path / "store"
    r = h3pipe(core, "--project", project, "validate")
    assert r.returncode == 0, r.stdout + r.stderr
    started = time.monotonic()
    r = h3pipe(core, "--project", project, "--store", store, "run", "p",
               "--bbox", ",".join(map(str, BBOX)))
    took = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "five.csv"
    r = h3pipe(core, "--project", project, "--store", store, "export", "five_stats", "-o", out)
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\n{core.parent.name}: validate, run and export in {took:.1f} s (the run)",
          file=sys.stderr)

    table = pcsv.read_csv(out)
    # The scope's cells are those whose centres are in the box (h3-py's own polyfill), and
    # every pixel under them holds VALUE: each cell's mean is VALUE whatever its coverage.
    assert set(table.column("h3_index").to_pylist()) == set(
        h3.geo_to_cells(shapely.box(*BBOX), 7))
    assert np.allclose(table.column("mean").to_numpy(), VALUE, rtol=1e-12, atol=0)
    # A resolution-7 cell is about 5 km2, a 0.001 degree pixel about 0.0123 km2 here.
    counts = np.array(table.column("count").to_pylist())
    assert ((counts > 300) & (counts < 500)).all(), counts


@pytest.mark.parametrize(("args", "command", "extra", "why"), [
    (["map", "five_stats", "mean", "--bbox", ",".join(map(str, BBOX)), "-o", "m.png"],
     "map", "report", ""),
    (["runs", "report", "latest", "-o", "r.html"], "runs report", "report", ""),
    (["--store", "postgresql://127.0.0.1/h3pipe_none", "runs", "list"], "runs list",
     "postgres", " for a PostgreSQL store"),
    (["worker", "--queue", "amqp://guest@127.0.0.1:5672//"], "worker", "queue",
     " for the queue at amqp://guest@127.0.0.1:5672//"),
    (["serve", "--port", "0"], "serve", "server", ""),
], ids=["map", "runs-report", "postgres-store", "worker", "serve"])
def test_a_command_that_needs_a_missing_extra_says_which(core: Path, project: Path,
                                                         tmp_path: Path, args: list[str],
                                                         command: str, extra: str,
                                                         why: str) -> None:
    r = h3pipe(core, "--project", project, "--store", tmp_path / "store", *args, cwd=tmp_path)
    assert r.returncode == 78, r.stdout + r.stderr
    assert r.stderr == MISSING.format(command=command, extra=extra, why=why) + "\n"
    assert list(tmp_path.iterdir()) == [], "nothing is written before the error"


def test_a_stac_source_without_the_extra_says_which(core: Path, tmp_path: Path) -> None:
    collection = tmp_path / "stac" / "collection.json"
    collection.parent.mkdir()
    collection.write_text(json.dumps({"type": "Collection", "id": "dem", "links": []}))
    project = write_project(tmp_path / "proj", sources={"dem": (
        "id: dem\nkind: stac\ntheme: terrain\n"
        f"stac: {{url: '{collection}', collection: dem, asset: data}}\n")},
        pipelines={"p": zonal_pipeline("p", "dem", ["mean"], dataset="dem_stats")})
    r = h3pipe(core, "--project", project, "validate")
    assert r.returncode == 0, r.stdout + r.stderr
    r = h3pipe(core, "--project", project, "--store", tmp_path / "store", "run", "p",
               "--bbox", ",".join(map(str, BBOX)))
    assert r.returncode == 78, r.stdout + r.stderr
    assert MISSING.format(command="run", extra="stac",
                          why=" for the STAC source 'dem'") in r.stderr.splitlines()


def test_every_extra_resolves_from_the_wheel(core: Path, wheel: Path) -> None:
    """``pip install 'h3pipe[all]'`` would bring each extra's packages (a dry run)."""
    r = subprocess.run([str(core / "python"), "-m", "pip", "install", "--dry-run", "--quiet",
                        "--report", "-", f"{wheel}[all]"], capture_output=True, text=True,
                       timeout=600, env=_clean_env())
    assert r.returncode == 0, r.stderr
    names = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower()
             for i in json.loads(r.stdout)["install"]}
    assert {"matplotlib", "celery", "psycopg", "sqlalchemy", "pystac-client",
            "planetary-computer"} <= names, sorted(names)
