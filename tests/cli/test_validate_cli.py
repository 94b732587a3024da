"""``h3pipe validate``: exit codes, one-pass reports, --format json, PATH arguments.

Expected lines are counted by hand from the YAML texts written in each test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from h3pipe.errors import Problem
from tests.conftest import raster_source, write_project, zonal_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import corpus_cases as corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

STAT_NAMES = ("['count', 'sum', 'mean', 'min', 'max', 'stdev', 'median', 'majority', "
              "'minority', 'variety', 'coverage', 'cell_area_km2', 'density', 'fractions', "
              "'histogram', 'quantile_NN']")
THEMES = ("['terrain', 'climate', 'demographics', 'vegetation', 'water', 'infrastructure', "
          "'landcover', 'risk', 'hazard', 'boundaries', 'other']")


@pytest.fixture(autouse=True)
def _no_project_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("H3PIPE_PROJECT", raising=False)


def _valid(root: Path) -> Path:
    # zonal_pipeline's text: line 7 is 'source:', line 8 is 'params: {stats: [...]}'.
    return write_project(root, sources={"dem": raster_source("dem", "dem.tif")},
                         pipelines={"elev": zonal_pipeline("elev", "dem", ["mean", "max"])})


def _broken(root: Path) -> Path:
    """Four problems in four files: a source, a bad stat, a syntax error, a bad reference."""
    _valid(root)
    return write_project(
        root,
        sources={"bad": "id: bad\nkind: raster\npath: x.tif\ntheme: elevation\n"},
        pipelines={
            "a": zonal_pipeline("a", "dem", ["mean", "avg"], dataset="a"),
            "b": "id: b\nsteps:\n\t- id: x\n",
            "c": zonal_pipeline("c", "nope", ["mean"], dataset="c"),
        })


BROKEN_LINES = [
    f"sources/bad.yaml:4: theme: 'elevation' is not one of {THEMES}",
    f"pipelines/a.yaml:8: steps[0].params.stats[1]: 'avg' is not one of {STAT_NAMES}",
    "pipelines/b.yaml:3: YAML syntax error at column 1: found character '\\t' that cannot "
    "start any token",
    "pipelines/c.yaml:7: steps[0].source: unknown source 'nope' "
    "(sources are defined in sources/*.yaml)",
]
BROKEN_FILES = ["sources/bad.yaml", "sources/dem.yaml", "pipelines/a.yaml", "pipelines/b.yaml",
                "pipelines/c.yaml", "pipelines/elev.yaml"]


# -- exit 0 ----------------------------------------------------------------------------------

def test_valid_project_exits_0(cli, tmp_path: Path) -> None:
    root = _valid(tmp_path / "proj")

    result = cli("--project", root, "validate")

    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "2 file(s) valid\n")


def test_example_project_at_the_repo_root_is_valid(cli) -> None:
    result = cli("--project", REPO, "validate", "--format", "json")

    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["problems"] == []
    assert {"sources/cop-dem-glo-30.yaml", "pipelines/elevation_terrain.yaml"} <= set(
        report["files"])


def test_example_files_validate_when_named(cli) -> None:
    result = cli("--project", REPO, "validate", REPO / "pipelines" / "elevation_terrain.yaml",
                 REPO / "sources" / "cop-dem-glo-30.yaml")

    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "2 file(s) valid\n")


# -- exit 1: every problem of every file, in one pass ---------------------------------------

def test_every_problem_of_every_file_in_one_pass(cli, tmp_path: Path) -> None:
    root = _broken(tmp_path / "proj")

    result = cli("--project", root, "validate")

    assert result.exit_code == 1
    assert result.stdout.splitlines() == BROKEN_LINES
    assert result.stderr == "4 problem(s) in 6 file(s) checked\n"


def test_json_report_shape(cli, tmp_path: Path) -> None:
    root = _broken(tmp_path / "proj")

    result = cli("--project", root, "validate", "--format", "json")

    assert result.exit_code == 1
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert list(report) == ["valid", "files", "problems"]
    assert report["valid"] is False
    assert sorted(report["files"]) == sorted(BROKEN_FILES)
    assert all(list(p) == ["file", "line", "path", "message", "kind"]
               for p in report["problems"])
    assert [(p["file"], p["line"], p["path"], p["kind"]) for p in report["problems"]] == [
        ("sources/bad.yaml", 4, "theme", "schema"),
        ("pipelines/a.yaml", 8, "steps[0].params.stats[1]", "semantic"),
        ("pipelines/b.yaml", 3, "", "yaml"),
        ("pipelines/c.yaml", 7, "steps[0].source", "semantic"),
    ]
    assert report["problems"][3]["message"] == ("unknown source 'nope' "
                                                "(sources are defined in sources/*.yaml)")


def test_json_and_text_report_the_same_problems(cli, tmp_path: Path) -> None:
    root = _broken(tmp_path / "proj")

    text = cli("--project", root, "validate").stdout.splitlines()
    problems = json.loads(cli("--project", root, "validate", "--format", "json").stdout)

    assert text == [Problem(**p).format() for p in problems["problems"]]


def test_json_of_a_valid_project(cli, tmp_path: Path) -> None:
    root = _valid(tmp_path / "proj")

    result = cli("--project", root, "validate", "--format", "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "valid": True, "files": ["sources/dem.yaml", "pipelines/elev.yaml"], "problems": []}


def test_whole_corpus_in_one_project_is_reported_in_one_run(
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_project(tmp_path / "proj", sources={"dem": raster_source("dem", "dem.tif")})
    # Files that show a bug are left out: one of them crashes the loader.
    cases = [c for c in corpus.cases(corpus.INVALID) if not c.xfail]
    for case in cases:
        case.install(root, monkeypatch)

    result = cli("--project", root, "validate", "--format", "json")

    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert {c.dest for c in cases} <= set(report["files"])
    problems = [Problem(**p) for p in report["problems"]]
    wrong = [line for c in cases
             for line in corpus.mismatches(c.expects, [p for p in problems if p.file == c.dest],
                                           strict=False)]
    assert not wrong, "\n".join(wrong)


def test_report_does_not_depend_on_the_hash_seed(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_project(tmp_path / "proj", sources={"dem": raster_source("dem", "dem.tif")})
    cases = [c for c in corpus.cases(corpus.INVALID) if not c.xfail]
    for case in cases:
        case.install(root, monkeypatch)
    procs = [subprocess.Popen([sys.executable, "-m", "h3pipe", "--project", str(root),
                               "validate"], env={**os.environ, "PYTHONHASHSEED": seed},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in ("0", "1", "3")]
    outputs = [p.communicate(timeout=60) for p in procs]

    assert [p.returncode for p in procs] == [1, 1, 1]
    assert outputs[0][0].count("\n") >= sum(len(c.expects) for c in cases)
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


# -- PATH arguments --------------------------------------------------------------------------

def test_path_limits_the_report_to_that_file(cli, tmp_path: Path) -> None:
    root = _broken(tmp_path / "proj")

    result = cli("--project", root, "validate", root / "pipelines" / "c.yaml")

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [BROKEN_LINES[3]]
    assert result.stderr == "1 problem(s) in 1 file(s) checked\n"


def test_valid_file_in_a_broken_project_exits_0(cli, tmp_path: Path) -> None:
    root = _broken(tmp_path / "proj")

    result = cli("--project", root, "validate", root / "pipelines" / "elev.yaml", "--format",
                 "json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "valid": True, "files": ["pipelines/elev.yaml"], "problems": []}


def test_several_paths_and_a_folder(cli, tmp_path: Path) -> None:
    root = _broken(tmp_path / "proj")

    two = cli("--project", root, "validate", root / "sources" / "bad.yaml",
              root / "pipelines" / "a.yaml")
    folder = cli("--project", root, "validate", root / "pipelines")

    assert two.exit_code == 1
    assert two.stdout.splitlines() == BROKEN_LINES[:2]
    assert folder.exit_code == 1
    assert folder.stdout.splitlines() == BROKEN_LINES[1:]
    assert folder.stderr == "3 problem(s) in 4 file(s) checked\n"


def test_pipeline_outside_the_project_is_checked_against_the_project_sources(
        cli, tmp_path: Path) -> None:
    root = _valid(tmp_path / "proj")
    other = (tmp_path / "elsewhere" / "x.yaml").resolve()
    other.parent.mkdir()
    other.write_text(zonal_pipeline("x", "dme", ["mean"]))

    result = cli("--project", root, "validate", other)

    assert result.exit_code == 1
    # Outside the project the file is shown by its full path; 'source:' is line 7.
    assert result.stdout.splitlines() == [
        f"{other}:7: steps[0].source: unknown source 'dme'; did you mean 'dem'? "
        "(sources are defined in sources/*.yaml)"]


def test_named_source_file_outside_the_project_is_checked(cli, tmp_path: Path) -> None:
    root = _valid(tmp_path / "proj")
    other = (tmp_path / "elsewhere" / "sources" / "x.yaml").resolve()
    other.parent.mkdir(parents=True)
    other.write_text("id: x\nkind: raster\n")

    result = cli("--project", root, "validate", other)

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{other}:1: 'path' is a required property",
                                          f"{other}:1: 'theme' is a required property"]


def test_relative_path_from_inside_the_project(cli, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = _broken(tmp_path / "proj")
    monkeypatch.chdir(root)

    result = cli("validate", "pipelines/a.yaml")

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [BROKEN_LINES[1]]


def test_project_from_the_environment(cli, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = _broken(tmp_path / "proj")
    monkeypatch.setenv("H3PIPE_PROJECT", str(root))

    result = cli("validate")

    assert result.exit_code == 1
    assert result.stdout.splitlines() == BROKEN_LINES


# -- exit 2: usage errors, never a traceback -------------------------------------------------

def test_missing_path_is_a_usage_error(cli, tmp_path: Path) -> None:
    root = _valid(tmp_path / "proj")
    missing = root / "pipelines" / "nope.yaml"

    result = cli("--project", root, "validate", missing)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: no such file or folder: {missing}\n"


def test_missing_project_folder_is_a_usage_error(cli, tmp_path: Path) -> None:
    result = cli("--project", tmp_path / "nowhere", "validate")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: project folder not found: {tmp_path / 'nowhere'}")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "mentions"), [
    (["validate", "--format", "xml"], "'xml' is not one of text, json"),
    (["validate", "--format"], "Option '--format' requires an argument"),
    (["validate", "--bogus"], "No such option: --bogus"),
    # --project and -v are global options: they go before the command.
    (["validate", "--project", "."], "No such option: --project"),
    (["validate", "-v"], "No such option: -v"),
])
def test_usage_errors_exit_2_without_traceback(cli, tmp_path: Path, args: list[str],
                                               mentions: str) -> None:
    root = _valid(tmp_path / "proj")

    result = cli("--project", root, *args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert mentions in result.stderr
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    # (click gives no "Try 'h3pipe validate --help'" hint for a missing option value.)
    if args != ["validate", "--format"]:
        assert "Try 'h3pipe validate --help' for help." in result.stderr


# -- -v ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_changes_nothing_for_a_valid_project(cli, tmp_path: Path, flag: str) -> None:
    root = _valid(tmp_path / "proj")

    quiet = cli("--project", root, "validate")
    loud = cli(flag, "--project", root, "validate")

    assert (loud.exit_code, loud.stdout, loud.stderr) == (
        quiet.exit_code, quiet.stdout, quiet.stderr)


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_changes_nothing_for_invalid_files(cli, tmp_path: Path, flag: str) -> None:
    root = _broken(tmp_path / "proj")

    quiet = cli("--project", root, "validate")
    loud = cli(flag, "--project", root, "validate")

    assert loud.exit_code == 1
    assert (loud.stdout, loud.stderr) == (quiet.stdout, quiet.stderr)
    assert "Traceback" not in loud.stderr


def test_impossible_date_is_reported_like_any_other_problem(cli, tmp_path: Path) -> None:
    root = _broken(tmp_path / "proj")
    (root / "pipelines" / "d.yaml").write_text(
        "id: d\n"
        "title: 2024-13-45\n"
        "output: {dataset: d, theme: terrain}\n"
        "steps: [{id: s, operation: zonal_stats, source: dem, params: {stats: [mean]}}]\n")

    result = cli("--project", root, "validate")

    assert result.exit_code == 1
    assert "internal error" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == BROKEN_LINES
    # Whether the fix rejects the date or keeps it as text, nothing else may point elsewhere.
    assert all(line.startswith("pipelines/d.yaml:2: ") for line in lines[4:])
