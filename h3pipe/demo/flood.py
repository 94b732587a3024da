"""Stand-in data for the flood examples: ``python -m h3pipe.demo.flood --out DIR``.

Writes, for a Rwanda-sized area, three files shaped like the real ones (nothing here is
real data):

- ``flood_depth_100y.tif``: a 1-in-100-year flood depth in metres on a 3 arcsecond grid,
  deep along a few meandering rivers and their floodplains, 0 elsewhere, nodata over a
  lake in the west (as hazard rasters mask permanent water);
- ``population.tif``: people per 3 arcsecond pixel (WorldPop-like), a rural background
  with towns;
- ``buildings.parquet``: GeoParquet 1.1 footprints (squares of 8 to 20 m) placed where
  people live, with ``building_id``, ``use`` and ``floors``; sorted in space, in row
  groups of 16,384, with a ``bbox`` covering column, as national files are best written
  (a run then reads only the row groups near each batch).

The same seed gives the same files. Existing files are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from h3pipe import grid

DEFAULT_BBOX = (28.86, -2.84, 30.90, -1.05)  # Rwanda
PIXEL = 1 / 1200  # 3 arcseconds
TOWNS = [(30.06, -1.95, 0.06, 60.0), (29.74, -2.60, 0.03, 25.0), (29.63, -1.50, 0.03, 25.0),
         (29.26, -1.68, 0.025, 20.0), (30.44, -2.07, 0.02, 15.0), (29.35, -2.48, 0.02, 15.0)]
FILES = ("flood_depth_100y.tif", "population.tif", "buildings.parquet")


def _grid(bbox: tuple[float, float, float, float], pixel: float = PIXEL
          ) -> tuple[np.ndarray, np.ndarray]:
    minx, miny, maxx, maxy = bbox
    width = int(round((maxx - minx) / pixel))
    height = int(round((maxy - miny) / pixel))
    xs = minx + (np.arange(width) + 0.5) * pixel
    ys = maxy - (np.arange(height) + 0.5) * pixel
    return xs, ys


def flood_depth(bbox: tuple[float, float, float, float], seed: int,
                pixel: float = PIXEL) -> np.ndarray:
    """Depth at 1-in-100 years on a grid of ``pixel`` degrees over ``bbox``."""
    xs, ys = _grid(bbox, pixel)
    rng = np.random.default_rng(seed)
    x: np.ndarray
    y: np.ndarray
    x, y = np.meshgrid(xs, ys)  # its stubs say Any, and np.clip(Any) then types as a scalar
    depth = np.zeros(x.shape, dtype=np.float32)
    # The rivers and the lake are placed on Rwanda's box whatever ``bbox`` is, so a smaller
    # area shows the same landscape.
    minx, miny, maxx, maxy = DEFAULT_BBOX
    for k in range(5):
        # East-west rivers meandering across, and their floodplains.
        y0 = miny + (k + 0.5) * (maxy - miny) / 5 + rng.uniform(-0.05, 0.05)
        course = y0 + 0.04 * np.sin(x * rng.uniform(6, 12) + k) + 0.015 * np.sin(x * 31 + k)
        width = rng.uniform(0.006, 0.015)
        d = np.clip(1 - np.abs(y - course) / width, 0, None) ** 0.7 * rng.uniform(1.5, 4.0)
        depth = np.maximum(depth, d.astype(np.float32))
    noise = rng.normal(0, 0.05, depth.shape).astype(np.float32)
    depth = np.where(depth > 0.02, np.clip(depth + noise, 0, None), 0).astype(np.float32)
    lake = (x < 29.25) & (y > -2.45) & (y < -1.75)  # as Lake Kivu lies
    depth[lake] = -9999.0
    return depth


def population(bbox: tuple[float, float, float, float], seed: int) -> np.ndarray:
    xs, ys = _grid(bbox)
    rng = np.random.default_rng(seed + 1)
    x, y = np.meshgrid(xs, ys)
    people = rng.gamma(2.0, 1.5, x.shape)  # rural background
    for tx, ty, radius, peak in TOWNS:
        people += peak * np.exp(-((x - tx) ** 2 + (y - ty) ** 2) / (2 * radius ** 2))
    return people.astype(np.float32)


def buildings(bbox: tuple[float, float, float, float], people: np.ndarray, seed: int,
              count: int) -> dict[str, np.ndarray]:
    import shapely

    rng = np.random.default_rng(seed + 2)
    xs, ys = _grid(bbox)
    weights = people.ravel().astype(np.float64)
    picks = rng.choice(weights.size, size=count, p=weights / weights.sum())
    row, col = np.divmod(picks, people.shape[1])
    cx = xs[col] + rng.uniform(-0.4, 0.4, count) * PIXEL
    cy = ys[row] + rng.uniform(-0.4, 0.4, count) * PIXEL
    half = rng.uniform(4, 10, count) / 111_320  # metres to degrees, near the equator
    geoms = shapely.box(cx - half, cy - half, cx + half, cy + half)
    return {"building_id": np.array([f"B{i:07d}" for i in range(count)]),
            "use": np.where(rng.random(count) < 0.9, "residential", "commercial"),
            "floors": rng.integers(1, 4, count),
            "geometry": shapely.to_wkb(geoms)}


def _write_raster(path: Path, data: np.ndarray, bbox: tuple[float, float, float, float],
                  nodata: float | None) -> None:
    import rasterio
    from rasterio.transform import from_origin

    tmp = path.with_name(path.name + ".tmp")
    with rasterio.open(tmp, "w", driver="COG", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=data.dtype, crs="EPSG:4326", nodata=nodata,
                       transform=from_origin(bbox[0], bbox[3], PIXEL, PIXEL),
                       compress="deflate") as ds:
        ds.write(data, 1)
    tmp.replace(path)


def generate(out: Path, bbox: tuple[float, float, float, float] = DEFAULT_BBOX, *,
             seed: int = 0, count: int = 150_000, overwrite: bool = False) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f for f in FILES]
    if not overwrite and all(p.exists() for p in paths):
        return paths
    _write_raster(paths[0], flood_depth(bbox, seed), bbox, -9999.0)
    people = population(bbox, seed)
    _write_raster(paths[1], people, bbox, None)
    table = _covered(pa.table(buildings(bbox, people, seed, count)))
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"],
                                    "bbox": list(bbox), "covering": {"bbox": {
                                        s: ["bbox", s] for s in ("xmin", "ymin", "xmax",
                                                                 "ymax")}}}}}
    tmp = paths[2].with_name(paths[2].name + ".tmp")
    pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), tmp,
                   compression="zstd", row_group_size=16_384)
    tmp.replace(paths[2])
    return paths


def _covered(table: Any) -> Any:
    """The footprints with their ``bbox`` column, in the order of their res-9 cell."""
    import pyarrow as pa
    import shapely

    b = shapely.bounds(shapely.from_wkb(table.column("geometry").to_numpy(
        zero_copy_only=False)))
    order = np.argsort(grid.cells_at((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, 9),
                       kind="stable")
    box = pa.StructArray.from_arrays([pa.array(b[:, i]) for i in range(4)],
                                     ["xmin", "ymin", "xmax", "ymax"])
    return table.append_column("bbox", box).take(pa.array(order))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m h3pipe.demo.flood",
                                     description="Stand-in flood, population and building "
                                     "data for the flood example pipelines.")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument("--buildings", type=int, default=150_000, help="how many footprints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        paths = generate(args.out, seed=args.seed, count=args.buildings,
                         overwrite=args.overwrite)
    except (OSError, ValueError) as exc:
        print(f"python -m h3pipe.demo.flood: error: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
