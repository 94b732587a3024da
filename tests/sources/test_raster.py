"""Raster access: :func:`describe_raster` puts a source's files on one pixel grid (or refuses
them), and :func:`read_mosaic` reads any window of that grid across tiles, nodata as NaN.

Every expectation is written from the array the test wrote, never from the module's output.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from h3pipe.errors import SourceError
from h3pipe.sources.raster import describe_raster, read_mosaic
from tests.conftest import write_raster

WEST, NORTH, RES = 30.0, -1.0, 0.01


def _whole(shape: tuple[int, int] = (40, 60)) -> np.ndarray:
    # Every pixel distinct, so a tile placed one pixel off cannot go unnoticed.
    return np.arange(shape[0] * shape[1], dtype="float32").reshape(shape)


def _split(root: Path, data: np.ndarray, rows: list[int], cols: list[int],
           names: dict[tuple[int, int], str] | None = None, **kw) -> list[Path]:
    """Cut ``data`` at the given row/column indices into abutting GeoTIFF tiles."""
    rb = [0, *rows, data.shape[0]]
    cb = [0, *cols, data.shape[1]]
    paths = []
    for i in range(len(rb) - 1):
        for j in range(len(cb) - 1):
            name = (names or {}).get((i, j), f"t_{i}_{j}.tif")
            paths.append(write_raster(root / name, data[rb[i]:rb[i + 1], cb[j]:cb[j + 1]],
                                      west=WEST + cb[j] * RES, north=NORTH - rb[i] * RES,
                                      res=RES, **kw))
    return paths


def _expected_window(data: np.ndarray, extent: tuple[float, float, float, float]) -> np.ndarray:
    """The pixels of ``data`` (top-left at WEST, NORTH) inside ``extent``, NaN off the array."""
    xmin, ymin, xmax, ymax = extent
    c0 = round((xmin - WEST) / RES)
    c1 = round((xmax - WEST) / RES)
    r0 = round((NORTH - ymax) / RES)
    r1 = round((NORTH - ymin) / RES)
    out = np.full((r1 - r0, c1 - c0), np.nan, dtype="float64")
    for r in range(r0, r1):
        for c in range(c0, c1):
            if 0 <= r < data.shape[0] and 0 <= c < data.shape[1]:
                out[r - r0, c - c0] = data[r, c]
    return out


def _one_line_naming(exc: pytest.ExceptionInfo[SourceError], name: str) -> None:
    text = str(exc.value)
    assert "\n" not in text, text
    assert name in text, text


# --- one grid -------------------------------------------------------------------------------


def test_single_file_is_described_as_one_tile_at_its_own_grid(tmp_path):
    data = _whole()
    path = write_raster(tmp_path / "one.tif", data, west=WEST, north=NORTH, res=RES, nodata=-9999)
    info = describe_raster("src", str(path), tmp_path)
    assert info.crs_is_wgs84
    assert (info.x0, info.y0) == (WEST, NORTH)
    assert info.xres == pytest.approx(RES) and info.yres == pytest.approx(RES)
    assert info.nodata == -9999 and info.dtype == "float32"
    assert len(info.tiles) == 1 and (info.tiles[0].col_off, info.tiles[0].row_off) == (0, 0)
    assert info.bounds == pytest.approx((WEST, NORTH - 40 * RES, WEST + 60 * RES, NORTH))


def test_relative_path_is_resolved_against_the_project(tmp_path):
    write_raster(tmp_path / "data" / "r.tif", _whole(), west=WEST, north=NORTH, res=RES)
    info = describe_raster("src", "data/r.tif", tmp_path)
    assert Path(info.tiles[0].path) == tmp_path / "data" / "r.tif"


def test_four_tiles_read_back_as_the_raster_they_were_cut_from(tmp_path):
    data = _whole()
    # Name the tiles so the glob lists the south-east one first: the grid origin then sits
    # inside the mosaic and the other tiles get negative offsets.
    names = {(1, 1): "a.tif", (0, 0): "b.tif", (0, 1): "c.tif", (1, 0): "d.tif"}
    _split(tmp_path / "tiles", data, rows=[17], cols=[23], names=names)
    info = describe_raster("src", str(tmp_path / "tiles" / "*.tif"), tmp_path)
    assert len(info.tiles) == 4
    assert info.bounds == pytest.approx((WEST, NORTH - 40 * RES, WEST + 60 * RES, NORTH))

    # A window across both seams, and one that runs past the north-west corner.
    for bounds in [(WEST + 0.151, NORTH - 0.253, WEST + 0.318, NORTH - 0.094),
                   (WEST - 0.05, NORTH - 0.05, WEST + 0.1, NORTH + 0.05)]:
        values, extent = read_mosaic(info, bounds)
        xmin, ymin, xmax, ymax = extent
        assert xmin <= bounds[0] and ymin <= bounds[1] and xmax >= bounds[2] and ymax >= bounds[3]
        assert values.shape == (round((ymax - ymin) / RES), round((xmax - xmin) / RES))
        np.testing.assert_array_equal(values, _expected_window(data, extent))


def test_gap_between_tiles_reads_as_nan(tmp_path):
    data = _whole((10, 30))
    write_raster(tmp_path / "t" / "w.tif", data[:, :10], west=WEST, north=NORTH, res=RES)
    # The east tile starts 10 pixels after the west one ends.
    write_raster(tmp_path / "t" / "e.tif", data[:, 20:], west=WEST + 20 * RES, north=NORTH,
                 res=RES)
    info = describe_raster("src", str(tmp_path / "t" / "*.tif"), tmp_path)
    values, extent = read_mosaic(info, (WEST + 0.005, NORTH - 0.095, WEST + 0.295, NORTH - 0.005))
    expected = _expected_window(data, extent)
    c_gap0 = round((WEST + 10 * RES - extent[0]) / RES)
    expected[:, c_gap0:c_gap0 + 10] = np.nan
    np.testing.assert_array_equal(values, expected)
    assert np.isnan(values[:, c_gap0:c_gap0 + 10]).all()


def test_subset_keeps_only_the_tiles_a_window_touches(tmp_path):
    _split(tmp_path / "tiles", _whole(), rows=[20], cols=[30])
    info = describe_raster("src", str(tmp_path / "tiles" / "*.tif"), tmp_path)
    # Well inside the north-west tile (more than one pixel of padding from both seams).
    sub = info.subset((WEST + 0.02, NORTH - 0.15, WEST + 0.2, NORTH - 0.02))
    assert [Path(t.path).name for t in sub.tiles] == ["t_0_0.tif"]
    # Across the vertical seam only.
    sub = info.subset((WEST + 0.25, NORTH - 0.15, WEST + 0.35, NORTH - 0.02))
    assert sorted(Path(t.path).name for t in sub.tiles) == ["t_0_0.tif", "t_0_1.tif"]


# --- nodata ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "file_nodata", "override", "masked", "kept"),
    [
        # file nodata on a float raster
        ("float32", -9999.0, None, [-9999.0], [0.0, -9998.0, 1e30]),
        # NaN pixels, nothing declared
        ("float32", None, None, [np.nan], [0.0, -9999.0]),
        # NaN pixels are never counted even when another nodata value is declared
        ("float32", -1.0, None, [np.nan, -1.0], [0.0, 1.0]),
        # the YAML override where the file declares none
        ("float32", None, -1.0, [-1.0], [0.0, 1.0, -2.0]),
        # int16 with the usual -32768; its neighbours and the top of the range are values
        ("int16", -32768, None, [-32768], [-32767, 32767, 0]),
        # uint8 without nodata: 0 and 255 are values
        ("uint8", None, None, [], [0, 255, 7]),
        # uint8 with nodata 0
        ("uint8", 0, None, [0], [255, 1]),
        # the override replaces the file's value, it does not add to it
        ("uint8", 255, 0, [0], [255, 1]),
    ],
)
def test_nodata_pixels_read_as_nan_and_values_stay_exact(tmp_path, dtype, file_nodata, override,
                                                         masked, kept):
    specials = [*masked, *kept]
    data = np.full((6, 8), 3, dtype=dtype)  # 3 is never a nodata value below
    expected = np.full((6, 8), 3.0)
    for i, v in enumerate(specials):
        data.flat[i * 3] = v
        expected.flat[i * 3] = np.nan if i < len(masked) else float(np.asarray(v, dtype))
    path = write_raster(tmp_path / "r.tif", data, west=WEST, north=NORTH, res=RES,
                        nodata=file_nodata)
    info = describe_raster("src", str(path), tmp_path, nodata=override,
                           nodata_override=override is not None)
    values, extent = read_mosaic(info, (WEST + 0.001, NORTH - 0.059, WEST + 0.079, NORTH - 0.001))
    assert extent == pytest.approx((WEST - RES, NORTH - 7 * RES, WEST + 9 * RES, NORTH + RES))
    np.testing.assert_array_equal(values[1:-1, 1:-1], expected)
    assert np.isnan(values[0]).all() and np.isnan(values[-1]).all()


def test_each_tile_applies_its_own_declared_nodata(tmp_path):
    data = np.full((4, 8), 5.0, dtype="float32")
    data[:, 1] = -1.0   # nodata of the west tile only
    data[:, 6] = -9999  # nodata of the east tile only
    data[:, 2] = -9999  # a value in the west tile
    data[:, 5] = -1.0   # a value in the east tile
    write_raster(tmp_path / "t" / "w.tif", data[:, :4], west=WEST, north=NORTH, res=RES,
                 nodata=-1.0)
    write_raster(tmp_path / "t" / "e.tif", data[:, 4:], west=WEST + 4 * RES, north=NORTH,
                 res=RES, nodata=-9999.0)
    info = describe_raster("src", str(tmp_path / "t" / "*.tif"), tmp_path)
    values, _ = read_mosaic(info, (WEST + 0.001, NORTH - 0.039, WEST + 0.079, NORTH - 0.001))
    inner = values[1:-1, 1:-1]
    expected = data.astype("float64")
    expected[:, 1] = np.nan
    expected[:, 6] = np.nan
    np.testing.assert_array_equal(inner, expected)


def test_wide_integers_are_not_rounded_through_float32(tmp_path):
    data = np.array([[16_777_217, -2_147_483_647], [2_147_483_647, 1]], dtype="int32")
    path = write_raster(tmp_path / "r.tif", data, west=WEST, north=NORTH, res=RES)
    info = describe_raster("src", str(path), tmp_path)
    values, _ = read_mosaic(info, (WEST + 0.001, NORTH - 0.019, WEST + 0.019, NORTH - 0.001))
    assert values[1:-1, 1:-1].tolist() == data.astype("float64").tolist()


# --- refusals -------------------------------------------------------------------------------


def _write_raw(path: Path, data: np.ndarray, transform: Affine, crs: str | None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=data.dtype, crs=crs, transform=transform) as ds:
        ds.write(data, 1)
    return path


def test_raster_without_crs_is_refused(tmp_path):
    path = _write_raw(tmp_path / "nocrs.tif", _whole(), Affine(RES, 0, WEST, 0, -RES, NORTH), None)
    with pytest.raises(SourceError, match="no coordinate reference system") as exc:
        describe_raster("src", str(path), tmp_path)
    _one_line_naming(exc, "nocrs.tif")


@pytest.mark.parametrize("transform", [
    Affine(RES, 0.001, WEST, 0.001, -RES, NORTH),  # rotated
    Affine(RES, 0, WEST, 0, RES, NORTH - 0.4),      # south-up
])
def test_rotated_or_south_up_raster_is_refused(tmp_path, transform):
    path = _write_raw(tmp_path / "turned.tif", _whole(), transform, "EPSG:4326")
    with pytest.raises(SourceError, match="rotated or not north-up") as exc:
        describe_raster("src", str(path), tmp_path)
    _one_line_naming(exc, "turned.tif")


def test_tiles_with_different_pixel_sizes_are_refused(tmp_path):
    write_raster(tmp_path / "t" / "a.tif", _whole(), west=WEST, north=NORTH, res=RES)
    write_raster(tmp_path / "t" / "b.tif", _whole(), west=WEST + 0.6, north=NORTH, res=RES / 2)
    with pytest.raises(SourceError, match="pixel size") as exc:
        describe_raster("src", str(tmp_path / "t" / "*.tif"), tmp_path)
    _one_line_naming(exc, "b.tif")


@pytest.mark.parametrize("shift", [0.3, 0.5, 0.002])  # fractions of a pixel
def test_tiles_on_misaligned_grids_are_refused(tmp_path, shift):
    write_raster(tmp_path / "t" / "a.tif", _whole(), west=WEST, north=NORTH, res=RES)
    write_raster(tmp_path / "t" / "b.tif", _whole(), west=WEST + 0.6 + shift * RES,
                 north=NORTH, res=RES)
    with pytest.raises(SourceError, match="not aligned") as exc:
        describe_raster("src", str(tmp_path / "t" / "*.tif"), tmp_path)
    _one_line_naming(exc, "b.tif")


def test_tiles_in_different_crs_or_dtype_are_refused(tmp_path):
    write_raster(tmp_path / "c" / "a.tif", _whole(), west=WEST, north=NORTH, res=RES)
    write_raster(tmp_path / "c" / "b.tif", _whole(), west=WEST + 0.6, north=NORTH, res=RES,
                 crs="EPSG:4269")
    with pytest.raises(SourceError, match="CRS") as exc:
        describe_raster("src", str(tmp_path / "c" / "*.tif"), tmp_path)
    _one_line_naming(exc, "b.tif")

    write_raster(tmp_path / "d" / "a.tif", _whole(), west=WEST, north=NORTH, res=RES)
    write_raster(tmp_path / "d" / "b.tif", _whole().astype("int16"), west=WEST + 0.6,
                 north=NORTH, res=RES)
    with pytest.raises(SourceError, match="int16") as exc:
        describe_raster("src", str(tmp_path / "d" / "*.tif"), tmp_path)
    _one_line_naming(exc, "b.tif")


def test_garbage_file_missing_file_and_empty_glob_are_source_errors(tmp_path):
    bad = tmp_path / "garbage.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    with pytest.raises(SourceError) as exc:
        describe_raster("src", str(bad), tmp_path)
    _one_line_naming(exc, "garbage.tif")

    with pytest.raises(SourceError) as exc:
        describe_raster("src", str(tmp_path / "absent.tif"), tmp_path)
    _one_line_naming(exc, "absent.tif")

    with pytest.raises(SourceError) as exc:
        describe_raster("src", str(tmp_path / "none" / "*.tif"), tmp_path)
    _one_line_naming(exc, "none/*.tif")


def test_band_beyond_the_file_is_refused(tmp_path):
    path = write_raster(tmp_path / "r.tif", _whole(), west=WEST, north=NORTH, res=RES)
    with pytest.raises(SourceError, match="band 2") as exc:
        describe_raster("src", str(path), tmp_path, band=2)
    _one_line_naming(exc, "r.tif")


def test_truncated_file_opens_but_reading_it_is_a_source_error(tmp_path):
    data = (np.random.default_rng(1).random((512, 512)) * 100).astype("float32")
    path = write_raster(tmp_path / "cut.tif", data, west=WEST, north=NORTH, res=0.001)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 3)
    info = describe_raster("src", str(path), tmp_path)  # the header is intact
    # The last 256x256 block lies past the cut.
    with pytest.raises(SourceError) as exc:
        read_mosaic(info, (WEST + 0.4, NORTH - 0.5, WEST + 0.5, NORTH - 0.4))
    _one_line_naming(exc, "cut.tif")
    assert math.isclose(info.xres, 0.001)


# --- bands ----------------------------------------------------------------------------------


def _two_band_vrt(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A VRT over a two-band GeoTIFF whose bands declare different nodata values."""
    bands = np.stack([np.full((10, 12), 1.0, "float32"), np.full((10, 12), 2.0, "float32")])
    bands[0, 0, :] = -9999  # band 1's nodata
    bands[1, 1, :] = -5     # band 2's nodata
    bands[1, 2, :] = -9999  # an ordinary value in band 2
    with rasterio.open(tmp_path / "two.tif", "w", driver="GTiff", width=12, height=10, count=2,
                       dtype="float32", crs="EPSG:4326",
                       transform=Affine(RES, 0, WEST, 0, -RES, NORTH)) as ds:
        ds.write(bands)
    band_xml = "".join(
        f'<VRTRasterBand dataType="Float32" band="{b}"><NoDataValue>{nd}</NoDataValue>'
        f'<SimpleSource><SourceFilename relativeToVRT="1">two.tif</SourceFilename>'
        f'<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>'
        for b, nd in ((1, -9999), (2, -5)))
    vrt = tmp_path / "two.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="12" rasterYSize="10"><SRS>EPSG:4326</SRS>'
                   f'<GeoTransform>{WEST},{RES},0,{NORTH},0,{-RES}</GeoTransform>{band_xml}'
                   f'</VRTDataset>')
    return vrt, bands


