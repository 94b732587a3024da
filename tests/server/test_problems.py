"""Errors over HTTP as RFC 9457 problem details, against a real server: each kind of error
answers ``application/problem+json`` with type, title, status, detail and instance; an
h3pipe error's detail is what the CLI prints for the same mistake (the CLI is run on the
same project to compare) and its status follows the table in docs/security.md, which a
test here holds to :func:`h3pipe.server.problems.status_of`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import h3pipe.errors
from h3pipe.api import Project
from h3pipe.server.app import create_app
from h3pipe.server.problems import TITLES, status_of
from tests.server.conftest import SMALL_BBOX, Served, make_project, start_server

DOC = Path(__file__).parents[2] / "docs" / "security.md"
FIELDS = {"type", "title", "status", "detail", "instance"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A project with no run yet, served with a read token and a small body limit."""
    root = make_project(tmp_path_factory.mktemp("problems"), settings=(
        "server:\n  max_body_bytes: 2048\n  tokens:\n"
        "    - {sha256: 0a2f7e1b2d56c4e6f6a4a8b7e1f0b5f1f0d5c1b2a3e4f5a6b7c8d9e0f1a2b3c4, "
        "scope: read}\n"))
    server = start_server(root)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = make_project(tmp_path_factory.mktemp("problems-open"))
    server = start_server(root)
    yield server
    server.stop()


def is_problem(answer, status: int, path: str) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert FIELDS <= set(body)
    assert (body["type"], body["title"], body["status"], body["instance"]) == (
        "about:blank", TITLES[status], status, path)
    return body


# (what the CLI runs, what the client asks, the status) for each kind of h3pipe error
SAME_MISTAKE = [
    pytest.param(["runs", "show", "nope"], ("GET", "/runs/nope"), 404, id="no run"),
    pytest.param(["sources", "show", "nope"], ("GET", "/sources/nope"), 404, id="no source"),
    pytest.param(["sources", "deactivate", "nope"], ("DELETE", "/sources/nope"), 404,
                 id="deactivate no source"),
    pytest.param(["plan", "nope", "--bbox", SMALL_BBOX],
                 ("GET", f"/pipelines/nope/validate?bbox={SMALL_BBOX}"), 404, id="no pipeline"),
    pytest.param(["export", "nope", "-o", "{tmp}/out.csv"], ("GET", "/maps/nope"), 404,
                 id="no dataset"),
    pytest.param(["plan", "terrain", "--bbox", "30.2,-2,30.1,-1.9,4"],
                 ("GET", "/pipelines/terrain/validate?bbox=30.2,-2,30.1,-1.9,4"), 400,
                 id="bad bbox"),
    pytest.param(["plan", "terrain", "--bbox", SMALL_BBOX, "-r", "16"],
                 ("GET", f"/pipelines/terrain/validate?bbox={SMALL_BBOX}&resolution=16"), 400,
                 id="bad resolution"),
    pytest.param(["plan", "terrain", "--bbox", SMALL_BBOX, "--from-step", "nope"],
                 ("GET", f"/pipelines/terrain/validate?bbox={SMALL_BBOX}&from_step=nope"), 400,
                 id="bad from-step"),
    pytest.param(["runs", "cancel", "latest"], ("POST", "/runs/latest/cancel"), 404,
                 id="no runs yet"),
]


@pytest.mark.parametrize(("argv", "request_", "status"), SAME_MISTAKE)
def test_an_h3pipe_error_answers_the_cli_words_and_exit_code(open_site, cli, tmp_path, argv,
                                                             request_, status):
    said = cli("-p", open_site.root, *[a.format(tmp=tmp_path) for a in argv])
    assert said.exit_code == 2, said.stderr
    words = said.stderr.strip().splitlines()[-1].removeprefix("error: ")
    method, path = request_
    with open_site.client() as client:
        body = is_problem(client.request(method, path), status, path.split("?")[0])
    assert body["detail"] == words
    assert body["exit_code"] == said.exit_code
    assert status_of(getattr(h3pipe.errors, body["error"])("x")) == status


