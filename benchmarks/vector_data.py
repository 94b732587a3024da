"""Building footprints where people live, at national scale, for ``benchmarks/vector.py``.

    python benchmarks/vector_data.py --buildings 64M [--seed 0] [--out DIR]

The flood depth and population rasters are the demo's (``h3pipe.demo.flood.generate``,
Rwanda's box, 3 arcseconds). The footprints follow the demo's ``buildings()``: each sits
in a population pixel drawn in proportion to its people, its centre within 0.4 pixel of
the pixel's centre, a square of 8 to 20 m. Unlike the demo they are written as GeoParquet
1.1 with a ``bbox`` covering column, in row groups of 65,536 rows sorted along a Hilbert
curve over the population grid (rows are in the order of their pixel's Hilbert key), so
a reader can prune row groups by their bbox statistics.

Memory stays bounded at any size: the count of buildings per pixel is drawn once (one
multinomial over the 5 M pixels), pixels are visited in Hilbert order, and buildings are
made and written about a million at a time. Rows come out globally sorted without
sorting them. The same seed and size give the same file; a file already there is reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
DATA = HERE / "data" / "vector"
CHUNK = 1 << 20
ROW_GROUP = 1 << 16
HILBERT_ORDER = 12  # a 4096 x 4096 curve covers the 2448 x 2148 population grid
WKB_POLYGON = np.dtype([("order", "u1"), ("type", "<u4"), ("rings", "<u4"),
                        ("points", "<u4"), ("xy", "<f8", (10,))])


def parse_count(text: str) -> int:
    """'64M' -> 64_000_000, '250k' -> 250_000, '1500' -> 1500."""
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * scale)


def label(count: int) -> str:
    """The short name of a size: 1M, 64M, 250k."""
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def rasters(out: Path = DATA, seed: int = 0) -> tuple[Path, Path]:
    """The demo's flood depth and population rasters (made once into ``out/rasters``)."""
    from h3pipe.demo.flood import generate

    # generate() also writes a small buildings.parquet beside them; nothing reads it here.
    depth, people, _ = generate(out / "rasters", seed=seed, count=1000)
    return depth, people


def hilbert(x: np.ndarray, y: np.ndarray, order: int = HILBERT_ORDER) -> np.ndarray:
    """Distance along a Hilbert curve of 2**order cells a side (the classic xy2d)."""
    n = 1 << order
    x, y = x.astype(np.int64), y.astype(np.int64)
    d = np.zeros(x.shape, dtype=np.int64)
    s = n >> 1
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        flip = ~ry & rx
        x = np.where(flip, n - 1 - x, x)
        y = np.where(flip, n - 1 - y, y)
        x, y = np.where(~ry, y, x), np.where(~ry, x, y)
        s >>= 1
    return d


