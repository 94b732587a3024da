"""The catalog endpoints through a real ``h3pipe serve`` and httpx: sources (register as
YAML or JSON, list, show, update, deactivate), pipelines (list, show, validate = ``plan``)
and runs (list with filters, show with progress, results, cancel). What they answer is
checked against the CLI run on the same project and store, and against h3 directly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h3
import pytest
import yaml

from tests.server.conftest import SMALL_BBOX, TERRAIN, Served, make_project, start_server

YAML = {"Content-Type": "application/yaml"}
SLOPE = textwrap.dedent("""\
    id: slope
    kind: raster
    path: data/dem.tif
    theme: terrain
    title: A second look at the ramp
    nodata: -9999
    """)


def h3pipe(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "h3pipe", "-p", str(root), *args],
                          capture_output=True, text=True, timeout=120)


def cli_error(root: Path, *args: str) -> str:
    """What the CLI says after 'error: ', for a command that must fail with exit code 2."""
    done = h3pipe(root, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), done.stderr
    return line.removeprefix("error: ")


@dataclass
class Site:
    root: Path
    server: Served
    run_id: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A project with one completed run (by the CLI), served without tokens."""
    root = make_project(tmp_path_factory.mktemp("catalog"))
    done = h3pipe(root, "run", "terrain", "--bbox", SMALL_BBOX, "-r", "7")
    assert done.returncode == 0, done.stderr
    shown = h3pipe(root, "runs", "show", "latest", "--format", "json")
    server = start_server(root)
    yield Site(root, server, json.loads(shown.stdout)["run"]["run_id"])
    server.stop()


@pytest.fixture
def client(site: Site) -> Iterator:
    with site.server.client() as c:
        yield c


# -- pipelines -------------------------------------------------------------------------

def test_pipelines_are_listed_with_their_steps_and_shown_as_written(client):
    written = yaml.safe_load(TERRAIN)
    listed = client.get("/pipelines")
    assert listed.status_code == 200
    assert listed.json() == [{
        "id": "terrain", "version": 1, "title": None, "dataset": "dem_stats",
        "theme": "terrain", "resolution": 7, "resolutions": None,
        "steps": [{"id": "stats", "operation": "zonal_stats", "source": "dem"}]}]
    assert client.get("/pipelines/terrain").json() == written


