"""``building_flood_exposure`` as a user might write it with DuckDB, streaming.

    python benchmarks/baselines/stream_duckdb.py BUILDINGS.parquet FLOOD.tif OUT.parquet
                                                 [--resolution 7] [--batch 250000]

DuckDB's spatial extension is downloaded on first use, and this machine is offline, so
the geometry work is done in Python per batch, as in ``stream_pyarrow.py``: DuckDB scans
the GeoParquet (``to_arrow_reader``, 250 k rows), each batch's centroids (shapely),
flood pixel (the raster read whole once) and H3 cell (h3ronpy) are computed, and DuckDB
groups the batch by cell into partial sums; a last GROUP BY merges the partials. With the
extension at hand the centroid would be ``ST_Centroid`` in the scan, and the raster
lookup would still need Python. One thread, for a one-core script.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stream_pyarrow import arguments, batch_cells, flood_raster  # noqa: E402

PARTIAL = """INSERT INTO partials SELECT cell, count(*), count(*) FILTER (WHERE depth > 0),
             sum(depth) FILTER (WHERE depth > 0) FROM batch GROUP BY cell"""


def main() -> int:
    args = arguments(__doc__ or "")
    import duckdb
    import numpy as np
    import pyarrow as pa

    depth, transform = flood_raster(args.flood)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    reader = con.sql(f"SELECT geometry FROM read_parquet('{args.buildings}')"
                     ).to_arrow_reader(args.batch)
    scan = duckdb.connect()  # the reader's connection stays busy while it streams
    scan.execute("SET threads = 1")
    scan.execute("CREATE TABLE partials (cell UBIGINT, n BIGINT, f BIGINT, s DOUBLE)")
    for rb in reader:
        cells, values = batch_cells(rb, depth, transform, args.resolution)
        # Nodata as NULL, not NaN: DuckDB orders NaN above every number (NaN > 0).
        depth_col = pa.array(values, mask=np.isnan(values))
        scan.register("batch", pa.table({"cell": cells, "depth": depth_col}))
        scan.execute(PARTIAL)
        scan.unregister("batch")
    write(scan, args.out)
    return 0


def write(con: Any, out: Path) -> None:
    """Cells as text like h3pipe's (DuckDB's h3 extension is not at hand either)."""
    import h3
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = con.sql("SELECT cell, sum(n)::BIGINT AS n, sum(f)::BIGINT AS f, sum(s) AS s "
                    "FROM partials GROUP BY cell ORDER BY cell").to_arrow_table()
    n = t["n"].to_numpy()
    f = t["f"].to_numpy()
    s = t["s"].to_numpy(zero_copy_only=False)
    mean = pa.array([s[i] / f[i] if f[i] else None for i in range(len(f))], pa.float64())
    pq.write_table(pa.table({
        "h3_index": [h3.int_to_str(int(c)) for c in t["cell"].to_numpy()],
        "buildings": n, "flooded_buildings": f, "share_flooded": f / n,
        "mean_depth_when_flooded_m": mean}), out)


if __name__ == "__main__":
    raise SystemExit(main())