def test_a_validation_failure_lists_every_problem(open_site, cli, tmp_path):
    text = "id: broken\nkind: rastr\n"
    (tmp_path / "broken.yaml").write_text(text)
    said = cli("-p", open_site.root, "sources", "register", tmp_path / "broken.yaml")
    with open_site.client() as client:
        body = is_problem(client.post("/sources", content=text,
                                      headers={"Content-Type": "application/yaml"}),
                          422, "/sources")
    assert (body["error"], body["exit_code"]) == ("ValidationFailed", said.exit_code)
    assert "error: " + body["detail"].replace("request body", str(tmp_path / "broken.yaml")) \
        == said.stderr.strip()
    assert [(p["line"], p["path"]) for p in body["problems"]] == [(1, ""), (2, "kind")]


@pytest.mark.parametrize(("method", "path", "status", "said"), [
    ("GET", "/nowhere", 404, "Not Found"),
    ("DELETE", "/pipelines", 405, "Method Not Allowed"),
    ("GET", "/runs?limit=many", 400, "bad request: query.limit: Input should be a valid "
                                     "integer, unable to parse string as an integer"),
    ("GET", "/sources?active=maybe", 400, "bad request: query.active: Input should be 'true', "
                                          "'false' or 'all'"),
    ("POST", "/sources", 415, "a source is sent as YAML or JSON, not text/plain"),
])
def test_errors_of_http_itself_are_problems_too(open_site, method, path, status, said):
    with open_site.client() as client:
        body = is_problem(client.request(method, path, content="x",
                                         headers={"Content-Type": "text/plain"}),
                          status, path.split("?")[0])
    assert body["detail"].startswith(said)


def test_401_403_and_413_are_problems(site):
    with site.client() as anyone:
        body = is_problem(anyone.get("/runs"), 401, "/runs")
        assert body["detail"] == ("this server needs a bearer token; send "
                                  "'Authorization: Bearer TOKEN'")
        body = is_problem(anyone.get("/runs", headers={"Authorization": "Bearer guess"}),
                          401, "/runs")
        assert body["detail"] == "the bearer token is not one of this server's"
        big = anyone.post("/sources", content=b"x" * 3000)
        is_problem(big, 413, "/sources")


def test_a_bug_is_a_500_problem_that_names_only_its_kind(tmp_path):
    """No route fails this way on purpose; one added here does (in process: the
    exception must reach the app's last handler, with no server to start)."""
    app = create_app(Project(make_project(tmp_path)))

    def broken() -> None:
        raise KeyError("/srv/secret/path")

    app.add_api_route("/broken", broken)
    async def ask() -> httpx.Response:  # no lifespan: no workers started
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://h3pipe") as client:
            return await client.get("/broken")

    body = is_problem(asyncio.run(ask()), 500, "/broken")
    assert body["detail"].startswith("internal error: KeyError (a bug")
    assert "/srv/secret" not in str(body)


# -- the table -------------------------------------------------------------------------

ROW = re.compile(r"^\| `(\w+)` \| (\d+) \| (\d{3}) ([A-Za-z ]+) \|$")


def documented() -> dict[str, tuple[int, int, str]]:
    rows = [ROW.match(line) for line in DOC.read_text().splitlines()]
    return {m[1]: (int(m[2]), int(m[3]), m[4]) for m in rows if m}


def test_the_documented_status_table_is_the_servers():
    table = documented()
    errors = {name: cls for name, cls in vars(h3pipe.errors).items()
              if isinstance(cls, type) and issubclass(cls, h3pipe.errors.H3PipeError)}
    assert set(table) == set(errors), "docs/security.md lists every error class, no other"
    for name, (exit_code, status, title) in table.items():
        error = errors[name].__new__(errors[name])  # status_of reads the class alone
        assert (error.exit_code, status_of(error), TITLES[status]) == (exit_code, status,
                                                                      title), name
