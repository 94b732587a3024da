"""How long ``h3pipe map`` takes to draw many cells: the picture's cost, not the scope's.

    python benchmarks/maps.py [--repeat 3]

Synthetic cells over a 2 x 2 degree box near Rwanda at resolutions 7 to 11 (about 6 k to
15 M cells), each drawn to a 1200 x 900 PNG by :func:`h3pipe.report.maps.draw` in this
process (matplotlib imported beforehand, so every size pays the same import). Seconds are
the median of ``--repeat``, split into the rasterisation (one H3 lookup per pixel and a
binary search among the cells) and the rest (extent, colours, figure, PNG). Written to
``benchmarks/results/maps.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import h3
import numpy as np
import shapely

from h3pipe import grid
from h3pipe.report import maps

RESULTS = Path(__file__).parent / "results" / "maps.json"
BOX = shapely.box(29.0, -3.0, 31.0, -1.0)


def cells_at(resolution: int) -> np.ndarray:
    parents = np.array([h3.str_to_int(c) for c in h3.geo_to_cells(BOX.__geo_interface__, 5)],
                       dtype=np.uint64)
    return grid.children(parents, resolution) if resolution > 5 else parents


def timed(cells: np.ndarray, resolution: int, out: Path) -> dict[str, float]:
    lng, lat = grid.centres(cells)
    data = maps.CellMap(cells, np.sin(lng * 7) * np.cos(lat * 5), np.zeros(len(cells), bool),
                        resolution, "bench", outline=BOX)
    start = time.perf_counter()
    maps.draw(data, maps.Style(label="value"), out)
    total = time.perf_counter() - start
    frame = maps._frame(data, 1200, 900)
    colours, _ = maps.colour_scale(data.values, data.nodata, maps.Style())
    start = time.perf_counter()
    maps._raster(data, frame, colours)
    return {"total_s": total, "raster_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import matplotlib.pyplot  # noqa: F401  (the import is paid once, not by the first size)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in (7, 8, 9, 10, 11):
            cells = cells_at(res)
            runs = [timed(cells, res, Path(tmp) / "m.png") for _ in range(args.repeat)]
            row = {"resolution": res, "cells": int(len(cells)),
                   "seconds": statistics.median(r["total_s"] for r in runs),
                   "raster_seconds": statistics.median(r["raster_s"] for r in runs)}
            rows.append(row)
            print(f"res {res}: {row['cells']:>11,} cells  {row['seconds']:6.2f} s "
                  f"(rasterising {row['raster_seconds']:.2f} s)", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"picture": [1200, 900], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
