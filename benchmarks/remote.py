"""``python benchmarks/remote.py``: h3pipe reading its tiles over HTTP against reading them
from local disk, and against exactextract over ``/vsicurl/`` on the same server.

The six Rwanda stand-in tiles of ``bench.py`` (3600 x 3600 COGs, 512-pixel blocks) are
served by ``tests/tileserver.py`` on 127.0.0.1: first with 50 ms added to every request (a
cloud round trip), then also with the link capped at 100 MB/s. h3pipe reads them through a
static STAC catalog whose assets are the served URLs (as a Planetary Computer source
would); locally it reads the same files as a glob. Runs are interleaved (local, remote,
capped, exactextract, again...) so that the noise of a shared machine falls on all of them
alike, and medians are reported. The server counts requests and bytes; the bytes of the
tiles' blocks that intersect the scope are what a reader cannot avoid.

exactextract reads the same server over ``/vsicurl/`` in both of the configurations
``bench.py`` runs locally with two processes (feature- and raster-sequential), once each
(it is slow and steady over HTTP); the faster is the one compared. The server logs every
range, so bytes sent twice (``duplicate_bytes``) are counted.

Targets (issue 29, item 3): remote <= 1.2 x local, at 50 ms per request and with the link
also capped at 100 MB/s; >= 4 x faster than the best exactextract over /vsicurl/; bytes read
<= 1.1 x the bytes of the blocks in the scope (from each tile's TileOffsets and
TileByteCounts, see :func:`blocks_in_scope`). Every remote run's results must be identical
to the local run's. Writes ``benchmarks/results/remote.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import bench  # noqa: E402  (benchmarks/bench.py: measure, make_tiles, make_project, ...)

from tests.tileserver import TileServer  # noqa: E402

LATENCY = 0.05
BANDWIDTH = 100e6
METHODS = str(HERE / "methods.py")


def blocks_in_scope(tiles: list[str], bbox: tuple[float, ...]) -> dict[str, int]:
    """Bytes (and count) of the tiles' full-resolution blocks that the scope's box touches:
    each block's byte range from the file's own TileOffsets and TileByteCounts (GDAL's
    ``BLOCK_OFFSET_*``/``BLOCK_SIZE_*`` in the TIFF domain), ranges summed once. No h3pipe
    code is used: this is what any reader of the scope must fetch."""
    import math

    import rasterio

    total = blocks = 0
    for t in tiles:
        with rasterio.open(t) as ds:
            bh, bw = ds.block_shapes[0]
            inv = ~ds.transform
            c0, r0 = inv * (bbox[0], bbox[3])
            c1, r1 = inv * (bbox[2], bbox[1])
            c0, r0 = max(0, math.floor(c0)), max(0, math.floor(r0))
            c1, r1 = min(ds.width, math.ceil(c1)), min(ds.height, math.ceil(r1))
            if c0 >= c1 or r0 >= r1:
                continue
            ranges = set()
            for i in range(r0 // bh, (r1 - 1) // bh + 1):
                for j in range(c0 // bw, (c1 - 1) // bw + 1):
                    off = int(ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=1))
                    size = int(ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=1))
                    ranges.add((off, size))
            total += sum(size for _, size in ranges)
            blocks += len(ranges)
    return {"bytes": total, "blocks": blocks}


def stac_project(work: Path, tiles: list[str], server: TileServer, pipelines: Path) -> Path:
    """A project whose source is a static STAC catalog with the served tiles as assets."""
    from h3pipe.demo.stac import COLLECTION_ID, write_static_catalog

    proj = work / "remote-project"
    (proj / "sources").mkdir(parents=True, exist_ok=True)
    (proj / "pipelines").mkdir(parents=True, exist_ok=True)
    catalog = write_static_catalog(work / "catalog", tiles,
                                   href_for=lambda p: server.url_of(Path(p).name))
    (proj / "sources" / "dem.yaml").write_text(
        f"id: dem\nkind: stac\ntheme: terrain\nnodata: -32767\n"
        f"stac: {{url: '{catalog}', collection: {COLLECTION_ID}, asset: data}}\n")
    shutil.copytree(pipelines, proj / "pipelines", dirs_exist_ok=True)
    return proj


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", "-r", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-exactextract", action="store_true")
    ap.add_argument("--work", type=Path, default=HERE / "results" / "tmp" / "remote",
                    help="scratch folder, wiped first (bench.py wipes results/tmp)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another tree holding an h3pipe/ package (e.g. `git archive` of an "
                    "older commit): its remote runs are timed in the same rounds")
    ap.add_argument("--flaky", type=int, default=0, metavar="N",
                    help="then N runs with 10%% and N with 25%% of GETs answering 503, each "
                    "checked against the local result")
    args = ap.parse_args()

    data = HERE / "data" / "cop-dem-glo-30"
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tiles = bench.make_tiles(data, bench.BBOX)
    scope = bench.bbox_arg(bench.BBOX)
    res = str(args.resolution)
    cells = bench.cells_for(bench.BBOX, args.resolution)
    import numpy as np

    np.save(work / "cells.npy", cells)
    local_proj = bench.make_project(work, data)
    # This tree's h3pipe, not an installed one; PYTHONSAFEPATH: `python -m` would otherwise
    # put the working directory first, and a baseline run from the repository would run it.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONSAFEPATH": "1"}
    h3pipe = [sys.executable, "-m", "h3pipe"]
    in_scope = blocks_in_scope(tiles, bench.BBOX)
    load = os.getloadavg()  # a shared machine: say how shared
    print(f"remote: {len(tiles)} tiles, res {res}, {len(cells)} cells; blocks in scope: "
          f"{in_scope['blocks']} ({in_scope['bytes'] / 1e6:.1f} MB)", flush=True)

    settings = {"latency": {"latency": LATENCY},
                "latency+cap": {"latency": LATENCY, "bandwidth": BANDWIDTH}}
    servers = {name: TileServer(data, keep_log=True, **kw).start()
               for name, kw in settings.items()}
    projects = {name: stac_project(work / name, tiles, s, local_proj / "pipelines")
                for name, s in servers.items()}
    # Warm up once, untimed: numba's cache, the OS file cache, each project's store.
    subprocess.run([*h3pipe, "--project", str(local_proj), "run", "bench", "--bbox", scope,
                    "-r", "6"], check=True, capture_output=True, env=env)
    for proj in projects.values():
        subprocess.run([*h3pipe, "--project", str(proj), "run", "bench", "--bbox", scope,
                        "-r", "6"], check=True, capture_output=True, env=env)

    variants = {name: (projects[name], env) for name in servers}
    if args.baseline is not None:
        base_env = {**env, "PYTHONPATH": str(args.baseline.resolve())}
        for name, server in servers.items():
            proj = stac_project(work / f"baseline-{name}", tiles, server,
                                local_proj / "pipelines")
            subprocess.run([*h3pipe, "--project", str(proj), "run", "bench", "--bbox", scope,
                            "-r", "6"], check=True, capture_output=True, env=base_env)
            variants[f"baseline {name}"] = (proj, base_env)
    runs: dict[str, list[dict[str, Any]]] = {"local": [], **{n: [] for n in variants}}
    tile_list = work / "tiles.txt"
    tile_list.write_text("\n".join(f"/vsicurl/{servers['latency'].url_of(Path(t).name)}"
                                   for t in tiles))
    for i in range(args.repeats):
        m = bench.measure([*h3pipe, "--project", str(local_proj), "run", "bench", "--bbox",
                           scope, "-r", res, "--force"], env=env)
        runs["local"].append(m)
        print(f"  [{i}] local         {m['wall_s']:6.2f} s", flush=True)
        for name, (proj, variant_env) in variants.items():
            server = servers[name.removeprefix("baseline ")]
            server.reset_stats()
            m = bench.measure([*h3pipe, "--project", str(proj), "run", "bench",
                               "--bbox", scope, "-r", res, "--force"], env=variant_env)
            m |= server.stats.as_dict()
            runs[name].append(m)
            print(f"  [{i}] {name:13s} {m['wall_s']:6.2f} s  {m['requests']} requests  "
                  f"{m['bytes_sent'] / 1e6:.1f} MB", flush=True)
        if not args.no_exactextract and i == 0:
            # exactextract is slow and steady over HTTP: one run of each configuration.
            server = servers["latency"]
            for strategy in ("feature-sequential", "raster-sequential"):
                server.reset_stats()
                m = bench.measure([sys.executable, METHODS, "exactextract", "--tiles",
                                   str(tile_list), "--cells", str(work / "cells.npy"), "--out",
                                   str(work / "ee.parquet"), "--strategy", strategy,
                                   "--procs", "2"], env=env)
                m |= server.stats.as_dict()
                runs[f"exactextract {strategy}"] = [m]
                print(f"  [{i}] exactextract {strategy}  {m['wall_s']:6.2f} s  "
                      f"{m['requests']} requests  {m['bytes_sent'] / 1e6:.1f} MB", flush=True)
    identical = same_results(work, h3pipe, env, local_proj, projects, res)
    flaky = {}
    if args.flaky:
        flaky = flaky_runs(work, h3pipe, env, local_proj, projects["latency"],
                           servers["latency"], res, scope, args.flaky)
    for server in servers.values():
        server.stop()

    summary = {name: _median(rs) for name, rs in runs.items() if rs}
    local_s = summary["local"]["wall_s"]
    targets: dict[str, Any] = {}
    for name in servers:
        s = summary[name]
        targets[name] = {
            "remote_over_local": round(s["wall_s"] / local_s, 2),
            "remote_over_local_ok": s["wall_s"] <= 1.2 * local_s,
            "bytes_over_blocks": round(s["bytes_sent"] / in_scope["bytes"], 3),
            "bytes_ok": s["bytes_sent"] <= 1.1 * in_scope["bytes"],
        }
    ee = [name for name in summary if name.startswith("exactextract")]
    if ee:
        best = min(ee, key=lambda name: summary[name]["wall_s"])
        ratio = summary[best]["wall_s"] / summary["latency"]["wall_s"]
        targets["exactextract_best"] = best
        targets["exactextract_over_h3pipe"] = round(ratio, 2)
        targets["exactextract_ok"] = ratio >= 4
    results = {"machine": bench.machine(), "resolution": args.resolution, "cells": len(cells),
               "bbox": bench.BBOX, "tiles": len(tiles), "latency_s": LATENCY,
               "bandwidth_bytes_per_s": BANDWIDTH, "blocks_in_scope": in_scope,
               "repeats": args.repeats, "median": summary, "runs": runs, "targets": targets,
               "load_before_after": [load, os.getloadavg()],
               "results_identical_to_local": identical, "flaky": flaky}
    out = HERE / "results" / "remote.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"median_wall_s": {k: round(v["wall_s"], 2) for k, v in summary.items()},
                      "targets": targets, "identical": identical, "flaky": flaky}, indent=2))
    return 0 if identical else 1


def _median(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}


def flaky_runs(work: Path, h3pipe: list[str], env: dict[str, str], local: Path, proj: Path,
               server: TileServer, res: str, scope: str, n: int) -> dict[str, Any]:
    """Runs over the server failing 10% and 25% of its GETs with 503, seeds 0..n-1: how many
    complete, and with the local run's numbers."""
    import pyarrow.parquet as pq

    def rows(project: Path, name: str) -> list[dict[str, Any]]:
        out = work / f"{name}.parquet"
        subprocess.run([*h3pipe, "--project", str(project), "export", "bench", "-r", res,
                        "-o", str(out)], check=True, capture_output=True, env=env)
        return pq.read_table(out).sort_by("h3_index").to_pylist()

    ref = rows(local, "local-flaky")
    out: dict[str, Any] = {}
    for share in (0.10, 0.25):
        done = same = spoiled = 0
        errors = []
        for seed in range(n):
            server.fail_share = share
            server.reseed(seed)
            server.reset_stats()
            r = subprocess.run([*h3pipe, "--project", str(proj), "run", "bench", "--bbox",
                                scope, "-r", res, "--force"], capture_output=True, text=True,
                               env=env)
            server.fail_share = 0.0
            spoiled += server.stats.failures
            if r.returncode == 0:
                done += 1
                same += rows(proj, f"flaky-{share}-{seed}") == ref
            else:
                errors.append(r.stderr.strip().splitlines()[-1][:300])
            print(f"  flaky {share:.0%} seed {seed}: exit {r.returncode}", flush=True)
        out[f"{share:.0%}"] = {"runs": n, "completed": done, "identical": same,
                               "spoiled_gets": spoiled, "errors": errors}
    return out


def same_results(work: Path, h3pipe: list[str], env: dict[str, str], local: Path,
                 projects: dict[str, Path], res: str) -> dict[str, bool]:
    """Each remote project's exported result against the local one, row for row."""
    import pyarrow.parquet as pq

    def export(proj: Path, name: str) -> list[dict[str, Any]]:
        out = work / f"{name}.parquet"
        subprocess.run([*h3pipe, "--project", str(proj), "export", "bench", "-r", res, "-o",
                        str(out)], check=True, capture_output=True, env=env)
        return pq.read_table(out).sort_by("h3_index").to_pylist()

    ref = export(local, "local")
    return {name: export(proj, name) == ref for name, proj in projects.items()}


if __name__ == "__main__":
    sys.exit(main())
