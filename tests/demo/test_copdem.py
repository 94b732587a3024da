"""Tests for the synthetic Copernicus DEM GLO-30 tiles (h3pipe.demo.copdem).

Expectations are written out from the collection's conventions rather than taken from the
module, so a wrong formula there cannot make its own test pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from h3pipe.demo import copdem
from h3pipe.demo.copdem import generate_tiles, tile_name, tiles_for_bbox

SIZE = 120
RWANDA = (28.86, -2.84, 30.90, -1.05)
VOID = -32767.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def _name(ns: str, ew: str) -> str:
    return f"Copernicus_DSM_COG_10_{ns}_00_{ew}_00_DEM.tif"


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _land(a: np.ndarray) -> np.ndarray:
    """Mask of real elevations (neither lake NaN nor -32767 void)."""
    return ~np.isnan(a) & (a != VOID)


@pytest.fixture(scope="module")
def rwanda(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rwanda")
    paths = generate_tiles(out, RWANDA, size=SIZE)
    return {p.name: p for p in paths}


# --- naming and bbox -> cells ---------------------------------------------------------------


def test_tile_names_across_equator_and_prime_meridian() -> None:
    cells = tiles_for_bbox((-0.5, -0.5, 0.5, 0.5))
    assert sorted(cells) == [(-1, -1), (-1, 0), (0, -1), (0, 0)]
    assert {tile_name(lon, lat) for lon, lat in cells} == {
        _name("N00", "W001"),  # lon -1..0, lat 0..1
        _name("N00", "E000"),  # lon 0..1, lat 0..1
        _name("S01", "W001"),  # lon -1..0, lat -1..0
        _name("S01", "E000"),  # lon 0..1, lat -1..0
    }


def test_tile_name_examples() -> None:
    assert tile_name(29, -2) == "Copernicus_DSM_COG_10_S02_00_E029_00_DEM.tif"
    assert tile_name(-115, 33) == "Copernicus_DSM_COG_10_N33_00_W115_00_DEM.tif"
    assert tile_name(-180, -90) == "Copernicus_DSM_COG_10_S90_00_W180_00_DEM.tif"
    assert tile_name(179, 89) == "Copernicus_DSM_COG_10_N89_00_E179_00_DEM.tif"
    with pytest.raises(ValueError):
        tile_name(180, 0)


def test_rwanda_bbox_gives_six_tiles(rwanda: dict[str, Path]) -> None:
    assert set(rwanda) == {
        _name(ns, ew) for ns in ("S02", "S03") for ew in ("E028", "E029", "E030")
    }
    assert all(p.is_file() for p in rwanda.values())


def test_bbox_edges_on_whole_degrees_do_not_pull_in_neighbours() -> None:
    assert tiles_for_bbox((29.0, -2.0, 30.0, -1.0)) == [(29, -2)]
    assert tiles_for_bbox((29.5, -1.5, 29.5, -1.5)) == [(29, -2)]
    assert tiles_for_bbox((179.5, 89.5, 180.0, 90.0)) == [(179, 89)]


@pytest.mark.parametrize(
    "bbox",
    [
        (30.0, -2.0, 29.0, -1.0),  # minx > maxx
        (29.0, -1.0, 30.0, -2.0),  # miny > maxy
        (29.0, -2.0, 200.0, -1.0),
        (29.0, -95.0, 30.0, -1.0),
        (float("nan"), -2.0, 30.0, -1.0),
        (29.0, -2.0, 30.0),
    ],
)
def test_bad_bbox_raises_value_error(bbox: tuple[float, ...], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        tiles_for_bbox(bbox)
    with pytest.raises(ValueError):
        generate_tiles(tmp_path, bbox, size=SIZE)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# --- georeferencing ---------------------------------------------------------------------------


def test_equator_tiles_read_back_point_registered(tmp_path: Path) -> None:
    paths = generate_tiles(tmp_path, (-0.5, -0.5, 0.5, 0.5), size=SIZE)
    assert len(paths) == 4
    for path in paths:
        lon = int(path.name[30:33]) * (1 if path.name[29] == "E" else -1)
        lat = int(path.name[23:25]) * (1 if path.name[22] == "N" else -1)
        with rasterio.open(path) as ds:
            assert ds.tags()["AREA_OR_POINT"] == "Point"
            assert ds.dtypes == ("float32",)
            assert (ds.count, ds.width, ds.height) == (1, SIZE, SIZE)
            assert ds.nodata is None
            assert ds.nodatavals == (None,)
            assert ds.crs.to_epsg() == 4326
            # Corner-based transform: half a pixel north-west of the cell's corner.
            half = 0.5 / SIZE
            expected = Affine(1 / SIZE, 0.0, lon - half, 0.0, -1 / SIZE, lat + 1 + half)
            assert tuple(ds.transform)[:6] == tuple(expected)[:6]
            # Which means pixel (0, 0) is centred exactly on the north-west cell corner.
            cx, cy = ds.transform @ (0.5, 0.5)
            assert cx == pytest.approx(lon, abs=1e-12)
            assert cy == pytest.approx(lat + 1, abs=1e-12)
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert ds.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
        # On disk the tiepoint is the pixel centre, like the real tiles; GDAL only reports it
        # unshifted when told to ignore PixelIsPoint.
        with rasterio.Env(GTIFF_POINT_GEO_IGNORE=True), rasterio.open(path) as ds:
            assert ds.transform.c == pytest.approx(lon, abs=1e-12)
            assert ds.transform.f == pytest.approx(lat + 1, abs=1e-12)


def test_full_size_uses_512_blocks(tmp_path: Path) -> None:
    (path,) = generate_tiles(tmp_path, (29.1, -1.9, 29.2, -1.8), size=1100)
    with rasterio.open(path) as ds:
        assert ds.block_shapes == [(512, 512)]
        assert ds.overviews(1)  # larger than one block, so COG adds overviews
        assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "3"


def test_adjacent_tiles_abut_on_one_grid(rwanda: dict[str, Path]) -> None:
    def transform(ns: str, ew: str) -> Affine:
        with rasterio.open(rwanda[_name(ns, ew)]) as ds:
            return ds.transform

    for ns in ("S02", "S03"):
        for west, east in (("E028", "E029"), ("E029", "E030")):
            w, e = transform(ns, west), transform(ns, east)
            assert w.c + w.a * SIZE == e.c  # right edge of west == left edge of east
            assert w.f == e.f and w.a == e.a and w.e == e.e
    for ew in ("E028", "E029", "E030"):
        n, s = transform("S02", ew), transform("S03", ew)
        assert n.f + n.e * SIZE == s.f  # bottom edge of north == top edge of south
        assert n.c == s.c


# --- values -----------------------------------------------------------------------------------


def test_values_plausible(rwanda: dict[str, Path]) -> None:
    for path in rwanda.values():
        a = _read(path)
        land = a[_land(a)]
        assert land.size > 0.9 * a.size
        assert land.min() >= 950.0 and land.max() <= 4500.0
    # Virunga volcanoes in the north-west stand far above the eastern plains.
    assert np.nanmax(_read(rwanda[_name("S02", "E029")])) > 3500.0
    east = _read(rwanda[_name("S02", "E030")])
    assert np.median(east[_land(east)]) < 2000.0


@pytest.mark.parametrize("ns", ["S02", "S03"])
@pytest.mark.parametrize(("west", "east"), [("E028", "E029"), ("E029", "E030")])
def test_values_continuous_across_vertical_seam(
    rwanda: dict[str, Path], ns: str, west: str, east: str
) -> None:
    w = _read(rwanda[_name(ns, west)])
    e = _read(rwanda[_name(ns, east)])
    _assert_seam_continuous(w[:, -2], w[:, -1], e[:, 0], e[:, 1])


@pytest.mark.parametrize("ew", ["E028", "E029", "E030"])
def test_values_continuous_across_horizontal_seam(rwanda: dict[str, Path], ew: str) -> None:
    n = _read(rwanda[_name("S02", ew)])
    s = _read(rwanda[_name("S03", ew)])
    _assert_seam_continuous(n[-2], n[-1], s[0], s[1])


def _assert_seam_continuous(
    before2: np.ndarray, before1: np.ndarray, after1: np.ndarray, after2: np.ndarray
) -> None:
    """The step across the seam must look like the steps on either side of it."""
    ok = _land(before2) & _land(before1) & _land(after1) & _land(after2)
    assert ok.sum() > 0.5 * ok.size  # the lake covers part of the S02/S03 seam in E029
    seam = np.abs(after1 - before1)[ok]
    inner = np.maximum(np.abs(before1 - before2), np.abs(after2 - after1))[ok]
    # Two noise draws of +-1.5 m can differ by up to 3 m even on flat ground.
    assert seam.max() <= 2.0 * inner.max() + 3.0
    assert seam.max() < 150.0  # pixels are ~0.9 km here; a tile offset would jump far more


def test_lake_is_nan_and_straddles_s02_s03(rwanda: dict[str, Path]) -> None:
    lake_lon, lake_lat, semi_lon, semi_lat = 29.2, -2.0, 0.15, 0.25
    for ns, lat_sw in (("S02", -2), ("S03", -3)):
        a = _read(rwanda[_name(ns, "E029")])
        lon = 29 + np.arange(SIZE) / SIZE
        lat = lat_sw + 1 - np.arange(SIZE) / SIZE
        r = np.hypot((lon[None, :] - lake_lon) / semi_lon, (lat[:, None] - lake_lat) / semi_lat)
        assert np.isnan(a[r < 0.85]).all()
        assert not np.isnan(a[r > 1.2]).any()
        assert np.isnan(a).sum() > 100
    # Pixel centred on the lake centre: top row of S03 (lat -2.0), column (29.2 - 29) * 120.
    assert np.isnan(_read(rwanda[_name("S03", "E029")])[0, 24])
    # lat -1.9 in S02 is row (-1 - -1.9) * 120 = 108.
    assert np.isnan(_read(rwanda[_name("S02", "E029")])[108, 24])
    for ns in ("S02", "S03"):
        for ew in ("E028", "E030"):
            assert not np.isnan(_read(rwanda[_name(ns, ew)])).any()


def test_voids_present(rwanda: dict[str, Path]) -> None:
    for path in rwanda.values():
        a = _read(path)
        assert (a == VOID).sum() >= 4, path.name
        # Only exact void values, nothing in between the void value and real terrain.
        assert not ((a > VOID) & (a < 900.0)).any()


def test_deterministic(rwanda: dict[str, Path], tmp_path: Path) -> None:
    again = generate_tiles(tmp_path, RWANDA, size=SIZE)
    for path in again:
        assert _read(path).tobytes() == _read(rwanda[path.name]).tobytes()


def test_tile_content_does_not_depend_on_bbox(rwanda: dict[str, Path], tmp_path: Path) -> None:
    (path,) = generate_tiles(tmp_path, (29.1, -1.9, 29.2, -1.8), size=SIZE)
    assert _read(path).tobytes() == _read(rwanda[path.name]).tobytes()


def test_seed_changes_only_noise_and_voids(rwanda: dict[str, Path], tmp_path: Path) -> None:
    (path,) = generate_tiles(tmp_path, (29.5, -1.9, 29.6, -1.8), size=SIZE, seed=7)
    a, b = _read(path), _read(rwanda[path.name])
    both = _land(a) & _land(b)
    assert not np.array_equal(a[both], b[both])
    assert np.abs(a[both] - b[both]).max() <= 3.0
    assert np.array_equal(np.isnan(a), np.isnan(b))  # the lake is part of the terrain


# --- caching and atomic writes ----------------------------------------------------------------


def test_overwrite_false_skips_existing(tmp_path: Path) -> None:
    bbox = (29.1, -2.1, 29.2, -1.9)  # two tiles
    events: list[tuple[str, bool]] = []

    def record(path: Path, written: bool) -> None:
        events.append((path.name, written))

    first = generate_tiles(tmp_path, bbox, size=SIZE, on_tile=record)
    assert [w for _, w in events] == [True, True]
    stats = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first}

    events.clear()
    second = generate_tiles(tmp_path, bbox, size=SIZE, on_tile=record)
    assert second == first
    assert [w for _, w in events] == [False, False]
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in second} == stats

    events.clear()
    generate_tiles(tmp_path, bbox, size=SIZE, overwrite=True, on_tile=record)
    assert [w for _, w in events] == [True, True]
    assert all(p.stat().st_ino != stats[p][0] for p in first)  # replaced, not patched

    events.clear()
    generate_tiles(tmp_path, bbox, size=60, on_tile=record)  # wrong size: regenerate
    assert [w for _, w in events] == [True, True]
    with rasterio.open(first[0]) as ds:
        assert ds.width == 60
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in first)


def test_corrupt_existing_tile_is_regenerated(tmp_path: Path) -> None:
    path = tmp_path / tile_name(29, -2)
    path.write_bytes(b"not a tiff")
    generate_tiles(tmp_path, (29.1, -1.9, 29.2, -1.8), size=SIZE)
    with rasterio.open(path) as ds:
        assert ds.width == SIZE


def test_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> np.ndarray:
        raise KeyboardInterrupt

    monkeypatch.setattr(copdem, "_render_rows", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_tiles(tmp_path, (29.1, -1.9, 29.2, -1.8), size=SIZE)
    assert list(tmp_path.iterdir()) == []


# --- command line -----------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "h3pipe.demo", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_then_skips(tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    first = _cli("--out", str(out), "--size", str(SIZE))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 7
    assert all(line.startswith("wrote") for line in lines[:6])
    assert lines[-1].startswith("6 tiles")
    second = _cli("--out", str(out), "--size", str(SIZE))
    assert second.returncode == 0, second.stderr
    assert all(line.startswith("skipped") for line in second.stdout.splitlines()[:6])


@pytest.mark.parametrize(
    "args",
    [
        ["--bbox", "30,-2,29,-1"],
        ["--bbox", "29,-2,30"],
        ["--bbox", "a,b,c,d"],
        ["--size", "0"],
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str]) -> None:
    result = _cli("--out", str(tmp_path / "tiles"), *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