def test_band_two_is_read(tmp_path):
    vrt, bands = _two_band_vrt(tmp_path)
    info = describe_raster("src", str(vrt), tmp_path, band=2)
    values, _ = read_mosaic(info, (WEST + 0.001, NORTH - 0.099, WEST + 0.119, NORTH - 0.001))
    inner = values[1:-1, 1:-1]
    assert (inner[3:] == 2.0).all() and (inner[0] == 2.0).all()


def test_the_chosen_band_uses_its_own_nodata(tmp_path):
    vrt, bands = _two_band_vrt(tmp_path)
    with rasterio.open(vrt) as ds:
        assert ds.nodatavals == (-9999.0, -5.0)
        expected = ds.read(2, masked=True).astype("float64").filled(np.nan)
    info = describe_raster("src", str(vrt), tmp_path, band=2)
    values, _ = read_mosaic(info, (WEST + 0.001, NORTH - 0.099, WEST + 0.119, NORTH - 0.001))
    np.testing.assert_array_equal(values[1:-1, 1:-1], expected)
    assert np.isnan(expected[1]).all() and (expected[2] == -9999).all()


def test_overlapping_tiles_never_let_nodata_hide_a_valid_pixel(tmp_path):
    # Two tiles overlap by 10 columns; in the overlap the west tile is valid and the east
    # tile (read last, by name) is nodata there: the valid pixels must survive.
    west = np.full((20, 30), 1.0, dtype="float32")
    east = np.full((20, 30), 2.0, dtype="float32")
    east[:, :10] = -1
    write_raster(tmp_path / "t" / "a.tif", west, west=WEST, north=NORTH, res=0.01, nodata=-1)
    write_raster(tmp_path / "t" / "b.tif", east, west=WEST + 0.2, north=NORTH, res=0.01,
                 nodata=-1)
    info = describe_raster("src", str(tmp_path / "t" / "*.tif"), tmp_path)
    values, _ = read_mosaic(info, (WEST + 0.005, NORTH - 0.195, WEST + 0.495, NORTH - 0.005))
    inner = values[1:-1, 1:-1]  # drop the one-pixel pad
    assert inner.shape == (20, 50)
    assert (inner[:, :30] == 1.0).all()  # the west tile, including the overlap
    assert (inner[:, 30:] == 2.0).all()
