"""``make bench-sphere``: scopes on the sphere (issue 25), against their targets.

Each in its own process and measured as ``scale.py`` measures (wall, CPU, peak RSS of the
process tree):

* the cell listing alone (``scale.py list-cells``) of the whole world at resolutions 6
  and 8, and of countries across the antimeridian and round a pole at resolution 8;
* ``h3pipe run`` of the whole world at resolution 4 over a global quarter-degree raster
  made here (1440 x 720, nodata stripes, one of them on ±180), exported and checked cell by
  cell against exactextract on polygons cut at ±180 and closed over the poles by
  ``tests/zonal_reference.cell_on_plane`` (count, sum, mean, min, max, stdev; 1e-6
  relative).

Targets: the world at resolution 6 (14,117,882 cells) listed in <= 10 s and <= 1 GB; every
cell of the world run equal to exactextract. Writes ``benchmarks/results/sphere.json`` and
``sphere.md``; exits 1 if a target is missed.

    python benchmarks/sphere.py [--run-res 4] [--rss-limit-mb 6144] [--time-limit-s 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import scale  # noqa: E402
from bench import machine  # noqa: E402

WORK = scale.WORK.parent.parent / "sphere" / "work"
STATS = ["count", "sum", "mean", "min", "max", "stdev"]
LISTINGS = [("world", 6), ("world", 8), ("USA", 8), ("RUS", 8), ("FJI", 9), ("ATA", 7)]
WORLD6_S, WORLD6_MB = 10.0, 1000.0


def world_raster(path: Path) -> Path:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(25)
    data = rng.integers(0, 1000, size=(720, 1440)).astype(np.float32)
    data[300:310, :] = -9999
    data[:, 0:3] = np.where(rng.random((720, 3)) < 0.5, -9999, data[:, 0:3])
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=1440, height=720, count=1,
                       dtype="float32", crs="EPSG:4326", nodata=-9999.0, tiled=True,
                       transform=from_origin(-180, 90, 0.25, 0.25)) as ds:
        ds.write(data, 1)
    return path


def listing(scope: str, res: int, limit: scale.Ceiling) -> dict[str, Any]:
    m = scale.measure([sys.executable, str(HERE / "scale.py"), "list-cells", scope, str(res)],
                      limit)
    row = {"scope": scope, "res": res, "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"],
           "error": m.get("error")}
    if not m.get("error"):
        row |= json.loads(m["stdout"].strip().splitlines()[-1])
    scale.say(f"  list {scope} res {res}: {row.get('cells', '?')} cells, "
              f"{row.get('seconds', float('nan')):.1f} s listing, {m['wall_s']:.1f} s wall, "
              f"{m['peak_rss_mb']:.0f} MB" + (f" FAILED {row['error']}" if row["error"] else ""))
    return row


def world_run(res: int, limit: scale.Ceiling) -> dict[str, Any]:
    """The world at ``res`` through the CLI, then every cell against exactextract."""
    import pyarrow.parquet as pq
    import rasterio
    import shapely

    from tests.zonal_reference import cell_on_plane, reference

    tif = world_raster(WORK / "world.tif")
    proj = WORK / "project"
    (proj / "sources").mkdir(parents=True)
    (proj / "pipelines").mkdir()
    (proj / "sources" / "w.yaml").write_text(f"id: w\nkind: raster\npath: '{tif}'\n"
                                             "theme: terrain\n")
    (proj / "pipelines" / "p.yaml").write_text(
        "id: p\noutput: {dataset: ds, theme: terrain}\n"
        f"steps:\n  - id: stats\n    operation: zonal_stats\n    source: w\n"
        f"    params: {{stats: [{', '.join(STATS)}]}}\n")
    cli = [str(scale.BIN / "h3pipe"), "--project", str(proj)]
    m = scale.measure([*cli, "run", "p", "--bbox", "world", "-r", str(res), "--workers", "2"],
                      limit)
    row: dict[str, Any] = {"res": res, "wall_s": m["wall_s"], "cpu_s": m["cpu_s"],
                           "peak_rss_mb": m["peak_rss_mb"], "error": m.get("error")}
    if m.get("error"):
        return row
    out = WORK / "world.parquet"
    scale.measure([*cli, "export", "ds", "-o", str(out)], limit)
    got = {r["h3_index"]: r for r in pq.read_table(out).to_pylist()}
    t0 = time.perf_counter()
    features = [{"type": "Feature", "properties": {"cell": c},
                 "geometry": json.loads(shapely.to_geojson(cell_on_plane(c)))}
                for c in got]
    with rasterio.open(tif) as ds:
        expected = reference(ds, got, STATS, features=features)
    row["reference_s"] = round(time.perf_counter() - t0, 1)
    row["cells"] = len(got)
    row |= agreement(got, expected)
    scale.say(f"  world run res {res}: {len(got)} cells in {m['wall_s']:.1f} s, "
              f"{m['peak_rss_mb']:.0f} MB; vs exactextract: "
              f"{'ok' if row['ok'] else 'DIFFERS'} (max relative {row['max_rel']:.1e})")
    return row


def agreement(got: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]
              ) -> dict[str, Any]:
    worst, bad = 0.0, 0
    for cell, exp in expected.items():
        for s in STATS:
            a, e = got[cell][s], exp[s]
            if (a is None) != (e is None):
                bad += 1
            elif e is not None and e != a:
                rel = abs(a - e) / max(abs(e), 1e-9)
                worst = max(worst, rel)
                bad += rel > 1e-6 and abs(a - e) > 1e-9
    return {"ok": bad == 0 and set(got) == set(expected), "mismatches": bad,
            "max_rel": worst}


def markdown(results: dict[str, Any]) -> str:
    mc = results["machine"]
    lines = [f"# Scopes on the sphere ({results['date']})", "",
             f"Machine: {mc['cpu']}, {mc['cores']} cores, {mc['memory_gib']} GiB, Python "
             f"{mc['python']}, GDAL {mc['gdal']}; load average before {results['load']}.", "",
             "| scope | res | cells | listing s | wall s | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for r in results["listings"]:
        lines.append(f"| {r['scope']} | {r['res']} | {r.get('cells', '-'):,} | "
                     f"{r.get('seconds', float('nan')):.1f} | {r['wall_s']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    w = results["world_run"]
    lines += ["", f"World run at res {w['res']}: {w.get('cells', '-'):,} cells, "
              f"{w['wall_s']:.1f} s wall, {w['peak_rss_mb']:.0f} MB summed RSS; every cell "
              f"against exactextract: {'ok' if w.get('ok') else 'DIFFERS'} (largest relative "
              f"difference {w.get('max_rel', float('nan')):.1e}).", "", "Targets:", ""]
    lines += [f"- {t['target']}: {'met' if t['met'] else 'MISSED'} ({t['got']})"
              for t in results["targets"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-res", type=int, default=4)
    ap.add_argument("--rss-limit-mb", type=float, default=6144)
    ap.add_argument("--time-limit-s", type=float, default=1800)
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    scale.WORK = WORK  # where measure() keeps its output files
    limit = scale.Ceiling(args.rss_limit_mb, args.time_limit_s)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                               "load": [round(v, 2) for v in os.getloadavg()]}
    results["listings"] = [listing(s, r, limit) for s, r in LISTINGS]
    results["world_run"] = world_run(args.run_res, limit)
    w6 = results["listings"][0]
    results["targets"] = [
        {"target": f"the world at res 6 listed in <= {WORLD6_S:g} s and <= {WORLD6_MB:g} MB",
         "met": not w6["error"] and w6["seconds"] <= WORLD6_S
         and w6["peak_rss_mb"] <= WORLD6_MB,
         "got": f"{w6.get('seconds', float('nan')):.1f} s, {w6['peak_rss_mb']:.0f} MB"},
        {"target": f"the world at res {args.run_res}: every cell equals exactextract",
         "met": bool(results["world_run"].get("ok")),
         "got": f"{results['world_run'].get('mismatches', '?')} mismatches"}]
    (scale.RESULTS / "sphere.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (scale.RESULTS / "sphere.md").write_text(md)
    scale.say("\n" + md)
    return 0 if all(t["met"] for t in results["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
