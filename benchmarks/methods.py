"""The peers h3pipe is measured against, each run as its own process by ``bench.py``:

    python benchmarks/methods.py floor        --tiles T --out O
    python benchmarks/methods.py exactextract --tiles T --cells C --out O --strategy S --procs P
    python benchmarks/methods.py bincount     --tiles T --cells C --out O
    python benchmarks/methods.py rasterstats  --tiles T --cells C --out O --sample N

``--tiles`` is a file listing the GeoTIFF tiles (one per line), ``--cells`` a .npy of uint64
H3 cells. Each method writes what it computed (Parquet) or measured (JSON) to ``--out``.
None of this imports h3pipe: it is the independent side of the comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

NODATA = -32767.0  # the tiles' voids; NaN (the lake) is never data either
STATS = ["count", "sum", "mean", "min", "max", "stdev"]


def write_vrt(tiles: list[str], path: Path, nodata: float = NODATA) -> Path:
    """A VRT mosaic of tiles that share one grid, written by hand (no GDAL utilities)."""
    import rasterio

    metas = []
    for t in tiles:
        with rasterio.open(t) as ds:
            metas.append((t, ds.transform, ds.width, ds.height, ds.crs.to_wkt()))
    res_x, res_y = metas[0][1].a, -metas[0][1].e
    west = min(m[1].c for m in metas)
    north = max(m[1].f for m in metas)
    east = max(m[1].c + m[2] * res_x for m in metas)
    south = min(m[1].f - m[3] * res_y for m in metas)
    width, height = round((east - west) / res_x), round((north - south) / res_y)
    sources = []
    for t, tr, w, h, _ in metas:
        xoff, yoff = round((tr.c - west) / res_x), round((north - tr.f) / res_y)
        sources.append(
            f'    <SimpleSource><SourceFilename relativeToVRT="0">{t}</SourceFilename>'
            f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{xoff}" yOff="{yoff}" xSize="{w}" ySize="{h}"/></SimpleSource>')
    srs = metas[0][4].replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
        f"  <SRS>{srs}</SRS>\n"
        f"  <GeoTransform>{west!r}, {res_x!r}, 0.0, {north!r}, 0.0, {-res_y!r}</GeoTransform>\n"
        f'  <VRTRasterBand dataType="Float32" band="1">\n'
        f"    <NoDataValue>{nodata!r}</NoDataValue>\n" + "\n".join(sources) + "\n"
        "  </VRTRasterBand>\n</VRTDataset>\n")
    return path


def _features(cells: np.ndarray) -> list[dict]:
    import h3

    feats = []
    for c in cells.tolist():
        cell = h3.int_to_str(c)
        ring = [[lng, lat] for lat, lng in h3.cell_to_boundary(cell)]
        ring.append(ring[0])
        feats.append({"type": "Feature", "properties": {"cell": cell},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return feats


def _write(rows: dict[str, list], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: pa.array(v) for k, v in rows.items()}), out)


# -- read and decode every pixel once -----------------------------------------------------

def floor(tiles: list[str], out: Path) -> None:
    import rasterio

    pixels = 0
    checksum = 0.0
    for t in tiles:
        with rasterio.open(t) as ds:
            a = ds.read(1)
            pixels += a.size
            checksum += float(np.nansum(a[::97, ::89]))  # touch the pixels
    out.write_text(json.dumps({"pixels": pixels, "checksum": checksum}))


# -- exactextract, directly ---------------------------------------------------------------

def _ee_chunk(args: tuple[str, np.ndarray, str]) -> dict[str, list]:
    import rasterio
    from exactextract import exact_extract

    vrt, cells, strategy = args
    rows: dict[str, list] = {"cell": []} | {s: [] for s in STATS}
    with rasterio.open(vrt) as ds:
        for f in exact_extract(ds, _features(cells), STATS, include_cols=["cell"],
                               strategy=strategy):
            p = f["properties"]
            for k in rows:
                rows[k].append(p[k])
    return rows


def exactextract(tiles: list[str], cells: np.ndarray, out: Path, strategy: str,
                 procs: int, workdir: Path) -> None:
    vrt = str(write_vrt(tiles, workdir / "mosaic.vrt"))
    order = np.sort(cells)  # H3 order keeps each chunk spatially compact
    chunks = [(vrt, c, strategy) for c in np.array_split(order, procs)]
    if procs == 1:
        parts = [_ee_chunk(chunks[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            parts = pool.map(_ee_chunk, chunks)
    rows = {k: [v for p in parts for v in p[k]] for k in parts[0]}
    _write(rows, out)


# -- rasterize by pixel centre, then numpy bincount ---------------------------------------

def bincount(tiles: list[str], cells: np.ndarray, out: Path, workdir: Path) -> None:
    import rasterio
    from rasterio.features import rasterize

    vrt = write_vrt(tiles, workdir / "mosaic.vrt")
    with rasterio.open(vrt) as ds:
        values = ds.read(1)
        transform, shape = ds.transform, (ds.height, ds.width)
    feats = _features(cells)
    labels = rasterize(((f["geometry"], i + 1) for i, f in enumerate(feats)), out_shape=shape,
                       transform=transform, fill=0, dtype="int32")
    valid = (labels > 0) & ~np.isnan(values) & (values != NODATA)
    lab = labels[valid]
    val = values[valid].astype(np.float64)
    n = len(feats) + 1
    count = np.bincount(lab, minlength=n)
    total = np.bincount(lab, weights=val, minlength=n)
    squares = np.bincount(lab, weights=val * val, minlength=n)
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    np.minimum.at(lo, lab, val)
    np.maximum.at(hi, lab, val)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0))
    import h3

    _write({"cell": [h3.int_to_str(c) for c in cells.tolist()],
            "count": count[1:].astype(float).tolist(),
            "sum": total[1:].tolist(), "mean": mean[1:].tolist(), "min": lo[1:].tolist(),
            "max": hi[1:].tolist(), "stdev": std[1:].tolist()}, out)


# -- rasterstats on the predecessor's 500-cell batches, a sample ---------------------------

def rasterstats(tiles: list[str], cells: np.ndarray, out: Path, sample: int,
                workdir: Path) -> None:
    from rasterstats import zonal_stats

    vrt = str(write_vrt(tiles, workdir / "mosaic.vrt"))
    order = np.sort(cells)
    # Batches spread over the whole scope, as the predecessor's fan-out would see them.
    starts = np.linspace(0, max(len(order) - 500, 0), sample).astype(int)
    done = 0
    t0 = time.perf_counter()
    for s in starts:
        feats = _features(order[s:s + 500])
        zonal_stats([f["geometry"] for f in feats], vrt, stats="count sum mean min max std",
                    nodata=NODATA)
        done += len(feats)
    seconds = time.perf_counter() - t0
    out.write_text(json.dumps({"sampled_cells": done, "seconds": seconds,
                               "extrapolated_seconds": seconds * len(cells) / max(done, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=["floor", "exactextract", "bincount", "rasterstats"])
    ap.add_argument("--tiles", type=Path, required=True)
    ap.add_argument("--cells", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--strategy", default="feature-sequential")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--sample", type=int, default=2)
    a = ap.parse_args()
    tiles = [t for t in a.tiles.read_text().splitlines() if t]
    cells = np.load(a.cells) if a.cells else np.zeros(0, dtype=np.uint64)
    work = a.out.parent
    if a.method == "floor":
        floor(tiles, a.out)
    elif a.method == "exactextract":
        exactextract(tiles, cells, a.out, a.strategy, a.procs, work)
    elif a.method == "bincount":
        bincount(tiles, cells, a.out, work)
    else:
        rasterstats(tiles, cells, a.out, a.sample, work)


if __name__ == "__main__":
    main()
