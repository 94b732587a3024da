"""The dashboard in headless Chromium (Debian's, no download) against a real ``h3pipe
serve``: every page without console errors or requests outside the server; the map's
colour at known cells, worked out here from the ramp raster and matplotlib's viridis;
hover and click; coarser cells when the scope holds more than ``server: map_cells``; a
run started over HTTP watched until it succeeds, on the runs page and its own page; and a
server with tokens, whose pages ask for one."""

from __future__ import annotations

import json
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h3
import matplotlib
import numpy as np
import pytest
import rasterio
import shapely
from matplotlib.colors import Normalize
from rasterio.transform import from_origin

from h3pipe.server.dashboard import STREAM
from h3pipe.server.settings import hash_token
from tests.browser import browser as chromium_browser
from tests.server.conftest import (
    NORTH,
    RES,
    SMALL_BBOX,
    WEST,
    Served,
    make_project,
    start_server,
)
from tests.server.test_map_data import h3pipe_cli
from tests.waiting import wait_until

CAP = 1000  # server: map_cells; the scope holds more cells at res 9, fewer at res 8
WAIT = 30_000  # ms: what a page may take to show something, on a busy machine
READ_TOKEN = "dashboard-reader-token"
STREAM_SECONDS = STREAM - 10  # a stream ended by the server's stop, not its own end


@dataclass
class Seen:
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One Chromium for the module: online (the server is on loopback), but every request
    for anything other than the server is refused and recorded by :func:`visit`."""
    yield from chromium_browser(offline=False)


# A sweep: scenarios a and b of a two-band source (rp10, rp100), each band the ramp plus
# 1000 for scenario b and 100 for rp100.
SWEEP_SOURCE = """\
    id: hz
    kind: raster
    theme: hazard
    path: "data/{scenario}/*.tif"
    bands: [rp10, rp100]
    band_key: return_period
    dimensions:
      kind: [a, b]
    """
SWEEP = """\
    id: sweep
    output: {dataset: zds, theme: hazard}
    defaults: {resolution: 8, batch_size: 40}
    steps:
      - id: stats
        operation: zonal_stats
        source: hz
        params: {stats: [mean, count]}
    """
SWEEP_BBOX = "30.02,-1.98,30.08,-1.92"


def _sweep(root: Path) -> None:
    ramp = np.tile(np.arange(100, dtype="float32"), (100, 1))
    for k, scenario in enumerate("ab"):
        folder = root / "data" / scenario
        folder.mkdir(parents=True)
        bands = np.stack([ramp + 1000 * k + 100 * b for b in range(2)])
        with rasterio.open(folder / "tile.tif", "w", driver="GTiff", width=100, height=100,
                           count=2, dtype="float32", crs="EPSG:4326",
                           transform=from_origin(WEST, NORTH, RES, RES)) as ds:
            ds.write(bands)
    (root / "sources" / "hz.yaml").write_text(textwrap.dedent(SWEEP_SOURCE))
    (root / "pipelines" / "sweep.yaml").write_text(textwrap.dedent(SWEEP))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The ramp DEM's statistics over the small box at resolutions 8 and 9, and a sweep,
    run by the CLI, served with server: map_cells 1000."""
    root = make_project(tmp_path_factory.mktemp("dashboard"),
                        settings=f"server:\n  map_cells: {CAP}\n")
    _sweep(root)
    h3pipe_cli(root, "run", "terrain", "--bbox", SMALL_BBOX, "-r", "8-9")
    h3pipe_cli(root, "run", "sweep", "--bbox", SWEEP_BBOX)
    server = start_server(root)
    yield server
    server.stop()


def visit(browser, served: Served, path: str, also: tuple[str, ...] = ()):
    """A new page at ``path``, recording console errors, uncaught exceptions and requests
    outside the server and the origins ``also`` allowed (refused)."""
    seen = Seen()
    page = browser.new_page()
    page.on("console", lambda m: m.type == "error" and seen.errors.append(m.text))
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    allowed = (served.url + "/", *(origin + "/" for origin in also),
               "data:", "blob:", "about:")

    def route(r) -> None:
        url = r.request.url
        if url.startswith(allowed):
            r.continue_()
        else:
            seen.outside.append(url)
            r.abort()

    page.route("**/*", route)
    page.goto(served.url + path)
    return page, seen


def _run_id(served: Served) -> str:
    with served.client() as client:
        return client.get("/runs", params={"limit": 1}).json()[0]["run_id"]


# -- every page --------------------------------------------------------------------------------

