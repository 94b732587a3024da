"""``h3pipe map`` on real runs over rasters made here: cells whose every pixel holds one
value get the colour the colour bar shows at that value; null and nodata cells get their
own colours; classes get the legend's colours; errors are one line and exit 2."""

from __future__ import annotations

import json

import h3
import matplotlib
import numpy as np
import pytest
import shapely
from PIL import Image

from tests.conftest import raster_source, write_project, write_raster

WEST, NORTH, RES_DEG = 29.0, -1.9, 0.001
BBOX = "29.005,-2.095,29.195,-1.905"
# Four stripes of 0.05 degrees, west to east: 100, 200, 300, then nodata.
STRIPES = (100.0, 200.0, 300.0, None)
NODATA = -9999.0


def _stripes() -> np.ndarray:
    data = np.empty((200, 200), dtype="float32")
    for k, value in enumerate(STRIPES):
        data[:, 50 * k:50 * (k + 1)] = NODATA if value is None else value
    return data


def _pipeline(stats: str, extra: str = "", source: str = "s") -> str:
    return (f"id: p\noutput: {{dataset: ds, theme: terrain}}\n"
            f"defaults: {{resolution: 7, batch_size: 100}}\n"
            f"steps:\n  - id: stats\n    operation: zonal_stats\n    source: {source}\n"
            f"    params: {{stats: [{stats}]{extra}}}\n")


@pytest.fixture
def striped(tmp_path, cli):
    tif = write_raster(tmp_path / "r.tif", _stripes(), west=WEST, north=NORTH, res=RES_DEG,
                       nodata=NODATA)
    root = write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif),
                                                                     units="m")},
                         pipelines={"p": _pipeline("mean, count", ", min_coverage: 0.9")})
    r = cli("--project", root, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    return root


def _inside(value_index: int) -> list[str]:
    """Res-7 cells of the box whose whole outline lies in stripe ``value_index``."""
    x0 = WEST + 0.05 * value_index
    stripe = shapely.box(x0, -2.1, x0 + 0.05, -1.9)
    box = shapely.box(*(float(v) for v in BBOX.split(",")))
    cells = h3.geo_to_cells(box.__geo_interface__, 7)
    out = []
    for c in cells:
        poly = shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)])
        if stripe.buffer(-0.0005).contains(poly):
            out.append(c)
    assert out, "the test's geometry should hold whole cells in each stripe"
    return out


def _pixel(image: Image.Image, facts: dict, cell: str) -> tuple[int, ...]:
    """The PNG's colour at the cell's centre, placed by the frame the PNG records."""
    left, top, width, height = facts["axes"]
    west, east, south, north = facts["extent"]
    lat, lng = h3.cell_to_latlng(cell)
    x = left + (lng - west) / (east - west) * width
    y = top + (north - lat) / (north - south) * height
    return image.getpixel((int(x), int(y)))[:3]


def _bar_colour(image: Image.Image, facts: dict, value: float) -> tuple[int, ...]:
    """The colour bar's colour at ``value``, read off the picture."""
    left, top, width, height = facts["colorbar"]
    f = (value - facts["vmin"]) / (facts["vmax"] - facts["vmin"])
    y = top + (1 - f) * (height - 1)
    # The bar's end rows blend with its outline: read the end colours a few rows in.
    y = min(max(y, top + 3), top + height - 4)
    return image.getpixel((int(left + width / 2), int(y)))[:3]


def _hex(colour: str) -> tuple[int, ...]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _close(a, b, tol=4) -> bool:
    return max(abs(int(x) - int(y)) for x, y in zip(a, b, strict=True)) <= tol


def _open(path):
    image = Image.open(path).convert("RGBA")
    return image, json.loads(Image.open(path).text["h3pipe"])


def test_cells_get_the_colour_the_colour_bar_shows(striped, cli, tmp_path):
    out = tmp_path / "mean.png"
    r = cli("--project", striped, "map", "ds", "mean", "--bbox", BBOX, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert f"to {out}" in r.stdout
    image, facts = _open(out)
    assert image.size == (1200, 900)
    # Whole cells of the 100 and 300 stripes are the extremes of the means.
    assert facts["vmin"] == pytest.approx(100.0, abs=1e-3)
    assert facts["vmax"] == pytest.approx(300.0, abs=1e-3)
    viridis = matplotlib.colormaps["viridis"]
    for k, value in enumerate(STRIPES[:3]):
        expected = tuple(int(round(c * 255)) for c in viridis((value - 100) / 200)[:3])
        for cell in _inside(k)[:5]:
            seen = _pixel(image, facts, cell)
            assert _close(seen, _bar_colour(image, facts, value), tol=10), (cell, value, seen)
            assert _close(seen, expected, tol=3), (cell, value, seen, expected)


def test_null_and_nodata_cells_are_drawn_as_such(striped, cli, tmp_path):
    from h3pipe.report.maps import NODATA_COLOUR, NULL_COLOUR

    out = tmp_path / "mean.png"
    assert cli("--project", striped, "map", "ds", "--bbox", BBOX, "-o", out).exit_code == 0
    image, facts = _open(out)
    for cell in _inside(3)[:5]:  # all pixels nodata: count 0
        assert _close(_pixel(image, facts, cell), _hex(NODATA_COLOUR), tol=2)
    # A cell astride the nodata edge: some valid pixels, coverage under min_coverage 0.9,
    # so its mean is null but it is not a nodata cell.
    edge_x = WEST + 0.15
    straddling = [c for c in h3.geo_to_cells(shapely.box(edge_x - 0.004, -2.05, edge_x,
                                                         -1.95).__geo_interface__, 7)
                  if 0.2 < _share_west_of(c, edge_x) < 0.8]
    assert straddling
    for cell in straddling[:3]:
        assert _close(_pixel(image, facts, cell), _hex(NULL_COLOUR), tol=2), cell


def _share_west_of(cell: str, x: float) -> float:
    poly = shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])
    return poly.intersection(shapely.box(-180, -90, x, 90)).area / poly.area


