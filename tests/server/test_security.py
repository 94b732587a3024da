"""The HTTP server's defences, each against a real ``h3pipe serve`` process: bearer tokens
by SHA-256 (in h3pipe.yaml and a tokens file), read and run scopes (401 and 403 as RFC
6750 says), tokens refused in URLs and never logged, bounded bodies (with or without
Content-Length) and AOIs, no path from a request reaching a file outside the project,
CORS closed unless an origin is configured, loopback by default, and no password of the
store in any answer. docs/security.md ("HTTP server") says why each is so."""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from h3pipe.server.problems import safe
from tests.pg import pg_url  # noqa: F401  (a fixture)
from tests.server.conftest import SMALL_BBOX, Served, make_project, start_server

READ = "read-" + secrets.token_urlsafe(24)
RUN = "run-" + secrets.token_urlsafe(24)
PORTAL = "https://portal.example.org"
LIMIT = 4096  # max_body_bytes
YAML = {"Content-Type": "application/yaml"}
SOURCE = "id: {id}\nkind: raster\npath: '{path}'\ntheme: terrain\nnodata: -9999\n"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hashed_by_the_cli(token: str) -> str:
    done = subprocess.run([sys.executable, "-m", "h3pipe", "serve", "--hash-token"],
                          input=token + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout + done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server with a read token in h3pipe.yaml, a run token in a tokens file (hashed by
    ``h3pipe serve --hash-token``), one CORS origin, a 4 KiB body and 50-vertex AOI limit."""
    root = tmp_path_factory.mktemp("guarded")
    (root / "tokens.txt").write_text(f"# who may run\nrun {hashed_by_the_cli(RUN)} ops\n")
    make_project(root, settings=textwrap.dedent(f"""\
        server:
          tokens:
            - {{sha256: {sha(READ)}, scope: read, name: viewer}}
          tokens_file: tokens.txt
          cors_origins: ['{PORTAL}']
          max_body_bytes: {LIMIT}
          max_aoi_vertices: 50
        """))
    server = start_server(root)
    yield server
    server.stop()


# -- tokens and scopes -----------------------------------------------------------------

READS = ["/sources", "/pipelines", "/runs", "/jobs", "/processes", "/",
         "/pipelines/terrain", f"/pipelines/terrain/validate?bbox={SMALL_BBOX}"]
WRITES = [("POST", "/sources"), ("PUT", "/sources/dem"), ("DELETE", "/sources/dem"),
          ("POST", "/sources/dem/deactivate"), ("POST", "/runs/latest/cancel"),
          ("POST", "/processes/terrain/execution"), ("DELETE", "/jobs/terrain-r7-0")]


@pytest.mark.parametrize("path", READS)
def test_reading_needs_a_known_token(guarded, path):
    with guarded.client() as anyone:
        missing = anyone.get(path)
        wrong = anyone.get(path, headers={"Authorization": "Bearer " + RUN[::-1]})
        basic = anyone.get(path, headers={"Authorization": "Basic cnVuOnJ1bg=="})
    for answer in (missing, basic):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == 'Bearer realm="h3pipe"'
        assert answer.headers["content-type"] == "application/problem+json"
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="h3pipe", error="invalid_token"'
    for token in (READ, RUN):
        with guarded.client(token) as client:
            assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_changing_anything_needs_the_run_scope(guarded, method, path):
    with guarded.client() as anyone:
        assert anyone.request(method, path, json={}).status_code == 401
    with guarded.client(READ) as reader:
        answer = reader.request(method, path, json={})
    assert answer.status_code == 403
    assert answer.headers["www-authenticate"] == (
        'Bearer realm="h3pipe", error="insufficient_scope", scope="run"')
    assert "'run' scope" in answer.json()["detail"]
    with guarded.client(RUN) as runner:  # past the door: the request's own answer
        assert runner.request(method, path, json={}).status_code not in (401, 403)


def test_the_run_scope_registers_a_source(guarded):
    with guarded.client(RUN) as runner:
        answer = runner.post("/sources", content=SOURCE.format(id="ramp", path="data/dem.tif"),
                             headers=YAML)
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("query", ["token={t}", "access_token={t}", "TOKEN={t}",
                                   "limit=5&access_token={t}", "%74oken={t}"])
@pytest.mark.parametrize("path", ["/sources", "/openapi.json", "/dashboard", "/nowhere"])
def test_a_token_in_the_url_is_refused_even_with_a_good_header(guarded, query, path):
    with guarded.client(RUN) as runner:
        answer = runner.get(f"{path}?{query.format(t=RUN)}")
    assert answer.status_code == 400
    assert "never accepted in a URL" in answer.json()["detail"]
    assert RUN not in answer.text
    assert not any(RUN in line or READ in line for line in guarded.lines)


def test_hash_token_refuses_an_empty_token():
    done = subprocess.run([sys.executable, "-m", "h3pipe", "serve", "--hash-token"],
                          input="\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: the token read on standard input is empty")


# -- limits ----------------------------------------------------------------------------

def _chunks(size: int) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length), ``size`` bytes in all."""
    for start in range(0, size, 1000):
        yield b" " * min(1000, size - start)


@pytest.mark.parametrize("path", ["/sources", "/processes/terrain/execution"])
@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_413(guarded, path, chunked):
    body = _chunks(LIMIT + 1) if chunked else b" " * (LIMIT + 1)
    with guarded.client(RUN) as runner:
        answer = runner.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413, answer.text
    assert answer.json()["detail"] == (f"the request body is over {LIMIT} bytes, this "
                                       "server's limit (server: max_body_bytes in h3pipe.yaml)")
    with guarded.client(RUN) as runner:  # at the limit: read, and answered on its merits
        within = runner.post(path, content=_chunks(LIMIT) if chunked else b" " * LIMIT,
                             headers={"Content-Type": "application/json"})
    assert within.status_code not in (413, 500), within.text


def test_an_aoi_over_the_vertex_limit_is_refused(guarded):
    ring = [[30.05 + 0.1 * i / 60, -2.05] for i in range(60)] + [[30.1, -1.95], [30.05, -2.05]]
    aoi = {"type": "Polygon", "coordinates": [ring]}
    with guarded.client(RUN) as runner:
        answer = runner.post("/processes/terrain/execution",
                             json={"inputs": {"aoi": aoi, "resolution": 7}})
    assert answer.status_code == 413
    assert "62 vertices" in answer.json()["detail"]


# -- paths -----------------------------------------------------------------------------

HOSTILE = ["..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..", "%2e%2e",
           "%2Fetc%2Fpasswd", "..%5C..%5Cetc%5Cpasswd", "%252e%252e%252fetc%252fpasswd",
           "~root", "file:%2F%2F%2Fetc%2Fpasswd", "....%2F%2F....%2F%2Fetc%2Fpasswd"]


def _raw(served: Served, method: str, path: str, token: str) -> tuple[int, str]:
    """A request with the path exactly as written (httpx would normalise dot segments)."""
    where = urlsplit(served.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.request(method, path, body=b"{}" if method in ("POST", "PUT") else None,
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, answer.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_no_path_parameter_reaches_a_file_outside_the_project(guarded):
    """Every route the server has (from its OpenAPI document), each of its parameters
    given each traversal: none answers a file's content, none fails inside."""
    with guarded.client(RUN) as runner:
        paths = runner.get("/openapi.json").json()["paths"]
    tried = 0
    for template, methods in paths.items():
        names = [part[1:-1] for part in template.split("/") if part.startswith("{")]
        for name in names:
            for value in HOSTILE:
                path = template
                for other in names:
                    path = path.replace("{" + other + "}", value if other == name else "x")
                for method in methods:
                    status, text = _raw(guarded, method.upper(), path, RUN)
                    tried += 1
                    assert status in (400, 404, 405, 413, 415, 422), (method, path, text)
                    assert "root:" not in text, (method, path)
    assert tried > 100
    for raw in ("/sources/../../../../etc/passwd", "/runs/..%2f..%2f..%2fetc/passwd",
                "/pipelines/terrain/../../../../etc/passwd",
                "/dashboard/static/../../../../etc/passwd",
                "/dashboard/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                "/dashboard/static//etc/passwd", "/dashboard/static/%2Fetc%2Fpasswd"):
        status, text = _raw(guarded, "GET", raw, RUN)
        assert status == 404 and "root:" not in text, raw


@pytest.mark.parametrize("page", ["/dashboard/runs/{}", "/dashboard/map/{}"])
def test_dashboard_pages_read_no_file_named_in_their_path(guarded, page):
    for value in HOSTILE:
        status, text = _raw(guarded, "GET", page.format(value), RUN)
        assert status in (200, 404) and "root:" not in text, (page, value)


@pytest.mark.parametrize("where", ["/etc/passwd", "../../../../etc/passwd",
                                   "data/../../../etc/passwd", "~/.ssh/id_rsa",
                                   "/vsizip//etc/x.zip", "/vsis3/bucket/x.tif",
                                   "s3://bucket/x.tif", "file:///etc/passwd",
                                   "postgresql://h3pipe@db/h3", 'NETCDF:"/etc/x.nc":v',
                                   "..\\..\\etc\\passwd", "${HOME}/x.tif", "data/${X:-a}.tif"])
def test_a_posted_source_may_not_point_outside_the_project(guarded, where):
    text = SOURCE.format(id="escape", path=where.replace("'", "''"))
    with guarded.client(RUN) as runner:
        answer = runner.post("/sources", content=text, headers=YAML)
        assert answer.status_code == 422, answer.text
        assert answer.json()["problems"][0]["path"] == "path"
        assert runner.get("/sources/escape").status_code == 404


def test_a_posted_sweep_may_not_leave_its_folder_or_explode(guarded):
    dots = SOURCE.format(id="sweep", path="data/{d}/dem.tif") + "dimensions: {d: ['..']}\n"
    huge = (SOURCE.format(id="sweep", path="data/{a}{b}{c}{d}{e}.tif") + "dimensions:\n"
            + "".join(f"  {n}: [{', '.join(f'v{i}' for i in range(20))}]\n" for n in "abcde"))
    stac = "id: sweep\nkind: stac\ntheme: t\nstac: {url: '../../etc/collection.json', " \
           "collection: c}\n"
    with guarded.client(RUN) as runner:
        for text, said in ((dots, "made of dots"), (huge, "3,200,000 combinations"),
                           (stac, "file inside the project only")):
            answer = runner.post("/sources", content=text, headers=YAML)
            assert answer.status_code == 422, answer.text
            assert said in answer.json()["detail"]


@pytest.mark.parametrize("where", ["data/dem.tif", "data/*.tif", "https://example.org/d.tif",
                                   "/vsicurl/https://example.org/d.tif"])
def test_a_posted_source_may_name_a_project_file_or_an_https_url(guarded, where):
    with guarded.client(RUN) as runner:
        answer = runner.post("/sources", content=SOURCE.format(id="fine", path=where),
                             headers=YAML)
        assert answer.status_code in (200, 201), answer.text
        assert runner.get("/sources/fine").json()["location"] == where


def test_an_aoi_is_not_named_by_a_path(guarded):
    with guarded.client(READ) as reader:
        answer = reader.get("/pipelines/terrain/validate", params={"aoi": "/etc/passwd"})
    assert answer.status_code == 400
    assert "not named by a path over HTTP" in answer.json()["detail"]


# -- CORS, binding ---------------------------------------------------------------------

def test_cors_answers_a_configured_origin_only(guarded):
    with guarded.client(READ) as reader:
        stranger = reader.get("/sources", headers={"Origin": "https://evil.example"})
        portal = reader.get("/sources", headers={"Origin": PORTAL})
        asked = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
        stranger_pre = reader.options("/sources", headers={"Origin": "https://evil.example",
                                                           **asked})
        portal_pre = reader.options("/sources", headers={"Origin": PORTAL, **asked})
    assert "access-control-allow-origin" not in stranger.headers
    assert "access-control-allow-origin" not in stranger_pre.headers
    assert portal.headers["access-control-allow-origin"] == PORTAL
    assert portal_pre.headers["access-control-allow-origin"] == PORTAL
    assert "authorization" in portal_pre.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in portal.headers


def test_cors_is_closed_without_configured_origins(served):
    with served.client() as client:
        answer = client.get("/sources", headers={"Origin": "https://portal.example.org"})
        pre = client.options("/sources", headers={"Origin": "https://portal.example.org",
                                                  "Access-Control-Request-Method": "GET"})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-origin" not in pre.headers


def test_the_server_binds_to_loopback_unless_told(served, guarded):
    for server in (served, guarded):
        assert urlsplit(server.url).hostname == "127.0.0.1"
    host = guarded.url.replace("127.0.0.1", _address_of_this_host())
    with pytest.raises(httpx.ConnectError):
        httpx.get(host + "/openapi.json", timeout=5)


def _address_of_this_host() -> str:
    """An address of this machine other than loopback (the one a route out would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: UDP only picks a route
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback")
    return address


@pytest.mark.parametrize(("tokens", "warned"), [(False, True), (True, False)])
def test_beyond_loopback_it_warns_unless_tokens_are_set(tmp_path, tokens, warned):
    settings = f"server:\n  tokens: [{{sha256: {sha(RUN)}, scope: run}}]\n" if tokens else None
    server = start_server(make_project(tmp_path, settings=settings), "--host", "0.0.0.0")
    try:
        assert urlsplit(server.url).hostname == "0.0.0.0"
        with httpx.Client(base_url=server.url.replace("0.0.0.0", "127.0.0.1")) as client:
            assert client.get("/openapi.json").status_code == 200
    finally:
        server.stop()
    said = any("not a loopback address and no token is configured" in line
               for line in server.lines)
    assert said is warned, server.lines


# -- passwords -------------------------------------------------------------------------

def test_no_answer_shows_the_store_password(tmp_path, pg_url):  # noqa: F811
    password = urlsplit(pg_url).password
    root = make_project(tmp_path)
    for args in (["db", "upgrade"], ["run", "terrain", "--bbox", SMALL_BBOX, "-r", "7"]):
        done = subprocess.run([sys.executable, "-m", "h3pipe", "-p", str(root), "--store",
                               pg_url, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    server = start_server(root, env={"H3PIPE_STORE": pg_url})
    try:
        with server.client() as client:
            secret_url = "https://viewer:hunter2-secret-pw@example.org/dem.tif"
            client.post("/sources", content=SOURCE.format(id="remote", path=secret_url),
                        headers=YAML)
            run_id = client.get("/runs").json()[0]["run_id"]
            answers = [client.get(path) for path in (
                "/runs", f"/runs/{run_id}", f"/runs/{run_id}/results", "/jobs",
                f"/jobs/{run_id}", f"/jobs/{run_id}/results", "/sources", "/sources/remote",
                "/sources?active=all", "/runs/nope", "/processes", "/")]
        assert all(a.status_code in (200, 404) for a in answers), [a.text for a in answers]
        assert any("***" in a.text for a in answers)  # the addresses are there, masked
        for answer in answers:
            for secret in (password, "hunter2-secret-pw"):
                assert secret not in answer.text, answer.request.url
    finally:
        server.stop()
    assert not any(password in line for line in server.lines)


def test_json_never_carries_a_secret_by_key():
    shown = safe({"store": "postgresql://u:pw-1234567@db/x", "api_key": "k-123",
                  "nested": [{"password": "p"}], "nodata": float("nan"), "name": "token"})
    assert json.dumps(shown, allow_nan=False) == json.dumps(
        {"store": "postgresql://u:***@db/x", "api_key": "***", "nested": [{"password": "***"}],
         "nodata": "nan", "name": "token"})