PAGES = {
    "/dashboard": "a.run-link",
    "/dashboard/sources": "main .listing",
    "/dashboard/pipelines": "main .listing table",
    "/dashboard/maps": "main .listing table",
    "/dashboard/map/dem_stats": "#legend h3",
}


@pytest.mark.parametrize("path", [*PAGES, "run"])
def test_every_page_shows_its_content_with_no_error_and_nothing_from_outside(
        browser, site, path, tmp_path):
    if path == "run":
        path, ready = f"/dashboard/runs/{_run_id(site)}", "main[data-report]"
    else:
        ready = PAGES[path]
    page, seen = visit(browser, site, path)
    page.wait_for_selector(ready, timeout=WAIT)
    if path.startswith("/dashboard/map/"):
        page.wait_for_function("() => h3map.state().loaded > 0 && !h3map.state().busy",
                               timeout=WAIT)
    page.screenshot(path=str(tmp_path / "page.png"))
    text = page.inner_text("body")
    page.close()
    assert seen.errors == [] and seen.outside == []
    assert "h3pipe" in text and "Forget" in text


def test_the_pages_say_what_they_list(browser, site):
    page, seen = visit(browser, site, "/dashboard/pipelines")
    page.wait_for_selector("main .listing table", timeout=WAIT)
    assert "terrain" in page.inner_text("main")
    links = page.eval_on_selector_all("main .listing a", "links => links.map(a => a.href)")
    assert sorted(links) == [site.url + "/dashboard/map/dem_stats",
                             site.url + "/dashboard/map/zds"]
    page.goto(site.url + "/dashboard")
    page.wait_for_selector("a.run-link", timeout=WAIT)
    rows = page.inner_text("main table")
    page.close()
    # terrain at -r 8-9 (one run, reading its pixels once) and the sweep
    assert rows.count("successful") == 2 and "dem_stats" in rows and "zds" in rows


@pytest.mark.parametrize("path", ["/dashboard/static/..%2Fmaps.py", "/dashboard/static/../maps.py",
                                  "/dashboard/static/%2e%2e/dashboard.py",
                                  "/dashboard/static/nothing.js", "/dashboard/static/"])
def test_only_the_dashboards_own_files_are_served(site, path):
    with site.client() as client:
        answer = client.get(path)
    assert answer.status_code == 404 and b"import" not in answer.content


def test_the_vendored_script_comes_with_its_licence_and_the_pages_keep_to_the_server(site):
    with site.client() as client:
        script = client.get("/dashboard/static/vendor/h3-js.umd.js")
        licence = client.get("/dashboard/static/vendor/h3-js.LICENSE.txt")
        notice = client.get("/dashboard/static/vendor/h3-js.NOTICE.txt")
        page = client.get("/dashboard/map/dem_stats")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "sourceMappingURL" not in script.text  # no request for a map that is not shipped
    assert "Apache License" in licence.text and "Uber Technologies" in notice.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "http" not in page.text.replace(site.url, "")  # no address of anywhere else


# -- the map -----------------------------------------------------------------------------------

def _ramp_mean(cell: str) -> float:
    """The mean of the ramp (pixel column j holds j) over a cell: the ramp at the cell's
    centroid in lon/lat, less half a pixel (each pixel holds its west edge's column)."""
    outline = shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])
    return (outline.centroid.x - WEST) / RES - 0.5


def _cells_of(bbox: str, res: int) -> list[str]:
    west, south, east, north = map(float, bbox.split(","))
    return list(h3.geo_to_cells(shapely.box(west, south, east, north), res))


def _open_map(browser, site: Served, hash_: str = ""):
    """The map of the ramp's statistics over the small box (the live test adds another
    scope, which would be the newest)."""
    page, seen = visit(browser, site, f"/dashboard/map/dem_stats#scope=bbox:{SMALL_BBOX}&"
                       + hash_.lstrip("#"))
    page.wait_for_function("() => h3map.state().loaded > 0 && !h3map.state().busy", timeout=WAIT)
    return page, seen


def _settled(page, loaded: int) -> dict:
    page.wait_for_function(f"() => h3map.state().loaded > {loaded} && !h3map.state().busy",
                           timeout=WAIT)
    return page.evaluate("h3map.state()")


