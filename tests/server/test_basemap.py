"""The interactive map's basemap (``server: basemap`` in h3pipe.yaml) as a user meets it:
a tile server on loopback made here (:class:`Tiles`: each tile a solid colour that says its
z/x/y), a real ``h3pipe serve`` over a completed run, and Debian's Chromium. The page asks
the tile server and nothing else outside the server; its Content-Security-Policy lets the
tiles load; a pixel off the cells shows its tile's colour, a pixel at a cell's centre the
cell's; the tiles asked for after a pan or a zoom are those of the new view by the Web
Mercator tile maths written out here (:class:`View`). Without a basemap nothing leaves the
server (tests/server/test_dashboard.py); a basemap that is not http(s) is refused by
``h3pipe validate``, and one this map cannot use by ``h3pipe serve`` before it listens."""

from __future__ import annotations

import http.server
import io
import math
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import h3
import httpx
import matplotlib
import pytest
from matplotlib.colors import Normalize
from PIL import Image

from tests.browser import browser as chromium_browser
from tests.server.conftest import SMALL_BBOX, Served, make_project, start_server
from tests.server.test_dashboard import Seen, _cells_of, _ramp_mean
from tests.server.test_dashboard import visit as dashboard_page
from tests.server.test_map_data import h3pipe_cli

WAIT = 30_000  # ms: what a page may take to show something, on a busy machine
TILE = 256
BOX = tuple(map(float, SMALL_BBOX.split(",")))  # the cells' scope: W, S, E, N
CENTRE = (30.1, -2.0)


# -- a tile server -------------------------------------------------------------------------

def tile_colour(z: int, x: int, y: int) -> tuple[int, int, int]:
    """A tile's one colour: its zoom in red, x and y (mod 8) in green and blue, 16 to 24
    levels apart so that no neighbour is mistaken for another."""
    return 20 + 16 * z, 40 + 24 * (x % 8), 40 + 24 * (y % 8)


@dataclass
class Tiles:
    """``GET /{z}/{x}/{y}.png`` on 127.0.0.1: a PNG of :func:`tile_colour`, each tile
    asked for recorded in order."""

    asked: list[tuple[int, int, int]] = field(default_factory=list)
    url: str = ""

    def start(self) -> Tiles:
        tiles = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                found = re.fullmatch(r"/(\d+)/(\d+)/(\d+)\.png", self.path)
                if not found:
                    self.send_error(404)
                    return
                z, x, y = map(int, found.groups())
                tiles.asked.append((z, x, y))
                body = io.BytesIO()
                Image.new("RGB", (TILE, TILE), tile_colour(z, x, y)).save(body, "PNG")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(body.tell()))
                self.send_header("Cache-Control", "no-store")  # every view's tiles asked again
                self.end_headers()
                self.wfile.write(body.getvalue())

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def since(self, mark: int) -> set[tuple[int, int, int]]:
        return set(self.asked[mark:])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- Web Mercator, as slippy-map tiles number it ----------------------------------------------

def mercator(lng: float, lat: float) -> tuple[float, float]:
    """Web Mercator x and y in 0..1 from the north-west corner of the world."""
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2
    return (lng + 180) / 360, y


