"""OGC API – Processes as a client uses it, against a real ``h3pipe serve``: landing page,
conformance, processes, execute, poll, results and downloads, whose values are checked
against exactextract on the same ramp raster; the same request twice; GeoJSON inline or
linked by size; bad inputs answered as problem details with the CLI's words and OGC's
exception types."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pyogrio
import pytest

from tests.server.conftest import SMALL_BBOX, Served, make_project, start_server
from tests.waiting import wait_until
from tests.zonal_reference import assert_same, reference

EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
REL = "http://www.opengis.net/def/rel/ogc/1.0/"
CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
INLINE = 25  # GeoJSON inline up to this many cells
MAX_VERTICES = 50
SMALL = [float(v) for v in SMALL_BBOX.split(",")]  # 20 cells at resolution 7
LARGER = [30.0, -2.1, 30.2, -1.9]  # the whole raster: 83 cells
STATS = ["mean", "min", "max", "count"]
SETTINGS = f"""\
    server:
      geojson_inline_cells: {INLINE}
      max_aoi_vertices: {MAX_VERTICES}
    """


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = make_project(tmp_path_factory.mktemp("ogc"), settings=SETTINGS)
    served = start_server(root, "--workers", "2")
    yield served
    served.stop()


def _execute(client, inputs: dict, **headers: str):
    return client.post("/processes/terrain/execution", json={"inputs": inputs},
                       headers=headers)


def _finished(client, location: str, deadline: float = 60) -> dict:
    """Poll the job until it ends; its last status."""
    def ended():
        info = client.get(location).json()
        return info if info["status"] in ("successful", "failed", "dismissed") else None
    return wait_until(ended, deadline, f"job {location} to end", every=0.02)


def _rels(document: dict) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in document["links"]}


def test_landing_page_and_conformance(server: Served) -> None:
    with server.client() as client:
        rels = _rels(client.get("/").json())
        conformance = client.get("/conformance").json()["conformsTo"]
    assert rels["self"] == server.url + "/"
    assert rels["service-desc"] == server.url + "/openapi.json"
    assert rels[REL + "conformance"] == server.url + "/conformance"
    assert rels[REL + "processes"] == server.url + "/processes"
    assert rels[REL + "job-list"] == server.url + "/jobs"
    assert {CONF + c for c in ("core", "json", "oas30", "job-list", "dismiss")} \
        <= set(conformance)


def test_processes_describe_each_pipeline_and_its_inputs(server: Served) -> None:
    with server.client() as client:
        listed = client.get("/processes").json()["processes"]
        described = client.get("/processes/terrain").json()
    assert [p["id"] for p in listed] == ["terrain"]
    # processSummary's required members, as the standard's ProcessList example has them
    assert {"id", "version", "jobControlOptions", "links"} <= set(listed[0])
    assert "async-execute" in described["jobControlOptions"]
    inputs = described["inputs"]
    assert set(inputs) == {"iso3", "bbox", "aoi", "resolution"}
    assert inputs["iso3"]["schema"] == {"type": "string", "pattern": "^[A-Za-z]{3}$"}
    bbox = inputs["bbox"]["schema"]["oneOf"][0]
    assert (bbox["minItems"], bbox["maxItems"], bbox["items"]) == (4, 4, {"type": "number"})
    aoi = inputs["aoi"]["schema"]["allOf"][1]
    assert aoi["properties"]["type"]["enum"] == ["Polygon", "MultiPolygon"]
    assert str(MAX_VERTICES) in inputs["aoi"]["description"]
    resolution = inputs["resolution"]["schema"]
    assert (resolution["minimum"], resolution["maximum"], resolution["default"]) == (0, 15, 7)
    assert set(described["outputs"]) == {"geoparquet", "gpkg", "csv", "geojson"}
    assert _rels(described)[REL + "execute"].endswith("/processes/terrain/execution")


def test_client_flow_execute_poll_results_download(server: Served, tmp_path: Path) -> None:
    with server.client() as client:
        answer = _execute(client, {"bbox": SMALL}, Prefer="respond-async")
        assert answer.status_code == 201, answer.text
        location = answer.headers["location"]
        first = answer.json()
        assert answer.headers["preference-applied"] == "respond-async"
        assert location == f"{server.url}/jobs/{first['jobID']}"
        # statusInfo's required members (the standard's StatusInfo example)
        assert first["type"] == "process" and first["processID"] == "terrain"
        assert first["status"] in ("accepted", "running", "successful")
        done = _finished(client, location)
        assert done["status"] == "successful", done
        assert done["progress"] == 100
        assert done["created"] <= done["started"] <= done["finished"] <= done["updated"]
        results = client.get(_rels(done)[REL + "results"]).json()
        assert set(results) == {"geoparquet", "gpkg", "csv", "geojson"}
        parquet = client.get(results["geoparquet"]["href"])
        gpkg = client.get(results["gpkg"]["href"])
        csv = client.get(results["csv"]["href"])
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(parquet.content))
    assert b"geo" in table.schema.metadata  # GeoParquet, not plain Parquet
    rows = {r["h3_index"]: r for r in table.to_pylist()}
    assert len(rows) == 20
    expected = reference(str(server.root / "data" / "dem.tif"), set(rows), STATS)
    assert_same(rows, expected, STATS)
    (tmp_path / "cells.gpkg").write_bytes(gpkg.content)
    assert len(pyogrio.read_dataframe(tmp_path / "cells.gpkg")) == 20
    assert len(csv.text.strip().splitlines()) == 1 + 20


def test_the_same_request_twice_is_the_same_job(server: Served) -> None:
    inputs = {"bbox": [30.02, -2.03, 30.12, -1.96], "resolution": 6}
    with server.client() as client:
        first = _execute(client, inputs)
        second = _execute(client, {"bbox": {"value": inputs["bbox"]}, "resolution": 6})
        assert first.headers["location"] == second.headers["location"]
        done = _finished(client, first.headers["location"])
        again = _execute(client, inputs)
        listed = [j["jobID"] for j in client.get("/jobs", params={"limit": 100}).json()["jobs"]]
        ended = client.delete(first.headers["location"])
    assert (ended.status_code, ended.json()["title"]) == (409, "Conflict")
    assert "is not running (status completed)" in ended.json()["detail"]
    assert again.headers["location"] == first.headers["location"]
    assert again.json()["status"] == "successful"
    assert again.json()["finished"] == done["finished"]  # not run again
    assert listed.count(done["jobID"]) == 1


def test_geojson_inline_for_a_small_run_a_link_for_a_larger(server: Served) -> None:
    with server.client() as client:
        small = _finished(client, _execute(client, {"bbox": SMALL}).headers["location"])
        large = _finished(client, _execute(client, {"bbox": LARGER}).headers["location"])
        inline = client.get(f"/jobs/{small['jobID']}/results").json()["geojson"]
        linked = client.get(f"/jobs/{large['jobID']}/results").json()["geojson"]
        downloaded = client.get(linked["href"]).json()
    assert inline["mediaType"] == "application/geo+json"
    assert len(inline["value"]["features"]) == 20 <= INLINE
    assert "value" not in linked and str(INLINE) in linked["title"]
    assert len(downloaded["features"]) == 83 > INLINE


def test_an_aoi_polygon_is_a_scope(server: Served) -> None:
    w, s, e, n = SMALL
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    polygon = {"type": "Polygon", "coordinates": [ring]}
    with server.client() as client:
        aoi = _finished(client, _execute(client, {"aoi": polygon}).headers["location"])
        box = _finished(client, _execute(client, {"bbox": SMALL}).headers["location"])
        cells = [pq.read_table(io.BytesIO(client.get(
            f"/jobs/{j['jobID']}/results/geoparquet").content)).column("h3_index").to_pylist()
            for j in (aoi, box)]
        same = _execute(client, {"aoi": {"value": polygon}})
    assert aoi["status"] == "successful" and aoi["jobID"] != box["jobID"]
    assert sorted(cells[0]) == sorted(cells[1])  # the same area, the same cells
    assert same.json()["jobID"] == aoi["jobID"]
    # the polygon was written by the server into its own folder of the store
    assert [p.name.startswith("aoi-") for p in
            (server.root / ".h3pipe" / "server" / "aoi").iterdir()] == [True]


@pytest.mark.parametrize(("inputs", "status", "words"), [
    ({"iso3": "RWA", "bbox": SMALL}, 400,
     "give exactly one of --iso3, --bbox or --aoi (got --iso3, --bbox)"),
    ({"bbox": SMALL, "resolution": 16}, 400, "--resolution 16 is outside 0..15"),
    ({"bbox": [30.2, -2.0, 30.0, -1.9, 5]}, 400, "--bbox must be four numbers"),
    ({"bbox": SMALL, "workers": 4}, 400, "unknown input 'workers'"),
    ({"aoi": {"type": "Point", "coordinates": [30.1, -2.0]}}, 400,
     "--aoi must be a GeoJSON Polygon or MultiPolygon"),
    ({"aoi": {"type": "Polygon", "coordinates": [[[30 + i / 1e3, -2.0] for i in range(60)]]}},
     413, f"the AOI has 60 vertices, more than this server takes ({MAX_VERTICES}"),
])
def test_bad_inputs_answer_problem_details_in_the_cli_words(
        server: Served, inputs: dict, status: int, words: str) -> None:
    with server.client() as client:
        answer = _execute(client, inputs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert words in answer.json()["detail"]


def test_unknown_process_and_job_answer_ogc_exception_types(server: Served) -> None:
    with server.client() as client:
        process = client.get("/processes/nope")
        execute = client.post("/processes/nope/execution", json={"inputs": {"bbox": SMALL}})
        job = client.get("/jobs/terrain-r7-000000000000")
        results = client.get("/jobs/terrain-r7-000000000000/results")
        prefix = client.get("/jobs/terrain")  # a prefix is no job id
    assert process.status_code == execute.status_code == 404
    assert process.json()["type"] == execute.json()["type"] == EXCEPTIONS + "no-such-process"
    assert "unknown pipeline 'nope' (pipelines: terrain)" in process.json()["detail"]
    for answer in (job, results, prefix):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"] == EXCEPTIONS + "no-such-job"


def test_job_list_is_an_ogc_job_list(server: Served) -> None:
    with server.client() as client:
        _finished(client, _execute(client, {"bbox": SMALL}).headers["location"])
        listed = client.get("/jobs", params={"limit": 2}).json()
        mine = client.get("/jobs", params={"processID": "terrain",
                                           "status": "successful"}).json()["jobs"]
    assert len(listed["jobs"]) <= 2 and _rels(listed)["self"].endswith("/jobs")
    assert mine and all(j["status"] == "successful" for j in mine)
    assert all(_rels(j)["self"] == f"{server.url}/jobs/{j['jobID']}" for j in mine)
    json.dumps(listed)  # plain JSON