def test_categorical_classes_get_the_legend_colours(tmp_path, cli):
    from h3pipe.report.maps import CLASS_COLOURS

    data = np.where(np.arange(200)[None, :] < 100, 1, 3).repeat(200, axis=0).astype("int16")
    tif = write_raster(tmp_path / "lc.tif", data, west=WEST, north=NORTH, res=RES_DEG)
    source = raster_source("lc", str(tif), measure="categorical",
                           classes="[{value: 1, name: forest}, {value: 2, name: crops}, "
                                   "{value: 3, name: water}]")
    root = write_project(tmp_path / "p", sources={"lc": source},
                         pipelines={"p": _pipeline("majority", source="lc")})
    assert cli("--project", root, "run", "p", "--bbox", BBOX, "--workers", "1").exit_code == 0
    out = tmp_path / "classes.png"
    r = cli("--project", root, "map", "ds", "majority", "--bbox", BBOX, "-o", out)
    assert r.exit_code == 0, r.stderr
    image, facts = _open(out)
    assert "colorbar" not in facts  # a legend of classes, not a colour bar
    for k, declared in ((0, 0), (2, 2)):  # stripe 0 is class 1 (forest), stripe 2 class 3
        for cell in _inside(k)[:3]:
            assert _close(_pixel(image, facts, cell), _hex(CLASS_COLOURS[declared]), tol=2)


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_vector_formats_by_extension(striped, cli, tmp_path, suffix, magic):
    out = tmp_path / f"mean{suffix}"
    r = cli("--project", striped, "map", "ds", "mean", "--bbox", BBOX, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes().startswith(magic)
    assert not list(tmp_path.glob(".mean*"))  # nothing left beside it


def test_an_unwritable_output_is_one_line_and_leaves_nothing(striped, cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = cli("--project", striped, "map", "ds", "--bbox", BBOX, "-o", blocker / "m.png")
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot write" in r.stderr
    assert blocker.read_text() == "not a folder"


def test_picture_size_is_the_one_asked_for(striped, cli, tmp_path):
    out = tmp_path / "small.png"
    r = cli("--project", striped, "map", "ds", "--bbox", BBOX, "-o", out, "--width", "640",
            "--height", "480")
    assert r.exit_code == 0, r.stderr
    assert Image.open(out).size == (640, 480)


@pytest.mark.parametrize("args, words", [
    (["ds", "meen", "--bbox", BBOX, "-o", "x.png"], ["no column 'meen'", "'mean'"]),
    (["ds", "mean", "--bbox", BBOX, "-o", "x.jpg"], ["x.jpg", ".png"]),
    (["ds", "mean", "-o", "x.png"], ["--iso3, --bbox, --aoi or --run"]),
    (["ds", "mean", "--bbox", BBOX, "-o", "x.png", "--cmap", "viridiss"],
     ["unknown colour map 'viridiss'", "viridis"]),
    (["nope", "--bbox", BBOX, "-o", "x.png"], ["no results for dataset 'nope'"]),
])
def test_bad_requests_say_what_to_fix(striped, cli, tmp_path, args, words):
    r = cli("--project", striped, "map", *args)
    assert r.exit_code == 2, r.stdout
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_million_cells_draw_in_one_pass(tmp_path):
    """The map's cost is the picture's: a million cells are one lookup per pixel (no
    polygon per cell), and every one of them is inside the frame."""
    from h3pipe import grid
    from h3pipe.report import maps

    parents = np.array([h3.str_to_int(c) for c in h3.geo_to_cells(
        shapely.box(29.0, -2.8, 30.9, -1.0).__geo_interface__, 5)], dtype=np.uint64)
    cells = grid.children(parents, 10)
    assert len(cells) > 1_000_000
    lng, _ = grid.centres(cells)
    data = maps.CellMap(cells, lng.copy(), np.zeros(len(cells), bool), 10, "lng")
    facts = maps.draw(data, maps.Style(label="lng"), tmp_path / "big.png")
    west, east, south, north = facts["extent"]
    assert west < lng.min() and lng.max() < east
    assert facts["vmin"] == pytest.approx(lng.min()) and facts["vmax"] == pytest.approx(lng.max())


def test_diverging_colours_centre_on_the_value_given(striped, cli, tmp_path):
    out = tmp_path / "diverging.png"
    r = cli("--project", striped, "map", "ds", "mean", "--bbox", BBOX, "-o", out,
            "--diverging", "--center", "150")
    assert r.exit_code == 0, r.stderr
    image, facts = _open(out)
    # About 150, the colours reach 150 either way: 300 is the top, 0 would be the bottom.
    assert facts["vmin"] == pytest.approx(0.0) and facts["vmax"] == pytest.approx(300.0)
    rdbu = matplotlib.colormaps["RdBu_r"]
    for k, value in enumerate(STRIPES[:3]):
        expected = tuple(int(round(c * 255)) for c in rdbu(value / 300)[:3])
        for cell in _inside(k)[:3]:
            assert _close(_pixel(image, facts, cell), expected, tol=3), (cell, value)


def test_a_sweep_is_drawn_one_scenario_at_a_time(tmp_path, cli, chromium):
    import pyarrow.parquet as pq

    from tests.browser import open_page
    from tests.execution.test_sweep import BBOX as SWEEP_BBOX
    from tests.execution.test_sweep import _project as sweep_project
    from tests.execution.test_sweep import make_scene

    root = sweep_project(make_scene(tmp_path / "scene"), tmp_path / "p")
    assert cli("--project", root, "run", "z", "--bbox", SWEEP_BBOX, "--workers", "1"
               ).exit_code == 0
    r = cli("--project", root, "map", "zds", "rp100_mean", "--bbox", SWEEP_BBOX, "-o",
            tmp_path / "all.png")
    assert r.exit_code == 2 and "--where scenario=" in r.stderr, r.stderr
    out = tmp_path / "one.png"
    r = cli("--project", root, "map", "zds", "rp100_mean", "--bbox", SWEEP_BBOX, "-o", out,
            "--where", "scenario=b-2050-s1")
    assert r.exit_code == 0, r.stderr
    export = tmp_path / "one.parquet"
    assert cli("--project", root, "export", "zds", "--bbox", SWEEP_BBOX, "-o", export,
               "--where", "scenario=b-2050-s1").exit_code == 0
    values = [v for v in pq.read_table(export).column("rp100_mean").to_pylist() if v is not None]
    _, facts = _open(out)
    assert facts["vmin"] == pytest.approx(min(values))
    assert facts["vmax"] == pytest.approx(max(values))
    report = tmp_path / "sweep.html"
    assert cli("--project", root, "runs", "report", "latest", "-o", report).exit_code == 0
    shown = open_page(chromium, report, tmp_path / "sweep-report.png")
    assert shown.problems == [] and "maps show one scenario" in shown.text
    assert "Scenarios computed: 6" in shown.text
    # Two steps, the second reading the first's rows: the graph draws that edge.
    assert cli("--project", root, "run", "e", "--bbox", SWEEP_BBOX, "--workers", "1"
               ).exit_code == 0
    assert cli("--project", root, "runs", "report", "latest", "-o", report).exit_code == 0
    assert 'data-from="depth" data-to="exposure"' in report.read_text()


def test_a_where_value_the_sweep_lacks_is_one_line_and_exit_2(tmp_path, cli):
    from tests.execution.test_sweep import BBOX as SWEEP_BBOX
    from tests.execution.test_sweep import _project as sweep_project
    from tests.execution.test_sweep import make_scene

    root = sweep_project(make_scene(tmp_path / "scene"), tmp_path / "p")
    assert cli("--project", root, "run", "z", "--bbox", SWEEP_BBOX, "--workers", "1"
               ).exit_code == 0
    refused = {
        ("year=1999",): "--where year: no value 1999 (values: 2020, 2050)",
        ("kind=b,c", "ssp=s1,s3"): "--where kind: no value c (values: a, b)",
        ("scenario=b-2050-s1,b-2050-s3",):
            "--where scenario: no value b-2050-s3 (values: a-2020, a-2050-s1, a-2050-s2, "
            "b-2020, b-2050-s1, b-2050-s2)",
        ("kind=a", "year=2020", "ssp=s2"):
            "--where kind=a --where year=2020 --where ssp=s2: no scenario has all of these "
            "(scenarios: a-2020, a-2050-s1, a-2050-s2, b-2020, b-2050-s1, b-2050-s2)",
    }
    for suffix in ("png", "svg", "pdf"):
        out = tmp_path / f"x.{suffix}"
        for wheres, message in refused.items():
            r = cli("--project", root, "map", "zds", "rp100_mean", "--bbox", SWEEP_BBOX,
                    "-o", out, *[a for w in wheres for a in ("--where", w)])
            assert (r.exit_code, r.stderr) == (2, f"error: {message}\n"), (suffix, wheres)
            assert not out.exists()
    out = tmp_path / "one.png"
    r = cli("--project", root, "map", "zds", "rp100_mean", "--bbox", SWEEP_BBOX, "-o", out,
            "--where", "kind=b", "--where", "year=2050", "--where", "ssp=s1")
    assert (r.exit_code, r.stdout) == (0, f"drew zds.rp100_mean to {out}\n"), r.stderr
    assert _open(out)[1]["vmax"] > 0
