"""ProjectConfig.check and .load: the corpus of broken files, and the report's guarantees.

Every expected line in ``tests/corpus`` was written by hand from the YAML text of its file
(see ``tests/corpus/corpus_cases.py`` for the header format and the matcher).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from h3pipe.config.project import ProjectConfig
from h3pipe.errors import ConfigError, Problem, ValidationFailed
from tests.conftest import raster_source, write_project

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
import corpus_cases as corpus  # noqa: E402

DEM = raster_source("dem", "dem.tif")


def _project(root: Path, **files: dict[str, str]) -> Path:
    """A project holding one valid source 'dem' (sources/dem.yaml) plus ``files``."""
    sources = {"dem": DEM, **files.get("sources", {})}
    return write_project(root, sources=sources, pipelines=files.get("pipelines", {}))


# -- the corpus ------------------------------------------------------------------------------

def test_corpus_is_big_enough_and_every_invalid_file_says_what_it_expects() -> None:
    invalid = corpus.cases(corpus.INVALID)
    assert len(invalid) >= 20
    assert all(c.expects for c in invalid), [c.path.name for c in invalid if not c.expects]
    # The brief's rule: the very first line of each broken file is an expectation.
    assert all(c.path.read_text().startswith("# expect: ") for c in invalid)
    assert {c.kind for c in invalid} == {"source", "pipeline"}
    assert len(corpus.cases(corpus.VALID)) >= 3


@pytest.mark.parametrize("case", corpus.params(corpus.INVALID))
def test_invalid_corpus_file_reports_exactly_the_expected_lines(
        case: corpus.Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj")
    case.install(root, monkeypatch)

    if case.hashseeds:
        runs = _check_in_fresh_interpreters(root, case.hashseeds)
    else:
        report = ProjectConfig(root).check()
        runs = {"in process": (report.files, report.problems)}

    for seed, (files, problems) in runs.items():
        assert case.dest in files
        # Strict: nothing is reported that the file does not announce, in any file.
        wrong = corpus.mismatches(case.expects, problems)
        assert not wrong, f"PYTHONHASHSEED: {seed}\n" + "\n".join(wrong)


def _check_in_fresh_interpreters(root: Path, seeds: tuple[int, ...],
                                 ) -> dict[object, tuple[list[str], list[Problem]]]:
    """``h3pipe validate --format json`` in one new process per hash seed, run in parallel."""
    procs = {}
    for seed in seeds:
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        procs[seed] = subprocess.Popen(
            [sys.executable, "-m", "h3pipe", "--project", str(root), "validate", "--format",
             "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict[object, tuple[list[str], list[Problem]]] = {}
    for seed, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1, stderr
        report = json.loads(stdout)
        out[seed] = (report["files"], [Problem(**p) for p in report["problems"]])
    return out


@pytest.mark.parametrize("case", corpus.params(corpus.VALID))
def test_valid_corpus_file_has_no_problem(case: corpus.Case, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj")
    case.install(root, monkeypatch)

    report = ProjectConfig(root).check()

    assert [p.format() for p in report.problems] == []
    assert case.dest in report.files


def test_all_valid_corpus_files_together_load(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj")
    for case in corpus.cases(corpus.VALID):
        case.install(root, monkeypatch)

    sources, pipelines, _ = ProjectConfig(root).load()

    assert set(sources) == {"dem", "dem-full.v2", "env-set"}
    # ${VAR:-default} with VAR unset takes the default; ${VAR} takes the value.
    assert sources["dem-full.v2"].location == "tiles/*.tif"
    assert sources["env-set"].location == "/data/dem.tif"
    assert set(pipelines) == {"minimal", "full-pipeline_1", "aliases", "date-like-title"}
    full = pipelines["full-pipeline_1"]
    assert [s.id for s in full.steps] == ["base", "left", "right", "top"]
    assert full.steps[1].input == "$base"
    assert full.steps[3].depends_on == ("left", "right")
    assert pipelines["aliases"].steps[1].params == {"stats": ["mean", "max"]}


# -- semantic checks not tied to one file's header ----------------------------------------------

def test_cycle_message_names_every_member_once(tmp_path: Path) -> None:
    case = corpus.read_case(corpus.INVALID / "p_cycle3.yaml")
    root = _project(tmp_path / "proj")
    (root / case.dest).write_text(case.path.read_text())

    [problem] = ProjectConfig(root).check().problems

    assert problem.kind == "semantic"
    loop = problem.message.split("dependency cycle: ", 1)[1].split(";")[0].split(" -> ")
    # A closed walk: first == last, and the members in between are aa, bb, cc once each.
    assert loop[0] == loop[-1]
    assert sorted(loop[:-1]) == ["aa", "bb", "cc"]
    # Edges run from a step to the steps that need it: cc feeds aa, aa feeds bb, bb feeds cc.
    start = loop.index("aa")
    assert (loop[:-1] * 2)[start:start + 3] == ["aa", "bb", "cc"]
    # Whatever member it is anchored at, file, line and path are that member's.
    where = {"aa": ("steps[0]", 8), "bb": ("steps[1]", 13), "cc": ("steps[2]", 18)}
    assert (problem.file, problem.path, problem.line) == ("pipelines/p_cycle3.yaml",
                                                          *where[loop[0]])


def test_duplicate_pipeline_id_across_files_is_reported_on_the_second_file(
        tmp_path: Path) -> None:
    text = """\
        id: same
        output: {dataset: ds, theme: terrain}
        steps:
          - {id: elev, operation: zonal_stats, source: dem, params: {stats: [mean]}}
        """
    root = _project(tmp_path / "proj", pipelines={"a": text, "b": text})

    problems = ProjectConfig(root).check().problems

    assert [p.format() for p in problems] == [
        "pipelines/b.yaml:1: id: pipeline id 'same' is already defined in pipelines/a.yaml; "
        "ids must be unique"]


def test_zero_byte_file_is_reported_as_empty(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    (root / "pipelines" / "blank.yaml").write_bytes(b"")

    problems = ProjectConfig(root).check().problems

    assert [(p.file, p.line, p.path, p.message, p.kind) for p in problems] == [
        ("pipelines/blank.yaml", 1, "", "file is empty", "yaml")]


def test_project_settings_file_is_validated(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    (root / "h3pipe.yaml").write_text("name: demo\nstore: .h3pipe\ndefaults:\n  worker: 4\n")

    report = ProjectConfig(root).check()

    assert "h3pipe.yaml" in report.files
    assert [p.format() for p in report.problems] == [
        "h3pipe.yaml:4: defaults: unknown key 'worker'; did you mean 'workers'?"]


def test_problems_in_several_files_are_reported_in_one_pass(tmp_path: Path) -> None:
    root = _project(
        tmp_path / "proj",
        sources={"bad": "id: bad\nkind: raster\npath: x.tif\ntheme: elevation\n"},
        pipelines={
            "one": "id: one\noutput: {dataset: ds, theme: terrain}\nsteps:\n"
                   "  - {id: s, operation: zonal_stats, source: dem, params: {stats: [avg]}}\n",
            "two": "id: two\noutput: {dataset: ds, theme: terrain\n",
        })

    report = ProjectConfig(root).check()

    assert sorted(p.file for p in report.problems) == [
        "pipelines/one.yaml", "pipelines/two.yaml", "sources/bad.yaml"]
    assert sorted(report.files) == [
        "pipelines/one.yaml", "pipelines/two.yaml", "sources/bad.yaml", "sources/dem.yaml"]


# -- limiting the check to some paths ------------------------------------------------------------

def _two_pipelines(root: Path) -> Path:
    return _project(root, pipelines={
        "good": "id: good\noutput: {dataset: ds, theme: terrain}\nsteps:\n"
                "  - {id: s, operation: zonal_stats, source: dem, params: {stats: [mean]}}\n",
        "bad": "id: bad\noutput: {dataset: ds, theme: terrain}\nsteps:\n"
               "  - {id: s, operation: zonal_stats, source: nope, params: {stats: [mean]}}\n",
    })


def test_check_of_one_file_still_resolves_sources_and_reports_only_that_file(
        tmp_path: Path) -> None:
    root = _two_pipelines(tmp_path / "proj")

    good = ProjectConfig(root).check([root / "pipelines" / "good.yaml"])
    bad = ProjectConfig(root).check([root / "pipelines" / "bad.yaml"])

    assert good.ok and good.files == ["pipelines/good.yaml"]
    assert bad.files == ["pipelines/bad.yaml"]
    assert [p.format() for p in bad.problems] == [
        "pipelines/bad.yaml:4: steps[0].source: unknown source 'nope' "
        "(sources are defined in sources/*.yaml)"]


def test_check_of_a_source_file_reports_its_problems(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj",
                    sources={"bad": "id: bad\nkind: raster\npath: x.tif\ntheme: elevation\n"})

    report = ProjectConfig(root).check([root / "sources" / "bad.yaml"])

    assert report.files == ["sources/bad.yaml"]
    assert [(p.file, p.line, p.path) for p in report.problems] == [
        ("sources/bad.yaml", 4, "theme")]


# -- load ----------------------------------------------------------------------------------------

def test_load_raises_validation_failed_with_every_problem(tmp_path: Path) -> None:
    root = _two_pipelines(tmp_path / "proj")
    (root / "pipelines" / "worse.yaml").write_text("id: worse\n")

    with pytest.raises(ValidationFailed) as info:
        ProjectConfig(root).load()

    err = info.value
    assert isinstance(err, ConfigError) and err.exit_code == 2
    assert [p.file for p in err.problems] == ["pipelines/bad.yaml", "pipelines/worse.yaml",
                                              "pipelines/worse.yaml"]
    assert str(err).startswith("pipelines/bad.yaml:4: steps[0].source: unknown source 'nope'")
    assert str(err).endswith("(and 2 more problem(s); run 'h3pipe validate')")


def test_load_of_a_valid_project_returns_specs(tmp_path: Path) -> None:
    root = _two_pipelines(tmp_path / "proj")
    (root / "pipelines" / "bad.yaml").unlink()

    sources, pipelines, settings = ProjectConfig(root).load()

    assert list(sources) == ["dem"] and sources["dem"].location == "dem.tif"
    assert list(pipelines) == ["good"]
    assert pipelines["good"].steps[0].params == {"stats": ["mean"]}
    assert settings == {}


# -- Problem.format ------------------------------------------------------------------------------

@pytest.mark.parametrize(("problem", "line"), [
    (Problem("pipelines/x.yaml", 12, "steps[1].params.stats[0]", "'avg' is bad"),
     "pipelines/x.yaml:12: steps[1].params.stats[0]: 'avg' is bad"),
    (Problem("pipelines/x.yaml", 3, "", "file is empty", "yaml"),
     "pipelines/x.yaml:3: file is empty"),
    (Problem("pipelines/x.yaml", None, "", "file not found", "io"),
     "pipelines/x.yaml: file not found"),
])
def test_problem_format(problem: Problem, line: str) -> None:
    assert problem.format() == line

