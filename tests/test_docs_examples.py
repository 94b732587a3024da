"""The examples people copy: every ``Example:`` of every command's ``--help`` and every
command of a console (or sh) block in README.md and docs/*.md is run here, and must exit 0
(or the code its block shows after it, ``error: ...`` being 2).

They run in a small project made here that has the example project's pipelines verbatim
(elevation_terrain, population, flood_risk_weighted) over small local stand-ins of their
sources (same ids), and an ``eac`` group, with two runs done already. What needs more
than that (the demo's tiles or buildings, the queue, a PostgreSQL server at the docs' host,
minutes of work) is listed in NOT_RUN with the reason, and is checked only to be known.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import typer

from h3pipe.cli import app, main
from tests.conftest import write_raster

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDER_RUN = re.compile(r"elevation_terrain-r6-1a2b3c4d5e6f")


@dataclass(frozen=True)
class Example:
    where: str     # "map --help" or "docs/queue.md:9"
    command: str   # as written, continuation lines joined
    code: int = 0

    @property
    def id(self) -> str:
        return f"{self.where}: {self.command}"[:120]


def help_examples() -> list[Example]:
    """Each paragraph starting 'h3pipe' after 'Example:' in a command's help."""
    out = []

    def walk(cmd, path: str) -> None:
        text = cmd.help or ""
        if "Example:" in text:
            for para in re.split(r"\n\s*\n", text.split("Example:", 1)[1]):
                lines = [ln.strip() for ln in para.strip("\n").splitlines()]
                if lines and lines[0].startswith("h3pipe"):
                    out.append(Example(f"{path} --help".strip(), " ".join(lines)))
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return out


def doc_examples() -> list[Example]:
    """Commands of ```console blocks ('$ ' lines, the next line's 'error:' making it 2) and
    of ```sh blocks, in README.md and docs/*.md."""
    out = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for m in re.finditer(r"^ *```(console|sh)\n(.*?)^ *```", text, re.S | re.M):
            where = f"{path.relative_to(REPO)}:{text[:m.start()].count(chr(10)) + 1}"
            lines = [ln.strip() for ln in m.group(2).splitlines()]
            shell = m.group(1) == "sh"
            cmds: list[list] = []
            for ln in lines:
                if cmds and cmds[-1][0].endswith("\\"):
                    cmds[-1][0] = cmds[-1][0][:-1].rstrip() + " " + ln
                elif ln.startswith("$ ") or (shell and ln and not ln.startswith("#")):
                    cmds.append([ln.removeprefix("$ "), 0])
                elif cmds and ln.startswith("error:"):
                    cmds[-1][1] = 2
            out += [Example(where, c, code) for c, code in cmds]
    return out


# What is not run, and why: (pattern searched in the command, reason).
NOT_RUN = [
    (r"^make ", "a make target (make demo, make test: minutes, and the network for pip)"),
    (r"^pipx? install ", "installs h3pipe (make smoke installs the wheel in clean venvs)"),
    (r"^(duckdb|psql) ", "another program, over the demo's results"),
    (r"^export H3PIPE_STORE=", "sets the environment of a shell"),
    (r"postgresql://(localhost|h3@db|postgres@127)", "needs the PostgreSQL server of the docs' "
     "host (tests/storage runs the PostgreSQL store)"),
    (r"--queue|^h3pipe worker|H3PIPE_QUEUE|runs wait|runs cancel",
     "needs the queue and a running run (tests/queue runs them)"),
    (r"building_flood_exposure|BUILDINGS=",
     "needs the demo's buildings and flood rasters (make demo-flood, demo-fathom; "
     "tests/test_shipped_examples.py runs those pipelines on small stand-ins)"),
    (r"H3PIPE_STAC_API=", "needs the demo's STAC mirror (make demo)"),
    (r"--log-file /var/log", "writes to /var/log"),
    (r"--iso3 COD", "minutes of work (DR Congo at 9)"),
    (r"clean --outputs /data/exports", "needs /data/exports"),
    (r"^h3pipe serve", "serves until stopped (tests/server/ start real servers on free ports)"),
    (r"^curl ", "a request to a running h3pipe serve (tests/server/ make the same requests "
     "of a real one)"),
]


# Run smaller than written (Rwanda at 8 or 9 is 30,000 to 200,000 cells): (pattern, by).
SMALLER = [(r"-r 8\b", "-r 6"), (r"--resolution 4-9", "--resolution 4-6")]