@dataclass(frozen=True)
class View:
    """A map's centre (degrees), zoom and size (CSS pixels): the tiles it shows (at zoom
    round(zoom)), the place at a pixel of it and the pixel of a place."""

    lng: float
    lat: float
    zoom: float
    w: int
    h: int

    @property
    def world(self) -> float:  # pixels round the world at this zoom
        return TILE * 2 ** self.zoom

    @property
    def z(self) -> int:
        return max(0, min(19, math.floor(self.zoom + 0.5)))  # as JavaScript's Math.round

    def px(self, lng: float, lat: float) -> tuple[float, float]:
        """The pixel of (lng, lat) from the view's top left."""
        (x, y), (cx, cy) = mercator(lng, lat), mercator(self.lng, self.lat)
        return (x - cx) * self.world + self.w / 2, (y - cy) * self.world + self.h / 2

    def at(self, sx: float, sy: float) -> tuple[float, float]:
        """The longitude and latitude at pixel (sx, sy) from the view's top left."""
        cx, cy = mercator(self.lng, self.lat)
        x, y = cx + (sx - self.w / 2) / self.world, cy + (sy - self.h / 2) / self.world
        return x * 360 - 180, math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y))))

    def tile(self, lng: float, lat: float) -> tuple[int, int, int]:
        n = 2 ** self.z
        x, y = mercator(lng, lat)
        return self.z, math.floor(x * n), math.floor(y * n)

    def inside_tile(self, lng: float, lat: float) -> bool:
        """Whether (lng, lat) is at least 8 % of a tile from its tile's edges."""
        x, y = (v * 2 ** self.z % 1 for v in mercator(lng, lat))
        return 0.08 < x < 0.92 and 0.08 < y < 0.92

    def tiles(self) -> set[tuple[int, int, int]]:
        _, x0, y0 = self.tile(*self.at(0, 0))
        _, x1, y1 = self.tile(*self.at(self.w, self.h))
        last = 2 ** self.z - 1
        return {(self.z, x, y) for x in range(x0, x1 + 1)
                for y in range(max(y0, 0), min(y1, last) + 1)}

    def dragged(self, dx: float, dy: float) -> View:
        """The view once the map is dragged by (dx, dy) pixels."""
        lng, lat = self.at(self.w / 2 - dx, self.h / 2 - dy)
        return replace(self, lng=lng, lat=lat)

    def zoomed(self, zoom: float, sx: float, sy: float) -> View:
        """The view at ``zoom`` with the place at pixel (sx, sy) kept there."""
        lng, lat = self.at(sx, sy)
        kept = replace(self, lng=lng, lat=lat, zoom=zoom)
        lng, lat = kept.at(self.w - sx, self.h - sy)
        return replace(kept, lng=lng, lat=lat)


# -- the site ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiles() -> Iterator[Tiles]:
    server = Tiles().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiles: Tiles) -> Iterator[Served]:
    """The ramp DEM's statistics over the small box at resolution 8, run by the CLI, served
    with the tile server as the basemap."""
    root = make_project(tmp_path_factory.mktemp("basemap"),
                        settings=f'server:\n  basemap: "{tiles.url}/{{z}}/{{x}}/{{y}}.png"\n')
    h3pipe_cli(root, "run", "terrain", "--bbox", SMALL_BBOX, "-r", "8")
    server = start_server(root)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Chromium online (both servers are on loopback); :func:`visit` refuses the rest."""
    yield from chromium_browser(offline=False)


def visit(browser, site: Served, tiles: Tiles):
    """The map of the small box's statistics, drawn once; console errors (a refusal by
    the Content-Security-Policy is one) and requests for anything but the two servers
    (refused) recorded."""
    page, seen = dashboard_page(browser, site, f"/dashboard/map/dem_stats#scope=bbox:"
                                f"{SMALL_BBOX}&resolution=8&column=mean", also=(tiles.url,))
    page.wait_for_function("() => h3map.state().loaded > 0 && !h3map.state().busy",
                           timeout=WAIT)
    return page, seen


SHOWN = """keys => { const imgs = [...document.querySelectorAll('#tiles img')];
  return JSON.stringify(imgs.map(i => i.dataset.key).sort()) === JSON.stringify(keys)
    && imgs.every(i => i.complete && i.naturalWidth > 0); }"""


def showing(page, seen: Seen, view: View) -> None:
    """Wait until the map shows exactly ``view``'s tiles, each loaded."""
    keys = sorted(f"{z}/{x}/{y}" for z, x, y in view.tiles())
    try:
        page.wait_for_function(SHOWN, arg=keys, timeout=WAIT)
    except Exception:  # playwright's TimeoutError: say what the map shows instead
        shown = page.eval_on_selector_all(
            "#tiles img", "imgs => imgs.map(i => [i.dataset.key, i.naturalWidth])")
        raise AssertionError(f"expected the tiles {keys}; the map shows {shown}; "
                             f"console errors: {seen.errors[:3]}") from None


