"""A FATHOM-like flood hazard stand-in: ``python -m h3pipe.demo.fathom --out DIR``.

FATHOM's flood maps for a country come as scenarios: 3 flood types (fluvial defended,
fluvial undefended, pluvial defended) x (the 2020 baseline, and 2030, 2050 and 2080 under
4 SSPs) = 39 scenarios, each stacked as one file of 8 bands (return periods 1-in-5 to
1-in-1000) per 1-degree tile. This writes exactly that shape for Rwanda's 6 tiles,
``DIR/<flood_type>/<scenario>/<tile>.tif``, as COGs of 8 float32 bands in metres with
nodata over a lake: 234 files at 30 arcseconds, small enough to write in seconds. Nothing
here is real data.

Depth grows with the return period (deeper, and wider floodplains), with the year and
with the SSP's warming; defences hold back the frequent floods; pluvial floods pond in
shallow hollows everywhere rather than along the rivers. The same seed gives the same
files; existing files are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from h3pipe.demo.flood import DEFAULT_BBOX, flood_depth

FLOOD_TYPES = ("fluvial_defended", "fluvial_undefended", "pluvial_defended")
YEARS = ("2020", "2030", "2050", "2080")
SSPS = ("ssp126", "ssp245", "ssp370", "ssp585")
RETURN_PERIODS = (5, 10, 20, 50, 100, 200, 500, 1000)
PIXEL = 1 / 120  # 30 arcseconds
NODATA = -9999.0
_WARMING = {"ssp126": 0.08, "ssp245": 0.15, "ssp370": 0.22, "ssp585": 0.3}


def scenarios() -> list[tuple[str, str, str | None]]:
    """(flood type, year, SSP or None) of every scenario: the baseline has no SSP."""
    out: list[tuple[str, str, str | None]] = []
    for kind in FLOOD_TYPES:
        out.append((kind, YEARS[0], None))
        out += [(kind, year, ssp) for year in YEARS[1:] for ssp in SSPS]
    return out


def scenario_id(kind: str, year: str, ssp: str | None) -> str:
    """The canonical id h3pipe derives from the dimensions (values joined by '-')."""
    return "-".join(v for v in (kind, year, ssp) if v)


def tiles(bbox: tuple[float, float, float, float]) -> list[tuple[int, int]]:
    """South-west corners (lon, lat) of the 1-degree tiles ``bbox`` touches."""
    return [(x, y) for y in range(math.floor(bbox[1]), math.ceil(bbox[3]))
            for x in range(math.floor(bbox[0]), math.ceil(bbox[2]))]


def tile_name(x: int, y: int) -> str:
    return f"{'N' if y >= 0 else 'S'}{abs(y):02d}{'E' if x >= 0 else 'W'}{abs(x):03d}"


def _fields(x: int, y: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """River depth (metres at 1-in-100, NaN over the lake) and pluvial ponding of a tile."""
    box = (float(x), float(y), float(x + 1), float(y + 1))
    river = flood_depth(box, seed, pixel=PIXEL).astype(np.float64)
    lake = river == NODATA
    n = river.shape[0]
    rng = np.random.default_rng(seed + 1000 * (x + 180) + (y + 90))
    coarse = np.clip(rng.normal(0, 1, (n // 8, n // 8)), 0, None)
    ponds = np.asarray(np.kron(coarse, np.ones((8, 8)))[:n, :n] * 0.4, dtype=np.float64)
    river[lake] = np.nan
    ponds[lake] = np.nan
    return river, ponds


def _depths(kind: str, year: str, ssp: str | None, river: np.ndarray,
            ponds: np.ndarray) -> np.ndarray:
    """The 8 return-period bands of one scenario, NaN over the lake."""
    warming = 1 + (int(year) - 2020) / 60 * (_WARMING[ssp] if ssp else 0)
    base = ponds if kind.startswith("pluvial") else river
    bands = []
    for rp in RETURN_PERIODS:
        g = math.log(rp) / math.log(100)  # 1 at 1-in-100
        depth = np.clip(base * g * warming - max(0.0, 1 - g) * 0.3, 0, None)
        if kind == "fluvial_defended" and rp < 100:
            depth = np.where(depth < 1.0, 0, depth)  # defences hold the frequent floods
        bands.append(depth)
    return np.stack(bands).astype(np.float32)


def _write(path: Path, data: np.ndarray, x: int, y: int) -> None:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    values = np.where(np.isnan(data), NODATA, data).astype(np.float32)
    with rasterio.open(tmp, "w", driver="COG", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype="float32", crs="EPSG:4326",
                       nodata=NODATA, transform=from_origin(x, y + 1, PIXEL, PIXEL),
                       compress="deflate", blocksize=128) as ds:
        ds.write(values)
        ds.descriptions = tuple(f"rp{rp}" for rp in RETURN_PERIODS)
    tmp.replace(path)


def generate(out: Path, bbox: tuple[float, float, float, float] = DEFAULT_BBOX, *,
             seed: int = 0, overwrite: bool = False) -> list[Path]:
    """Every scenario's tiles over ``bbox``; the paths written (or found)."""
    paths = []
    for x, y in tiles(bbox):
        fields: tuple[np.ndarray, np.ndarray] | None = None
        for kind, year, ssp in scenarios():
            path = out / kind / scenario_id(kind, year, ssp) / f"{tile_name(x, y)}.tif"
            paths.append(path)
            if path.exists() and not overwrite:
                continue
            fields = fields or _fields(x, y, seed)
            _write(path, _depths(kind, year, ssp, *fields), x, y)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m h3pipe.demo.fathom",
                                     description="FATHOM-like flood hazard stand-in: 39 "
                                     "scenarios x 8 return periods on Rwanda's 6 tiles.")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        paths = generate(args.out, seed=args.seed, overwrite=args.overwrite)
    except (OSError, ValueError) as exc:
        print(f"python -m h3pipe.demo.fathom: error: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 2
    print(f"{len(paths)} files ({len(scenarios())} scenarios x {len(paths) // len(scenarios())}"
          f" tiles, {len(RETURN_PERIODS)} bands each) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