def reason_not_run(example: Example) -> str | None:
    return next((why for pattern, why in NOT_RUN if re.search(pattern, example.command)),
                None)


EXAMPLES = help_examples() + doc_examples()
RUN = [e for e in EXAMPLES if reason_not_run(e) is None]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small project, its sources registered, and elevation_terrain done for RWA at 6
    and for the docs' box."""
    root = tmp_path_factory.mktemp("docs") / "proj"
    (root / "sources").mkdir(parents=True)
    (root / "pipelines").mkdir()
    for name in ("elevation_terrain", "population", "flood_risk_weighted"):
        shutil.copy(REPO / "pipelines" / f"{name}.yaml", root / "pipelines")
    rng = np.random.default_rng(26)
    # East Africa (RWA, BDI, UGA and the docs' box) at 0.02 degrees.
    shape = (460, 330)
    grid = dict(west=28.7, north=4.5, res=0.02)
    write_raster(root / "data" / "dem.tif", rng.uniform(900, 4500, shape).astype("float32"),
                 nodata=-32767, **grid)
    write_raster(root / "data" / "pop.tif", rng.uniform(0, 50, shape).astype("float32"),
                 **grid)
    write_raster(root / "data" / "depth.tif", rng.uniform(0, 2, shape).astype("float32"),
                 **grid)
    _buildings(root / "data" / "buildings.parquet", rng)
    sources = {
        "cop-dem-glo-30": "kind: raster\npath: data/dem.tif\ntheme: terrain\nunits: m\n"
                          "measure: intensive\n",
        "worldpop": "kind: raster\npath: data/pop.tif\ntheme: demographics\nunits: people\n"
                    "measure: extensive\n",
        "flood-depth-100y": "kind: raster\npath: data/depth.tif\ntheme: hazard\nunits: m\n"
                            "measure: intensive\n",
        "buildings": "kind: vector\npath: data/buildings.parquet\nid_field: bid\n"
                     "theme: infrastructure\n",
    }
    for sid, body in sources.items():
        (root / "sources" / f"{sid}.yaml").write_text(f"id: {sid}\n{body}")
    (root / "h3pipe.yaml").write_text("groups:\n  eac: [RWA, BDI, UGA]\n")
    for args in (["sources", "register", *map(str, sorted((root / "sources").glob("*.yaml")))],
                 ["run", "elevation_terrain", "--iso3", "RWA", "--resolution", "6"],
                 ["run", "elevation_terrain", "--bbox", "29.0,-2.5,30.0,-1.5"]):
        assert main(["--project", str(root), *args]) == 0, args
    return root


def _buildings(path: Path, rng: np.random.Generator) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    pts = shapely.points(rng.uniform(29.0, 30.0, 200), rng.uniform(-2.5, -1.5, 200))
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}}}
    table = pa.table({"bid": [f"b{i}" for i in range(200)],
                      "geometry": pa.array(shapely.to_wkb(pts), pa.binary())})
    pq.write_table(table.replace_schema_metadata({b"geo": json.dumps(geo).encode()}), path)


def _latest_run(root: Path) -> str:
    from h3pipe.config.project import ProjectConfig
    from h3pipe.results.runs import list_runs

    return str(list_runs(ProjectConfig(root), pipeline="elevation_terrain")[0]["run_id"])


@pytest.mark.parametrize("example", [pytest.param(e, id=e.id) for e in RUN])
def test_example_runs(example: Example, project: Path, tmp_path: Path, cli, monkeypatch):
    root = tmp_path / "proj"
    shutil.copytree(project, root)
    monkeypatch.chdir(root)
    monkeypatch.delenv("H3PIPE_PROJECT", raising=False)
    monkeypatch.delenv("H3PIPE_STORE", raising=False)
    command = PLACEHOLDER_RUN.sub(_latest_run(root), example.command)
    for pattern, by in SMALLER:
        command = re.sub(pattern, by, command)
    words = shlex.split(command, comments=True)
    redirect = None
    if ">" in words:  # 'h3pipe schema pipeline > pipeline.schema.json'
        redirect = Path(words[words.index(">") + 1])
        words = words[:words.index(">")]
    assert words[0] == "h3pipe", example

    r = cli(*words[1:])

    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert r.exit_code == example.code, (example, r.stdout, r.stderr)
    if redirect is not None:
        redirect.write_text(r.stdout)
        assert redirect.stat().st_size > 0