def test_the_map_shows_each_cells_colour_from_the_colour_scale(browser, site, tmp_path):
    cells = _cells_of(SMALL_BBOX, 8)
    means = {c: _ramp_mean(c) for c in cells}
    scale = Normalize(min(means.values()), max(means.values()), clip=True)
    viridis = matplotlib.colormaps["viridis"]
    page, seen = _open_map(browser, site, "#resolution=8&column=mean")
    state = page.evaluate("h3map.state()")
    assert state["resolution"] == 8 and state["count"] == len(cells)
    page.screenshot(path=str(tmp_path / "map.png"))
    picked = sorted(cells, key=means.get)[:: max(1, len(cells) // 12)]
    for cell in picked:
        lat, lng = h3.cell_to_latlng(cell)
        shown = page.evaluate(f"h3map.pixel({lng}, {lat})")
        expected = viridis(scale(means[cell]), bytes=True)
        near = all(abs(int(a) - int(b)) <= 6 for a, b in zip(shown, expected, strict=True))
        assert shown[3] == 255 and near, (cell, shown, expected)
    # Outside the scope, no cell is drawn.
    assert page.evaluate("h3map.pixel(30.3, -2.0)")[3] == 0
    legend = page.inner_text("#legend")
    page.close()
    assert "mean" in legend and "nodata (no valid pixel): 0" in legend
    assert seen.errors == [] and seen.outside == []


def test_hover_shows_a_cells_value_and_a_click_all_of_its_columns(browser, site):
    cell = _cells_of(SMALL_BBOX, 8)[0]
    lat, lng = h3.cell_to_latlng(cell)
    page, seen = _open_map(browser, site, "#resolution=8&column=mean")
    x, y = page.evaluate(f"h3map.project({lng}, {lat})")
    page.mouse.move(x, y)
    page.wait_for_selector("#tip:not([hidden])", timeout=WAIT)
    tip = page.inner_text("#tip")
    page.mouse.click(x, y)
    page.wait_for_selector("#details table", timeout=WAIT)
    details = page.inner_text("#details")
    page.close()
    assert cell in tip and "mean" in tip
    shown = float(tip.split(": ")[1].split()[0].replace(",", ""))
    assert shown == pytest.approx(_ramp_mean(cell), abs=0.5)
    assert f"cell {cell}" in details
    assert all(label in details for label in ("mean", "min", "max", "count (pixels)"))
    assert seen.errors == []


def test_zoomed_out_the_map_shows_coarser_cells_and_says_so_then_the_published_ones(
        browser, site):
    assert len(_cells_of(SMALL_BBOX, 9)) > CAP
    page, seen = _open_map(browser, site, "#column=count")
    state = page.evaluate("h3map.state()")
    assert state["resolution"] == 8 and state["choice"]["resolution"] == "9"
    coarser = page.inner_text("#legend .coarser")
    assert coarser.startswith("coarser cells (res 8) shown: sum of the finer cells")
    lat, lng = h3.cell_to_latlng(_cells_of(SMALL_BBOX, 9)[0])
    page.evaluate(f"h3map.view({lng}, {lat}, 15)")
    state = _settled(page, state["loaded"])
    text = page.inner_text("#legend")
    page.close()
    assert state["resolution"] == 9 and 0 < state["count"] <= CAP
    assert "coarser" not in text
    assert seen.errors == []


def test_panning_and_zooming_ask_for_the_cells_of_the_new_view(browser, site):
    page, seen = _open_map(browser, site, "#resolution=8")
    box = page.locator("#stage").bounding_box()
    before = page.evaluate("h3map.state()")
    middle = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*middle)
    page.mouse.down()
    page.mouse.move(middle[0] + 300, middle[1], steps=5)
    page.mouse.up()
    moved = _settled(page, before["loaded"])
    page.mouse.wheel(0, 600)
    zoomed = _settled(page, moved["loaded"])
    page.close()
    assert zoomed["zoom"] < before["zoom"] - 0.5
    assert seen.errors == []


def test_a_sweeps_scenario_and_band_are_picked_on_the_map(browser, site):
    page, seen = visit(browser, site, "/dashboard/map/zds")
    page.wait_for_function("() => h3map.state().loaded > 0 && !h3map.state().busy",
                           timeout=WAIT)
    options = {k: page.eval_on_selector_all(f"#{k} option", "os => os.map(o => o.value)")
               for k in ("statistic", "band", "scenario")}
    assert options == {"statistic": ["mean", "count"], "band": ["rp10", "rp100"],
                       "scenario": ["a", "b"]}
    for picker, value in (("scenario", "b"), ("band", "rp100")):
        loaded = page.evaluate("h3map.state().loaded")
        page.select_option(f"#{picker}", value)
        state = _settled(page, loaded)
    assert state["choice"]["column"] == "rp100_mean" and state["choice"]["scenario"] == "b"
    cell = _cells_of(SWEEP_BBOX, 8)[3]
    lat, lng = h3.cell_to_latlng(cell)
    x, y = page.evaluate(f"h3map.project({lng}, {lat})")
    page.mouse.move(x, y)
    page.wait_for_selector("#tip:not([hidden])", timeout=WAIT)
    tip = page.inner_text("#tip")
    page.close()
    assert tip.startswith("rp100_mean") and cell in tip
    shown = float(tip.split(": ")[1].split()[0].replace(",", ""))
    assert shown == pytest.approx(_ramp_mean(cell) + 1100, abs=0.5)
    assert seen.errors == []


# -- live ----------------------------------------------------------------------------------------

def test_a_run_started_over_http_is_followed_until_it_succeeds(browser, site):
    runs, seen = visit(browser, site, "/dashboard")
    runs.wait_for_selector("a.run-link", timeout=WAIT)
    with site.client() as client:
        posted = client.post("/processes/terrain/execution", json={
            "inputs": {"bbox": [30.06, -2.04, 30.12, -1.98], "resolution": 7}})
    assert posted.status_code == 201, posted.text
    run_id = posted.json()["jobID"]
    run, seen_run = visit(browser, site, f"/dashboard/runs/{run_id}")
    runs.wait_for_selector(f'[data-run="{run_id}"] .status.successful', timeout=60_000)
    run.wait_for_selector('main[data-status="successful"]', timeout=60_000)
    run.frame_locator("#report").locator("h1 .status.completed").wait_for(timeout=WAIT)
    assert run_id in run.inner_text("h1")
    runs.close()
    run.close()
    assert seen.errors == [] and seen_run.errors == []
    assert seen.outside == [] and seen_run.outside == []


# -- the events ----------------------------------------------------------------------------------

def _first_event(served: Served, path: str) -> tuple[str, dict]:
    """The first event of a stream (its type and data), the stream then closed."""
    kind = ""
    with served.client() as client, client.stream("GET", path) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                return kind, json.loads(line.removeprefix("data: "))
    raise AssertionError("the stream ended without an event")


def test_the_events_say_each_runs_status_and_progress_as_the_runs_endpoint_does(site):
    kind, data = _first_event(site, "/events/runs")
    with site.client() as client:
        runs = client.get("/runs").json()
    assert kind == "runs"
    assert [(r["run_id"], r["status"], r["progress"]) for r in data["runs"]] == [
        (r["run_id"], r["job"]["status"], r["progress"]) for r in runs]
    kind, data = _first_event(site, f"/events/runs?run={runs[-1]['run_id']}")
    assert [r["run_id"] for r in data["runs"]] == [runs[-1]["run_id"]]
    kind, data = _first_event(site, "/events/runs?run=nothing")
    assert kind == "missing" and data["detail"].startswith("no run 'nothing'")


def test_an_open_event_stream_does_not_hold_the_server_when_it_stops(site):
    server = start_server(site.root)
    lines: list[str] = []
    opened = threading.Event()

    def listen() -> None:
        with server.client() as client, client.stream("GET", "/events/runs") as answer:
            opened.set()
            for line in answer.iter_lines():
                lines.append(line)

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    try:
        wait_until(lambda: opened.is_set() and any(x.startswith("data:") for x in lines),
                   30, "the first event")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=STREAM_SECONDS)
        stopped = time.monotonic() - started
    finally:
        server.stop()
    reader.join(10)
    assert server.process.returncode == 0 and stopped < STREAM_SECONDS
    assert not reader.is_alive()  # the stream ended with the server


# -- tokens --------------------------------------------------------------------------------------

def test_with_tokens_the_pages_ask_for_one_and_show_everything_once_given(
        browser, tmp_path):
    settings = f"server:\n  tokens:\n    - {{sha256: {hash_token(READ_TOKEN)}, scope: read}}\n"
    root = make_project(tmp_path / "p", settings=settings)
    server = start_server(root)
    try:
        page, seen = visit(browser, server, "/dashboard/pipelines")
        page.wait_for_selector("#message:not([hidden])", timeout=WAIT)
        asked = page.inner_text("#message")
        page.fill("#token-input", "not-a-token")
        page.click("#token button[type=submit]")
        page.wait_for_function("() => document.getElementById('message').textContent"
                               ".includes('does not know')", timeout=WAIT)
        page.fill("#token-input", READ_TOKEN)
        page.click("#token button[type=submit]")
        page.wait_for_selector("main .listing table", timeout=WAIT)
        shown = page.inner_text("main")
        page.close()
    finally:
        server.stop()
    assert "needs a bearer token" in asked and "terrain" in shown
    # The only errors are Chromium's notes of the two refusals; nothing came from outside.
    assert all("401" in e for e in seen.errors) and seen.outside == []