def test_an_unknown_pipeline_is_404_in_the_words_of_plan(client, site):
    words = cli_error(site.root, "plan", "terrian", "--bbox", SMALL_BBOX)
    for path in ("/pipelines/terrian", f"/pipelines/terrian/validate?bbox={SMALL_BBOX}"):
        answer = client.get(path)
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"] == words
        assert "did you mean 'terrain'" in words


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_validate_answers_what_plan_prints_as_json(client, site, method):
    printed = h3pipe(site.root, "plan", "terrain", "--bbox", SMALL_BBOX, "-r", "7",
                     "--format", "json")
    assert printed.returncode == 0, printed.stderr
    answer = client.request(method, "/pipelines/terrain/validate",
                            params={"bbox": SMALL_BBOX, "resolution": "7"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == json.loads(printed.stdout)
    assert answer.json()["run_id"] == site.run_id  # the same inputs: the run done


def test_validate_over_several_resolutions_is_the_plan_of_one_run(client, site):
    printed = h3pipe(site.root, "plan", "terrain", "--bbox", SMALL_BBOX, "-r", "6-7",
                     "--format", "json")
    answer = client.get("/pipelines/terrain/validate",
                        params={"bbox": SMALL_BBOX, "resolution": "6-7"})
    # zonal_stats over cells: one run reads the pixels once for both resolutions.
    assert answer.json()["resolutions"] == [6, 7]
    assert answer.json() == json.loads(printed.stdout)


@pytest.mark.parametrize("args", [
    ["--bbox", "30.15,-2.05,30.05"],   # three numbers
    ["--iso3", "XXQ"],                  # no such country
])
def test_a_bad_scope_is_400_in_the_words_of_plan(client, site, args):
    words = cli_error(site.root, "plan", "terrain", *args)
    answer = client.get("/pipelines/terrain/validate", params={args[0][2:]: args[1]})
    assert answer.status_code == 400
    assert answer.json()["detail"] == words


# -- runs ------------------------------------------------------------------------------

def test_a_run_is_shown_with_its_steps_progress_and_cells(client, site):
    west, south, east, north = (float(v) for v in SMALL_BBOX.split(","))
    box = h3.LatLngPoly([(south, west), (south, east), (north, east), (north, west)])
    cells = len(h3.h3shape_to_cells(box, 7))
    for ref in (site.run_id, site.run_id[:-4], "latest"):
        run = client.get(f"/runs/{ref}").json()
        assert run["run_id"] == site.run_id
        assert run["cells"] == cells
        assert [(s["step_id"], s["status"]) for s in run["steps"]] == [("stats", "completed")]
        assert run["progress"] == 100
        assert run["job"]["status"] == "successful"
        assert run["params"]["scope"]["argument"] == SMALL_BBOX


@pytest.mark.parametrize(("query", "found"), [
    ({}, True), ({"pipeline": "terrain"}, True), ({"pipeline": "slope"}, False),
    ({"state": "completed"}, True), ({"state": "successful"}, True),
    ({"state": "failed"}, False), ({"state": "running", "pipeline": "terrain"}, False),
])
def test_runs_are_listed_by_pipeline_and_state(client, site, query, found):
    answer = client.get("/runs", params=query)
    assert answer.status_code == 200
    assert [r["run_id"] for r in answer.json()] == ([site.run_id] if found else [])


def test_an_unknown_state_or_limit_is_400(client):
    assert client.get("/runs", params={"state": "done"}).status_code == 400
    assert client.get("/runs", params={"limit": 0}).status_code == 400
    assert client.get("/runs", params={"limit": 1}).status_code == 200


def test_run_results_are_what_runs_show_prints_as_json(client, site):
    printed = h3pipe(site.root, "runs", "show", site.run_id, "--format", "json")
    answer = client.get(f"/runs/{site.run_id}/results")
    assert answer.status_code == 200
    served, cli = answer.json(), json.loads(printed.stdout)
    assert served.pop("generated_at") >= cli.pop("generated_at")  # built when asked
    assert served == cli


@pytest.mark.parametrize("path", ["/runs/{ref}", "/runs/{ref}/results"])
def test_an_unknown_run_is_404_in_the_words_of_runs_show(client, site, path):
    words = cli_error(site.root, "runs", "show", "terrain-r9-nothing")
    answer = client.get(path.format(ref="terrain-r9-nothing"))
    assert answer.status_code == 404
    assert answer.json()["detail"] == words == ("no run 'terrain-r9-nothing'; list runs "
                                                "with 'h3pipe runs list'")


def test_cancelling_a_run_that_ended_is_refused_in_the_words_of_runs_cancel(client, site):
    words = cli_error(site.root, "runs", "cancel", site.run_id)
    answer = client.post(f"/runs/{site.run_id}/cancel")
    assert answer.status_code == 409  # the request is fine; the run's state refuses it
    assert answer.json()["detail"] == words
    assert "is not running (status completed)" in words


# -- sources ---------------------------------------------------------------------------

def test_a_source_is_registered_updated_and_deactivated(client, site):
    added = client.post("/sources", content=SLOPE, headers=YAML)
    assert (added.status_code, added.json()) == (201, {"id": "slope", "version": 1,
                                                       "action": "added"})
    assert added.headers["location"] == "/sources/slope"
    again = client.post("/sources", content=SLOPE, headers=YAML)
    assert (again.status_code, again.json()["action"]) == (200, "unchanged")
    # The same document as JSON is the same document.
    as_json = json.dumps(yaml.safe_load(SLOPE))
    same = client.post("/sources", content=as_json,
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert same.json() == {"id": "slope", "version": 1, "action": "unchanged"}

    updated = client.put("/sources/slope", content=SLOPE.replace("second", "third"),
                         headers={"Content-Type": "text/yaml"})
    assert updated.json() == {"id": "slope", "version": 2, "action": "updated"}
    shown = client.get("/sources/slope").json()
    assert shown["document"] == yaml.safe_load(SLOPE.replace("second", "third"))
    # Not the server's temporary file: it was gone before the answer left.
    assert shown["file"] == "(sent to h3pipe serve)"
    assert [(v["version"], v["action"]) for v in shown["versions"]] == [
        (1, "register"), (2, "register")]
    # The CLI reads the same catalog.
    cli = h3pipe(site.root, "sources", "show", "slope")
    assert cli.stdout.splitlines()[0].startswith("# slope: version 2, active")

    assert client.get("/sources").json()[0]["id"] == "slope"
    gone = client.delete("/sources/slope")
    assert gone.json() == {"id": "slope", "version": 3, "action": "deactivated"}
    assert client.post("/sources/slope/deactivate").json()["version"] == 3  # already
    assert [r["id"] for r in client.get("/sources").json()] == []
    for active in ("false", "all"):
        rows = client.get("/sources", params={"active": active}).json()
        assert [(r["id"], r["is_active"]) for r in rows] == [("slope", False)]
    assert client.get("/sources", params={"active": "all", "theme": "water"}).json() == []
    assert "deactivated" in h3pipe(site.root, "sources", "show", "slope").stdout
    restored = client.put("/sources/slope", content=SLOPE, headers=YAML)
    assert restored.json() == {"id": "slope", "version": 4, "action": "updated"}


def test_put_needs_the_same_id_and_a_registered_source(client, site):
    client.post("/sources", content=SLOPE, headers=YAML)
    other = client.put("/sources/slope", content=SLOPE.replace("id: slope", "id: hill"),
                       headers=YAML)
    assert other.status_code == 400
    assert other.json()["detail"].startswith("the body's id 'hill' is not 'slope'")
    unknown = client.put("/sources/hill", content=SLOPE.replace("id: slope", "id: hill"),
                         headers=YAML)
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == cli_error(site.root, "sources", "show", "hill")
    assert client.get("/sources/hill").status_code == 404


def test_an_invalid_source_is_422_with_the_lines_the_cli_prints(client, site, tmp_path):
    bad = "id: broken\nkind: rastr\npath: data/dem.tif\n"
    file = tmp_path / "broken.yaml"
    file.write_text(bad)
    words = cli_error(site.root, "sources", "register", str(file))
    listed = [line for line in h3pipe(site.root, "validate", str(file)).stdout.splitlines()
              if line.startswith(str(file))]
    answer = client.post("/sources", content=bad, headers=YAML)
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"] == words.replace(str(file), "request body")
    assert [p["text"] for p in body["problems"]] == [
        line.replace(str(file), "request body") for line in listed]
    assert len(body["problems"]) == 2
    assert client.get("/sources/broken").status_code == 404


@pytest.mark.parametrize(("body", "said"), [
    ('{"id": "x", "kind": "raster",', "request body:1: JSON syntax error at column 30"),
    ('{"id": "x", "id": "y"}', "duplicate key 'id'"),
    (b'{"id": "caf\xe9"}', "not UTF-8 text: byte 0xe9"),
])
def test_a_json_body_that_is_not_json_is_422(client, body, said):
    answer = client.post("/sources", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert said in answer.json()["detail"]


@pytest.mark.parametrize("media", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_source_is_sent_as_yaml_or_json_only(client, media):
    headers = {"Content-Type": media} if media else {}
    answer = client.post("/sources", content=SLOPE, headers=headers)
    assert answer.status_code == 415
    assert "application/yaml" in answer.json()["detail"]
