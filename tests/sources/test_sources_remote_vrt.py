"""Raster sources read from a VRT and over HTTP give the same numbers as the plain file."""

from __future__ import annotations

import functools
import http.server
import os
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"


@pytest.fixture
def raster(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.normal(1500, 100, (250, 250)).astype("float32")
    data[100:120, 100:140] = -9999
    return write_raster(tmp_path / "src" / "dem.tif", data, west=29.0, north=-1.95, res=0.001,
                        nodata=-9999)


def _vrt(tif, path):
    # A minimal VRT written by hand (no GDAL utilities needed), pointing at the GeoTIFF.
    import rasterio

    with rasterio.open(tif) as ds:
        gt = ds.transform.to_gdal()
        w, h, crs = ds.width, ds.height, ds.crs.to_wkt()
    path.write_text(f"""<VRTDataset rasterXSize="{w}" rasterYSize="{h}">
  <SRS>{crs.replace('"', '&quot;')}</SRS>
  <GeoTransform>{', '.join(repr(v) for v in gt)}</GeoTransform>
  <VRTRasterBand dataType="Float32" band="1">
    <NoDataValue>-9999</NoDataValue>
    <SimpleSource>
      <SourceFilename relativeToVRT="0">{tif}</SourceFilename>
      <SourceBand>1</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>
      <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>
    </SimpleSource>
  </VRTRasterBand>
</VRTDataset>
""")
    return path


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Answers HTTP Range requests with 206, as blob storage does (GDAL needs it)."""

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or not os.path.isfile(path):
            return super().do_GET()
        data = open(path, "rb").read()
        start, _, end = rng.removeprefix("bytes=").partition("-")
        start, end = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[start:end + 1])


@pytest.fixture
def http_root(raster):
    handler = functools.partial(_RangeHandler, directory=str(raster.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _run(tmp_path, cli, name, location):
    proj = write_project(tmp_path / name, sources={"s": raster_source("s", location)},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean", "count", "max"])})
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / f"{name}.parquet"
    assert cli("--project", proj, "export", "ds", "-o", out).exit_code == 0
    return pq.read_table(out).to_pylist()


def test_vrt_and_http_match_the_file(tmp_path, cli, raster, http_root):
    plain = _run(tmp_path, cli, "plain", str(raster))
    assert any(r["count"] for r in plain) and len(plain) > 10
    vrt = _run(tmp_path, cli, "vrt", str(_vrt(raster, tmp_path / "dem.vrt")))
    remote = _run(tmp_path, cli, "http", f"{http_root}/dem.tif")
    assert vrt == plain
    assert remote == plain


def test_unreachable_url_is_a_one_line_error(tmp_path, cli):
    proj = write_project(tmp_path / "p", sources={"s": raster_source(
        "s", "http://127.0.0.1:9/nothing.tif")},
        pipelines={"p": zonal_pipeline("p", "s", ["mean"])})
    r = cli("--project", proj, "run", "p", "--bbox", BBOX)
    # A server that is not there is a failure of the moment, not bad input: exit 1.
    assert r.exit_code == 1
    assert "source 's'" in r.stderr and "sources/s.yaml" in r.stderr
    assert "connection refused from 127.0.0.1:9 after 3 attempts" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_plan_sizes_remote_tiles_with_http_head(tmp_path, cli, raster, http_root):
    import json

    proj = write_project(tmp_path / "p", sources={"s": raster_source("s", f"{http_root}/dem.tif")},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"])})
    r = cli("--project", proj, "plan", "p", "--bbox", BBOX, "--format", "json")
    assert r.exit_code == 0, r.stderr
    [src] = json.loads(r.stdout)["sources"]
    assert src["files"] == 1 and src["bytes_how"] == "HTTP HEAD"
    assert src["bytes"] == os.path.getsize(raster)