class Placement:
    """Buildings per population pixel, and the pixels in Hilbert order."""

    def __init__(self, population: Path, count: int, seed: int) -> None:
        import rasterio

        with rasterio.open(population) as ds:
            people = ds.read(1).astype(np.float64)
            self.transform = ds.transform
        self.shape = people.shape
        weights = np.clip(people.ravel(), 0, None)
        rng = np.random.default_rng([seed, count, 0])
        self.counts = rng.multinomial(count, weights / weights.sum())
        rows, cols = np.divmod(np.arange(weights.size), self.shape[1])
        order = np.argsort(hilbert(cols, rows), kind="stable")
        self.order = order[self.counts[order] > 0]
        self.total = count

    def chunks(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        """Pixel index of every building, about ``size`` buildings at a time, in order."""
        ends = np.cumsum(self.counts[self.order])
        cuts = np.searchsorted(ends, np.arange(size, self.total, size), side="right")
        for part in np.split(self.order, cuts):
            yield np.repeat(part, self.counts[part])

    def bounds(self) -> tuple[float, float, float, float]:
        """A box that holds every footprint: the outermost pixels with buildings, grown by
        the largest offset and half-size (so it can be written before the rows)."""
        rows, cols = np.divmod(self.order, self.shape[1])
        px = self.transform.a
        reach = 0.4 * px + 10 / 111_320
        x0, y0 = self.transform.c, self.transform.f
        return (x0 + (cols.min() + 0.5) * px - reach, y0 - (rows.max() + 0.5) * px - reach,
                x0 + (cols.max() + 0.5) * px + reach, y0 - (rows.min() + 0.5) * px + reach)


def footprints(place: Placement, pixels: np.ndarray, first: int, rng: np.random.Generator
               ) -> object:
    """The table of the buildings in ``pixels`` (ids from ``first``), as the demo makes
    them: squares of 8 to 20 m within 0.4 pixel of the pixel's centre."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(pixels)
    rows, cols = np.divmod(pixels, place.shape[1])
    px = place.transform.a
    cx = place.transform.c + (cols + 0.5 + rng.uniform(-0.4, 0.4, n)) * px
    cy = place.transform.f - (rows + 0.5 + rng.uniform(-0.4, 0.4, n)) * px
    half = rng.uniform(4, 10, n) / 111_320  # metres to degrees, near the equator
    x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
    ids = pc.cast(pa.array(np.arange(first, first + n)), pa.string())
    uses = pa.array(["residential", "commercial"]).take(
        pa.array((rng.random(n) >= 0.9).astype(np.int8)))
    bbox = pa.StructArray.from_arrays([pa.array(v) for v in (x0, y0, x1, y1)],
                                      names=["xmin", "ymin", "xmax", "ymax"])
    return pa.table({"building_id": pc.binary_join_element_wise(
                         "B", pc.utf8_lpad(ids, 9, "0"), ""),
                     "use": uses, "floors": rng.integers(1, 4, n),
                     "geometry": boxes_wkb(x0, y0, x1, y1), "bbox": bbox})


def boxes_wkb(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> object:
    """WKB polygons of the boxes, byte for byte what ``shapely.to_wkb(shapely.box(...))``
    writes, built as one buffer (64 M shapely objects would dominate the generator)."""
    import pyarrow as pa

    n = len(x0)
    rec = np.empty(n, dtype=WKB_POLYGON)
    rec["order"], rec["type"], rec["rings"], rec["points"] = 1, 3, 1, 5
    # shapely.box's ring: counter-clockwise from the lower right corner.
    rec["xy"] = np.column_stack([x1, y0, x1, y1, x0, y1, x0, y0, x1, y0])
    offsets = np.arange(n + 1, dtype=np.int64) * WKB_POLYGON.itemsize
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets),
                                                         pa.py_buffer(rec.tobytes())]
                                 ).cast(pa.binary())


def geo_metadata(bounds: tuple[float, float, float, float]) -> str:
    """GeoParquet 1.1 ``geo`` metadata with the bbox covering column."""
    covering = {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}
    return json.dumps({"version": "1.1.0", "primary_column": "geometry", "columns": {
        "geometry": {"encoding": "WKB", "geometry_types": ["Polygon"],
                     "bbox": [round(v, 9) for v in bounds], "covering": {"bbox": covering}}}})


def buildings(count: int, seed: int = 0, out: Path = DATA) -> Path:
    """The GeoParquet file of ``count`` footprints (made once; reused when there)."""
    path = out / f"buildings_{label(count)}_seed{seed}.parquet"
    if path.exists():
        return path
    _, population = rasters(out, seed)
    t0 = time.perf_counter()
    place = Placement(population, count, seed)
    _write(place, path, seed)
    print(f"vector data: {count:,} buildings -> {path} ({path.stat().st_size / 2**30:.2f} "
          f"GiB) in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def _write(place: Placement, path: Path, seed: int) -> None:
    """Stream the chunks into row groups of exactly ROW_GROUP rows (the last one less)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    writer = None
    pending = None
    first = 0
    for i, pixels in enumerate(place.chunks()):
        table = footprints(place, pixels, first, np.random.default_rng([seed, place.total,
                                                                        i + 1]))
        first += len(pixels)
        if writer is None:
            schema = table.schema.with_metadata({"geo": geo_metadata(place.bounds())})
            writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        table = table.replace_schema_metadata(writer.schema.metadata)
        pending = table if pending is None else pa.concat_tables([pending, table])
        whole = len(pending) // ROW_GROUP * ROW_GROUP
        if whole:
            writer.write_table(pending.slice(0, whole), row_group_size=ROW_GROUP)
            pending = pending.slice(whole)
    if writer is None:
        raise ValueError("no buildings to write")
    if pending is not None and len(pending):
        writer.write_table(pending, row_group_size=ROW_GROUP)
    writer.close()
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--buildings", default="1M", help="how many footprints: 1M, 64M, 250k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DATA, metavar="DIR")
    args = ap.parse_args()
    t0 = time.perf_counter()
    path = buildings(parse_count(args.buildings), args.seed, args.out)
    print(f"{path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
