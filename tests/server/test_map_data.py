"""The interactive map's data through a real ``h3pipe serve``: what a map needs to start,
the cells of a view (coarser ones past ``server: map_cells``, their values by each
column's rule, their colours by the static maps' scale), one cell's values, a view across
the antimeridian; and the H3 ancestors by bit arithmetic the coarser cells are made with.
What the server keeps between requests: a view asked again is the same bytes, and a new
run's result is on the map within a second. Expected values come from the published rows
(read with the documented API) and h3-py."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h3
import matplotlib
import numpy as np
import pytest
from matplotlib.colors import Normalize

import h3pipe
from h3pipe import grid
from h3pipe.report.maps import Style
from h3pipe.server.mapdata import SUM, Box, Layer, Rule, published
from h3pipe.server.maps import FRESH, Answers
from h3pipe.server.settings import ServerSettings
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.server.conftest import NORTH, RES, SMALL_BBOX, WEST, Served, make_project, start_server
from tests.server.conftest import ramp as ramp_pixels
from tests.waiting import wait_until

CAP = 1000  # server: map_cells of the test projects (the schema's least)
ACROSS = "176,-20,-176,-16"  # a box across the antimeridian
# A listing read by a request that began just before the expiry serves the requests that
# come while it is read: on a busy machine that takes some tenths of a second.
READING = 0.5


def h3pipe_cli(root: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "h3pipe", "-p", str(root), *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Site:
    server: Served
    rows: dict[str, dict[str, float]]  # the published rows, by cell, read with the API


def _rows(root: Path, dataset: str) -> dict[str, dict[str, float]]:
    table = h3pipe.Project(root).dataset(dataset)
    cells = table.column("h3_index").to_pylist()
    columns = [c for c in table.column_names if c not in ("h3_index", "resolution")]
    values = {c: table.column(c).to_pylist() for c in columns}
    return {cell: {c: values[c][i] for c in columns} for i, cell in enumerate(cells)}


@pytest.fixture(scope="module")
def ramp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The ramp DEM's statistics at resolution 9 over the small box (more cells than the
    cap), run by the CLI, served with server: map_cells 1000."""
    root = make_project(tmp_path_factory.mktemp("mapdata"),
                        settings=f"server:\n  map_cells: {CAP}\n")
    h3pipe_cli(root, "run", "terrain", "--bbox", SMALL_BBOX, "-r", "9")
    server = start_server(root)
    yield Site(server, _rows(root, "dem_stats"))
    server.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A 1-degree world raster whose value is 500 from 160E to 180 and 700 from 180 to
    160W, and a run over a box across the antimeridian at resolution 4."""
    root = tmp_path_factory.mktemp("world")
    lon = np.arange(-180, 180) + 0.5
    row = np.where(lon >= 160, 500.0, np.where(lon < -160, 700.0, 100.0)).astype("float32")
    write_raster(root / "world.tif", np.repeat(row[None, :], 180, axis=0), west=-180.0,
                 north=90.0, res=1.0)
    write_project(root, sources={"w": raster_source("w", str(root / "world.tif"))},
                  pipelines={"p": zonal_pipeline("p", "w", ["mean"], dataset="ds",
                                                 resolution=4)})
    h3pipe_cli(root, "run", "p", "--bbox", ACROSS)
    server = start_server(root)
    yield Site(server, _rows(root, "ds"))
    server.stop()


def _cells(site: Site, dataset: str, **params: str) -> dict:
    with site.server.client() as client:
        answer = client.get(f"/maps/{dataset}/cells", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _centre_in(cell: str, west: float, south: float, east: float, north: float) -> bool:
    lat, lng = h3.cell_to_latlng(cell)
    inside = west <= lng <= east if west <= east else (lng >= west or lng <= east)
    return inside and south <= lat <= north


# -- the ancestors ----------------------------------------------------------------------------

def test_ancestors_by_bit_arithmetic_match_h3_on_many_cells():
    rng = np.random.default_rng(7)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 400)))
    lng = rng.uniform(-180, 180, 400)
    pentagons = [p for res in range(16) for p in h3.get_pentagons(res)]
    for res in range(1, 16):
        cells = [h3.latlng_to_cell(a, b, res) for a, b in zip(lat, lng, strict=True)]
        cells += [p for p in pentagons if h3.get_resolution(p) == res]
        ids = np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64)
        for parent in range(res):
            got = grid.parents(ids, parent)
            assert [h3.int_to_str(int(g)) for g in got] == [h3.cell_to_parent(c, parent)
                                                            for c in cells], (res, parent)


# -- views over the cap, in memory ------------------------------------------------------------

def test_a_view_past_the_default_cap_is_answered_with_coarser_cells_that_add_up():
    parents = [h3.latlng_to_cell(-2.0, 30.0, 4), h3.latlng_to_cell(10.0, 20.0, 4),
               h3.get_pentagons(4)[0]]  # a pentagon has 5 children, not 7
    cells = grid.children(np.array([h3.str_to_int(p) for p in parents], np.uint64), 10)
    assert len(cells) > ServerSettings().map_cells == 100_000
    level = published(cells, np.ones(len(cells)), np.zeros(len(cells), bool), 10)
    layer = Layer(level, Rule(SUM), Style())
    shown, inside = layer.view(Box(-180, -90, 180, 90, whole=True), 100_000)
    assert len(inside) <= 100_000 and shown.resolution == 9
    # Each coarser cell is the count of its published cells: all of them here.
    for cell, value in zip(shown.cells[inside], shown.values[inside], strict=True):
        assert value == h3.cell_to_children_size(h3.int_to_str(int(cell)), 10)
    assert shown.values[inside].sum() == len(cells)


def test_a_view_across_the_antimeridian_holds_both_sides_in_memory():
    west = h3.latlng_to_cell(-17.0, 179.9, 5)
    east = h3.latlng_to_cell(-17.0, -179.9, 5)
    far = h3.latlng_to_cell(-17.0, 170.0, 5)
    ids = np.array([h3.str_to_int(c) for c in (west, east, far)], dtype=np.uint64)
    level = published(ids, np.arange(3.0), np.zeros(3, bool), 5)
    layer = Layer(level, Rule(), Style())
    shown, inside = layer.view(Box.parse("179.5,-18,-179.5,-16"), 10)
    assert {h3.int_to_str(int(c)) for c in shown.cells[inside]} == {west, east}


# -- through the server -----------------------------------------------------------------------

def test_start_says_the_columns_meaning_their_rules_and_the_scope(ramp):
    with ramp.server.client() as client:
        start = client.get("/maps/dem_stats").json()
        listed = client.get("/maps").json()
    assert listed == {"datasets": [{"dataset": "dem_stats", "scopes": start["scopes"]}]}
    assert start["resolution"] == 9 and start["resolutions"] == [9]
    assert start["scope"]["scope"] == f"bbox:{SMALL_BBOX}"
    assert start["scope"]["bounds"] == pytest.approx([30.05, -2.05, 30.15, -1.95])
    assert start["scope"]["outline"]["type"] == "Polygon"
    assert start["sweep"] is None and start["max_cells"] == CAP
    columns = {c["name"]: c for c in start["columns"]}
    assert list(columns) == ["mean", "min", "max", "count"]
    assert columns["count"]["label"] == "count (pixels)"
    assert {n: (c["coarser"]["how"], c["coarser"]["weight"]) for n, c in columns.items()} == {
        "mean": ("mean", "count"), "min": ("min", None), "max": ("max", None),
        "count": ("sum", None)}


def test_the_whole_scope_past_the_cap_comes_as_coarser_cells_by_each_columns_rule(ramp):
    assert len(ramp.rows) > CAP
    by_parent: dict[str, list[dict[str, float]]] = defaultdict(list)
    for cell, row in ramp.rows.items():
        by_parent[h3.cell_to_parent(cell, 8)].append(row)
    answers = {c: _cells(ramp, "dem_stats", bbox="30,-2.1,30.2,-1.9", column=c)
               for c in ("count", "mean", "min", "max")}
    shown = answers["count"]
    assert shown["resolution"] == 8 and shown["published_resolution"] == 9
    assert shown["count"] <= CAP and set(shown["cells"]) == set(by_parent)
    assert shown["legend"]["coarser"].startswith("coarser cells (res 8) shown")
    # An amount adds up: no pixel is lost or counted twice.
    assert sum(shown["values"]) == sum(r["count"] for r in ramp.rows.values())
    for name, answer in answers.items():
        got = dict(zip(answer["cells"], answer["values"], strict=True))
        for parent, rows in by_parent.items():
            counts = np.array([r["count"] for r in rows], dtype=float)
            values = np.array([r[name] for r in rows], dtype=float)
            expected = {"count": values.sum(), "min": values.min(), "max": values.max(),
                        "mean": (values * counts).sum() / counts.sum()}[name]
            assert got[parent] == pytest.approx(expected), (name, parent)


def test_a_view_inside_the_cap_comes_as_the_published_cells_coloured_by_the_scale(ramp):
    view = (30.08, -2.02, 30.11, -1.99)
    answer = _cells(ramp, "dem_stats", bbox=",".join(map(str, view)), column="mean")
    assert answer["resolution"] == 9 and "coarser" not in answer["legend"]
    got = dict(zip(answer["cells"], answer["values"], strict=True))
    assert {c for c in ramp.rows if _centre_in(c, *view)} <= set(got)
    edge = 2 * h3.average_hexagon_edge_length(9, unit="km") / 111.32 / np.cos(np.radians(2.1))
    grown = (view[0] - edge, view[1] - edge, view[2] + edge, view[3] + edge)
    assert all(_centre_in(c, *grown) for c in got)
    assert all(got[c] == pytest.approx(ramp.rows[c]["mean"]) for c in got)
    # The colour scale spans the whole scope's means (not the view's): viridis, as 'h3pipe
    # map' colours them.
    means = [r["mean"] for r in ramp.rows.values()]
    legend = answer["legend"]
    assert (legend["vmin"], legend["vmax"]) == pytest.approx((min(means), max(means)))
    scale = Normalize(min(means), max(means), clip=True)
    viridis = matplotlib.colormaps["viridis"]
    for cell, index in zip(answer["cells"], answer["colour"], strict=True):
        r, g, b, _ = viridis(scale(ramp.rows[cell]["mean"]), bytes=True)
        assert answer["palette"][index] == f"#{r:02x}{g:02x}{b:02x}", cell


def test_the_packed_answer_holds_what_the_json_does(ramp):
    params = {"bbox": "30,-2.1,30.2,-1.9", "column": "max"}
    as_json = _cells(ramp, "dem_stats", **params)
    with ramp.server.client() as client:
        packed = client.get("/maps/dem_stats/cells", params=params,
                            headers={"Accept": "application/octet-stream"})
    assert packed.headers["content-type"] == "application/octet-stream"
    body = packed.content
    (length,) = struct.unpack_from("<I", body)
    head = json.loads(body[4:4 + length])
    n, at = head["count"], 4 + length
    assert at % 8 == 0 and n == as_json["count"]
    ids = np.frombuffer(body, "<u8", n, at)
    values = np.frombuffer(body, "<f8", n, at + 8 * n)
    colour = np.frombuffer(body, "<u2", n, at + 16 * n)
    assert [h3.int_to_str(int(i)) for i in ids] == as_json["cells"]
    assert values.tolist() == as_json["values"] and colour.tolist() == as_json["colour"]
    assert head["legend"] == as_json["legend"] and head["palette"] == as_json["palette"]


def test_one_cell_shows_every_column_published_or_made_from_its_cells(ramp):
    cell = next(iter(ramp.rows))
    parent = h3.cell_to_parent(cell, 7)
    mine = [r for c, r in ramp.rows.items() if h3.cell_to_parent(c, 7) == parent]
    with ramp.server.client() as client:
        one = client.get(f"/maps/dem_stats/cells/{cell}").json()
        coarse = client.get(f"/maps/dem_stats/cells/{parent}").json()
    assert one["values"] == pytest.approx(ramp.rows[cell]) and one["cells"] == 1
    assert coarse["cells"] == len(mine) and coarse["resolution"] == 7
    assert coarse["values"]["count"] == sum(r["count"] for r in mine)
    assert coarse["values"]["max"] == max(r["max"] for r in mine)


@pytest.mark.parametrize("path, params, status, words", [
    ("/maps/nothing", {}, 404, "no results for dataset 'nothing'"),
    ("/maps/dem_stats", {"scope": "iso3:RWA"}, 404, "no result for scope 'iso3:RWA'"),
    ("/maps/dem_stats", {"resolution": "6"}, 404, "no result at resolution 6"),
    ("/maps/dem_stats/cells", {"bbox": "1,2,3"}, 400, "is not W,S,E,N"),
    ("/maps/dem_stats/cells", {"bbox": "0,10,1,5"}, 400, "S below N"),
    ("/maps/dem_stats/cells", {"bbox": "0,0,1,1", "column": "nope"}, 400,
     "has no column 'nope'"),
    ("/maps/dem_stats/cells/zzz", {}, 400, "is not an H3 cell"),
])
def test_a_bad_request_is_answered_with_what_to_fix(ramp, path, params, status, words):
    with ramp.server.client() as client:
        answer = client.get(path, params=params)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert words in answer.json()["detail"]


def test_a_view_across_the_antimeridian_holds_the_cells_on_both_sides(world):
    view = (178.0, -19.0, -178.0, -17.0)
    answer = _cells(world, "ds", bbox=",".join(map(str, view)), column="mean")
    got = dict(zip(answer["cells"], answer["values"], strict=True))
    wanted = {c for c in world.rows if _centre_in(c, *view)}
    assert wanted <= set(got) and len(wanted) > 4
    sides = {h3.cell_to_latlng(c)[1] > 0 for c in wanted}
    assert sides == {True, False}
    for cell in wanted:
        assert got[cell] == pytest.approx(world.rows[cell]["mean"])
    # 160E..180 is 500 and 180..160W 700: the cells (wholly on one side) show their side's.
    for cell in wanted:
        lngs = [lng for _, lng in h3.cell_to_boundary(cell)]
        if all(lng > 0 for lng in lngs) or all(lng < 0 for lng in lngs):
            assert got[cell] == pytest.approx(500.0 if lngs[0] > 0 else 700.0)


# -- what the server keeps between requests ---------------------------------------------------

def test_a_view_asked_again_or_at_once_by_many_is_answered_with_the_same_bytes(ramp):
    asked = [("/maps/dem_stats/cells", {"bbox": "30.05,-2.04,30.09,-2.0", "column": "min"},
              {}),
             ("/maps/dem_stats/cells", {"bbox": "30.05,-2.04,30.09,-2.0", "column": "min"},
              {"Accept": "application/octet-stream"}),
             ("/maps/dem_stats", {}, {}),
             (f"/maps/dem_stats/cells/{next(iter(ramp.rows))}", {}, {})]
    clients = [ramp.server.client() for _ in range(8)]
    try:
        for path, params, headers in asked:
            def get(i: int, path=path, params=params, headers=headers) -> bytes:
                answer = clients[i % len(clients)].get(path, params=params, headers=headers)
                assert answer.status_code == 200, answer.text
                return answer.content

            with ThreadPoolExecutor(8) as pool:  # the first asking: at once, all alike
                bodies = set(pool.map(get, range(16)))
            assert len(bodies) == 1, path
            assert get(0) == bodies.pop(), path  # and again, later
    finally:
        for client in clients:
            client.close()
    # The kept answer is the view's: a neighbouring view is its own.
    assert (_cells(ramp, "dem_stats", bbox="30.05,-2.04,30.09,-2.0", column="min")["cells"]
            != _cells(ramp, "dem_stats", bbox="30.09,-2.04,30.13,-2.0", column="min")["cells"])


def test_a_new_runs_result_is_on_the_map_within_a_second_and_a_new_scope_at_once(tmp_path):
    """A run replacing the result a map shows (the DEM raised by 1,000 m, run again) while
    a dashboard keeps asking for the view, so the server holds a listing and the view's
    answer all along; then a run over a new scope, asked for by name as soon as it ends."""
    root = make_project(tmp_path, settings=f"server:\n  map_cells: {CAP}\n")
    h3pipe_cli(root, "run", "terrain", "--bbox", SMALL_BBOX, "-r", "8")
    old = _rows(root, "dem_stats")
    raised = {c: r["mean"] + 1000 for c, r in old.items()}
    server = start_server(root)
    view = {"bbox": SMALL_BBOX, "scope": f"bbox:{SMALL_BBOX}", "column": "mean"}
    shown: list[tuple[float, bool]] = []  # when each answer was asked for, and if raised
    neither: list[str] = []
    stop = threading.Event()

    def dashboard() -> None:
        with server.client() as client:
            while not stop.wait(0.02):  # a map asking again and again, as many would
                asked = time.monotonic()
                answer = client.get("/maps/dem_stats/cells", params=view).json()
                means = dict(zip(answer["cells"], answer["values"], strict=True))
                if means != pytest.approx({c: r["mean"] for c, r in old.items()}) and (
                        means != pytest.approx(raised)):
                    neither.append(str(answer)[:300])
                shown.append((asked, means == pytest.approx(raised)))

    asking = threading.Thread(target=dashboard, daemon=True)
    asking.start()
    try:
        wait_until(lambda: shown, 30, "the map's first answer")
        write_raster(root / "data" / "dem.tif", ramp_pixels() + 1000, west=WEST,
                     north=NORTH, res=RES, nodata=-9999.0)
        h3pipe_cli(root, "run", "terrain", "--bbox", SMALL_BBOX, "-r", "8")
        ended = time.monotonic()
        wait_until(lambda: any(new for _, new in shown), FRESH + 10,
                   "the new run's means on the map")
        stop.set()
        asking.join(30)
        late = [asked - ended for asked, new in shown if not new and asked > ended]
        assert max(late, default=0.0) <= FRESH + READING, late
        first = next(i for i, (_, new) in enumerate(shown) if new)
        assert all(new for _, new in shown[first:])  # never the old one again
        assert not neither

        other = "30.02,-2.02,30.06,-1.98"
        h3pipe_cli(root, "run", "terrain", "--bbox", other, "-r", "8")
        with server.client() as client:  # at once: what is not listed is read from the store
            start = client.get("/maps/dem_stats", params={"scope": f"bbox:{other}"})
            cells = client.get("/maps/dem_stats/cells", params={
                "bbox": other, "scope": f"bbox:{other}", "column": "count"})
        assert start.status_code == 200 and start.json()["scope"]["scope"] == f"bbox:{other}"
        assert cells.status_code == 200 and cells.json()["count"] > 0
    finally:
        stop.set()
        server.stop()


def test_kept_answers_stay_within_their_bytes_the_least_recently_used_going_first():
    answers = Answers(1600)  # an answer over 200 bytes (an eighth) is never kept
    made: list[str] = []

    def make(key: str, size: int):
        return lambda: made.append(key) or key.encode() * (size // len(key))

    for key in "abcdefgh":
        answers.get(key, make(key, 200))
    answers.get("a", make("a", 200))  # kept: a is now the most recently used
    answers.get("i", make("i", 200))  # over 1,600 bytes: b, the least recently used, goes
    assert answers.size == 1600 and made == list("abcdefghi")
    answers.get("b", make("b", 200))
    answers.get("a", make("a", 200))
    assert made[-1] == "b" and answers.size == 1600  # c went for b; a was still there
    answers.get("big", make("big", 300))
    answers.get("big", make("big", 300))
    assert made.count("big") == 2 and answers.size == 1600


def test_an_answer_being_made_is_waited_for_not_made_again():
    answers = Answers(10_000)
    release = threading.Event()
    made: list[int] = []

    def slow() -> bytes:
        made.append(1)
        release.wait(10)
        return b"view"

    with ThreadPoolExecutor(6) as pool:
        asked = [pool.submit(answers.get, "view", slow) for _ in range(6)]
        wait_until(lambda: made, 10, "the first asking to start making the answer")
        release.set()
        assert [f.result(timeout=10) for f in asked] == [b"view"] * 6
    assert made == [1]
    # An error is not kept: the next asking makes the answer again.
    with pytest.raises(ValueError):
        answers.get("bad", lambda: (_ for _ in ()).throw(ValueError("no")))
    assert answers.get("bad", lambda: b"fine") == b"fine"