def look(page, seen: Seen, lng: float, lat: float, zoom: float) -> View:
    """The map's view set to (lng, lat, zoom), its cells and tiles drawn."""
    w, h = page.evaluate(
        "(s => [s.clientWidth, s.clientHeight])(document.getElementById('stage'))")
    loaded = page.evaluate("h3map.state().loaded")
    page.evaluate(f"h3map.view({lng}, {lat}, {zoom})")
    page.wait_for_function(f"() => h3map.state().loaded > {loaded} && !h3map.state().busy",
                           timeout=WAIT)
    view = View(lng, lat, zoom, w, h)
    showing(page, seen, view)
    return view


def colour_at(page, image: Image.Image, view: View, lng: float, lat: float
              ) -> tuple[int, int, int]:
    """The colour most of the 5 x 5 pixels round (lng, lat) have on the screen (a
    graticule line or a label may cross them)."""
    box = page.locator("#stage").bounding_box()
    sx, sy = view.px(lng, lat)
    x, y = round(box["x"] + sx), round(box["y"] + sy)
    patch = [image.getpixel((x + i, y + j)) for i in range(-2, 3) for j in range(-2, 3)]
    return Counter(patch).most_common(1)[0][0]


def screen(page) -> Image.Image:
    page.mouse.move(1, 1)  # off the map: no tip, no hovered cell
    return Image.open(io.BytesIO(page.screenshot())).convert("RGB")


def off_cells(view: View) -> list[tuple[float, float]]:
    """Places in the view well away from the scope's box (where the cells are), its
    edges, the zoom buttons and the scale bar, and inside a tile."""
    west, south, east, north = BOX
    found = []
    for fx in (0.15, 0.3, 0.7, 0.85):
        for fy in (0.15, 0.3, 0.7, 0.85):
            lng, lat = view.at(fx * view.w, fy * view.h)
            away = not (west - 0.01 < lng < east + 0.01 and south - 0.01 < lat < north + 0.01)
            if away and view.inside_tile(lng, lat):
                found.append((lng, lat))
    assert len(found) >= 3, view
    return found


def near(a, b, by: int = 3) -> bool:
    return all(abs(int(p) - int(q)) <= by for p, q in zip(a, b, strict=True))


def assert_tiles_shown(page, view: View) -> None:
    image = screen(page)
    for lng, lat in off_cells(view):
        expected = tile_colour(*view.tile(lng, lat))
        shown = colour_at(page, image, view, lng, lat)
        assert near(shown, expected), ((lng, lat), view.tile(lng, lat), shown, expected)


# -- the map over the basemap ------------------------------------------------------------------