def python_examples() -> dict[str, list[tuple[int, str]]]:
    """The ```python blocks of README.md and docs/api.md, by file (a file's blocks run in
    order, in one namespace, as a notebook's cells): what a notebook copies."""
    out: dict[str, list[tuple[int, str]]] = {}
    for path in (REPO / "README.md", REPO / "docs" / "api.md"):
        text = path.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[:m.start()].count(chr(10)) + 1
            out.setdefault(str(path.relative_to(REPO)), []).append((line, m.group(1)))
    return out


@pytest.mark.parametrize("where", sorted(python_examples()))
def test_python_examples_run(where: str, project: Path, tmp_path: Path, monkeypatch,
                             capsys) -> None:
    root = tmp_path / "proj"
    shutil.copytree(project, root)
    monkeypatch.chdir(root)
    monkeypatch.delenv("H3PIPE_PROJECT", raising=False)
    monkeypatch.delenv("H3PIPE_STORE", raising=False)
    namespace = {"__name__": "__example__"}
    for line, code in python_examples()[where]:
        exec(compile(code, f"{where}:{line}", "exec"), namespace)
        assert capsys.readouterr().out.strip(), f"{where}:{line} printed nothing"


def test_the_api_doc_has_python_examples() -> None:
    assert len(python_examples()["docs/api.md"]) >= 2


def test_every_example_is_run_or_said_why_not() -> None:
    skipped = {e.command: reason_not_run(e) for e in EXAMPLES if reason_not_run(e)}
    # Most examples run; the patterns above each still match something.
    assert len(RUN) >= 30, len(RUN)
    for pattern, why in NOT_RUN:
        assert any(re.search(pattern, c) for c in skipped), (pattern, why)


def test_elevation_terrain_publishes_what_exactextract_computes(project: Path,
                                                                tmp_path: Path) -> None:
    """The shipped elevation_terrain (copied verbatim above) over the docs' box: its cells
    are h3-py's own polyfill of the box, its statistics exactextract's on h3-py's cell
    polygons over the stand-in DEM."""
    import h3
    import rasterio
    import yaml

    import h3pipe
    from tests.zonal_reference import assert_same, reference

    root = tmp_path / "proj"
    shutil.copytree(project, root)
    stats = yaml.safe_load((REPO / "pipelines" / "elevation_terrain.yaml").read_text()
                           )["steps"][0]["params"]["stats"]
    table = h3pipe.Project(root).dataset("elevation_copdem30", scope="bbox:29.0,-2.5,30.0,-1.5",
                                         resolution=6)
    rows = {r["h3_index"]: r for r in table.to_pylist()}
    box = h3.LatLngPoly([(-2.5, 29.0), (-2.5, 30.0), (-1.5, 30.0), (-1.5, 29.0)])
    assert set(rows) == set(h3.h3shape_to_cells(box, 6)) and len(rows) > 100
    with rasterio.open(root / "data" / "dem.tif") as ds:
        assert_same(rows, reference(ds, list(rows), stats), stats)

def test_the_systemd_unit_has_no_inline_comment() -> None:
    """systemd takes '# ...' after a value as part of it (EnvironmentFile would name a file
    '/etc/h3pipe/worker.env        # H3PIPE_QUEUE=...')."""
    text = (REPO / "docs" / "queue.md").read_text()
    unit = re.search(r"```ini\n(.*?)```", text, re.S)
    assert unit is not None
    for line in unit.group(1).splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            assert "#" not in line.split("=", 1)[1], line


def test_the_sweep_examples_name_columns_the_sweep_makes() -> None:
    """Not run here (they need the demo), but their column must be one the FATHOM sweep
    writes: an aggregation naming the band's variable comes once per return period, as
    rp100_flooded_buildings; 'flooded_buildings' alone is no column of it."""
    import yaml

    doc = yaml.safe_load((REPO / "pipelines" / "building_flood_exposure_fathom.yaml")
                         .read_text())
    variable = doc["steps"][0]["params"]["name"]
    aggregations = doc["steps"][-1]["params"]["aggregations"]
    per_band = {a["name"] for a in aggregations if variable in str(a.get("column", ""))
                + str(a.get("where", ""))}
    plain = {a["name"] for a in aggregations} - per_band
    maps = [e for e in EXAMPLES if e.command.startswith("h3pipe map "
                                                        "building_flood_exposure_fathom")]
    assert maps
    for e in maps:
        column = shlex.split(e.command)[3]
        band, _, name = column.partition("_")
        assert column in plain or (re.fullmatch(r"rp\d+", band) and name in per_band), e