def test_the_tiles_are_drawn_under_the_cells_from_the_basemap_host_only(
        browser, site, tiles, tmp_path):
    page, seen = visit(browser, site, tiles)
    view = look(page, seen, *CENTRE, 12)
    assert_tiles_shown(page, view)
    # The cells over the tiles: a cell's centre has the cell's colour.
    cells = _cells_of(SMALL_BBOX, 8)
    means = {c: _ramp_mean(c) for c in cells}
    scale = Normalize(min(means.values()), max(means.values()), clip=True)
    viridis = matplotlib.colormaps["viridis"]
    image = screen(page)
    image.save(tmp_path / "basemap.png")
    west, south, east, north = BOX
    centres = {c: h3.cell_to_latlng(c) for c in cells}
    inner = [c for c, (lat, lng) in centres.items()  # off the box's outline
             if west + 0.01 < lng < east - 0.01 and south + 0.01 < lat < north - 0.01]
    for cell in sorted(inner, key=means.get)[:: max(1, len(inner) // 8)]:
        lat, lng = centres[cell]
        expected = viridis(scale(means[cell]), bytes=True)[:3]
        shown = colour_at(page, image, view, lng, lat)
        assert near(shown, expected, 6), (cell, shown, expected)
    page.close()
    assert seen.errors == [] and seen.outside == []
    policy = httpx.get(site.url + "/dashboard/map/dem_stats").headers["content-security-policy"]
    assert f"img-src 'self' data: blob: {tiles.url};" in policy
    assert "connect-src 'self';" in policy  # images only: the page's scripts call the server


def test_panning_and_zooming_ask_for_the_tiles_of_the_new_view(browser, site, tiles):
    page, seen = visit(browser, site, tiles)
    view = look(page, seen, *CENTRE, 11)
    box = page.locator("#stage").bounding_box()
    middle = (box["x"] + view.w / 2, box["y"] + view.h / 2)
    # Drag the map 300 pixels left and 200 down.
    mark = len(tiles.asked)
    page.mouse.move(*middle)
    page.mouse.down()
    page.mouse.move(middle[0] - 300, middle[1] + 200, steps=5)
    page.mouse.up()
    dragged = view.dragged(-300, 200)
    showing(page, seen, dragged)
    asked = tiles.since(mark)
    assert dragged.tiles() - view.tiles() <= asked  # each new tile asked for ...
    passed = view.tiles() | dragged.tiles()  # ... and none beyond those the drag passed
    xs, ys = {x for _, x, _ in passed}, {y for _, _, y in passed}
    assert all(z == 11 and min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys)
               for z, x, y in asked)
    assert_tiles_shown(page, dragged)
    # Zoom in with the button: the tiles of zoom 12, all of them new.
    mark = len(tiles.asked)
    page.click("button[title='zoom in']")
    zoomed = replace(dragged, zoom=12)
    showing(page, seen, zoomed)
    assert tiles.since(mark) == zoomed.tiles()
    assert_tiles_shown(page, zoomed)
    # Out with the wheel, round the pointer: zoom 11.6 draws zoom 12's tiles (the nearest
    # whole zoom), smaller.
    mark = len(tiles.asked)
    pointer = (view.w * 0.25, view.h * 0.75)
    page.mouse.move(box["x"] + pointer[0], box["y"] + pointer[1])
    page.mouse.wheel(0, 200)
    wheeled = zoomed.zoomed(12 - 200 * 0.002, *pointer)
    showing(page, seen, wheeled)
    assert page.evaluate("h3map.state().zoom") == pytest.approx(wheeled.zoom)
    asked = tiles.since(mark)
    assert wheeled.z == 12 and wheeled.tiles() - zoomed.tiles() <= asked <= wheeled.tiles()
    assert_tiles_shown(page, wheeled)
    page.close()
    assert seen.errors == [] and seen.outside == []


# -- configuration -----------------------------------------------------------------------------

NOT_A_TEMPLATE = ("is not a tile URL template: http(s)://HOST[:PORT]/ then a path with "
                  "{z}, {x} and {y}")
REFUSED = ["ftp://tiles.example/{z}/{x}/{y}.png", "file:///srv/tiles/{z}/{x}/{y}.png",
           "//tiles.example/{z}/{x}/{y}.png", "https://{s}.tile.example.org/{z}/{x}/{y}.png",
           "https://tiles.example.org;connect-src */{z}/{x}/{y}.png",
           "https://user:pw@tiles.example.org/{z}/{x}/{y}.png",
           "https://tiles.example.org/{z}/{x}.png"]


@pytest.mark.parametrize("template", REFUSED)
def test_validate_refuses_a_basemap_the_map_cannot_use_in_one_line(cli, tmp_path, template):
    root = make_project(tmp_path, settings=f'server:\n  basemap: "{template}"\n')
    result = cli("--project", root, "validate")
    assert result.exit_code == 1
    shown = template.replace("user:pw@", "user:***@")  # a password is never printed
    assert result.stdout.splitlines() == [
        f"h3pipe.yaml:2: server.basemap: '{shown}' {NOT_A_TEMPLATE}"]


def test_serve_says_where_the_pages_fetch_basemap_tiles(site, tiles):
    assert site.lines[1] == (f"every viewer's browser fetches the map's basemap tiles from "
                             f"{tiles.url} (server: basemap in h3pipe.yaml)")


@pytest.mark.parametrize("template", REFUSED[3:])
def test_serve_refuses_a_basemap_the_map_cannot_use_before_listening(tmp_path, template):
    root = make_project(tmp_path, settings=f'server:\n  basemap: "{template}"\n')
    done = subprocess.run([sys.executable, "-m", "h3pipe", "-p", str(root), "serve",
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "serving" not in done.stdout
    shown = template.replace("user:pw@", "user:***@")
    assert done.stderr.splitlines() == [
        f"error: h3pipe.yaml:2: server.basemap: '{shown}' {NOT_A_TEMPLATE}"]
