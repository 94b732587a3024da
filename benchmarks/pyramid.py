"""``python benchmarks/pyramid.py``: several resolutions in one run (``-r 5-9``) against the
finest alone (``-r 9``), on the Rwanda stand-in tiles of ``bench.py``, from local disk and
over HTTP.

A run of several resolutions reads each window once and computes every resolution from it
(issue 29, item 2). Measured, interleaved (single, together, single, ...) so that the noise
of a shared machine falls on both alike, each run on a fresh store, medians reported with
wall and CPU seconds and the load:

- wall time of ``-r 5-9`` over ``-r 9`` alone, locally (target <= 1.6x);
- bytes the tile server sent (``tests/tileserver.py``, 50 ms a request, the tiles behind a
  static STAC catalog as in ``remote.py``) for ``-r 5-9``, against the byte ranges that the
  single runs of its resolutions need together (their union: what any reading of the five
  must fetch; a resolution-5 cell whose centre is in the box reaches 0.1 degree beyond it,
  so ``-r 5`` needs bytes ``-r 9`` does not), target 1.0x; and against ``-r 9`` alone;
- every resolution of the ``-r 5-9`` run against its own single-resolution run: the same
  cells, and values equal to the bit (or within 1e-12 relative);
- agreement with exactextract called on the tiles over a sample of every resolution's cells
  (``methods.py exactextract``, ``bench.agreement``: 1e-6 relative).

Writes ``benchmarks/results/pyramid.json`` and ``pyramid.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import bench  # noqa: E402  (benchmarks/bench.py: measure, make_tiles, make_project, ...)
import remote  # noqa: E402  (benchmarks/remote.py: stac_project, blocks_in_scope)

from tests.tileserver import TileServer  # noqa: E402

LATENCY = 0.05
WALL_TARGET = 1.6
BYTES_TARGET = 1.0
EXACT_REL = 1e-12
METHODS = str(HERE / "methods.py")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="5-9", help="the resolutions run together")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=1500,
                    help="cells per resolution compared with exactextract")
    ap.add_argument("--no-remote", action="store_true")
    ap.add_argument("--work", type=Path, default=HERE / "results" / "tmp" / "pyramid",
                    help="scratch folder, wiped first")
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.levels.split("-"))
    levels = list(range(lo, hi + 1))

    data = HERE / "data" / "cop-dem-glo-30"
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tiles = bench.make_tiles(data, bench.BBOX)
    scope = bench.bbox_arg(bench.BBOX)
    proj = bench.make_project(work, data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's h3pipe, not an installed one
    h3pipe = [sys.executable, "-m", "h3pipe", "--project", str(proj)]
    print(f"pyramid: {len(tiles)} tiles, -r {args.levels} against -r {hi}; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    def run(store: Path, res: str, project: Path = proj) -> dict[str, float]:
        return bench.measure([sys.executable, "-m", "h3pipe", "--project", str(project),
                              "--store", str(store), "run", "bench", "--bbox", scope,
                              "-r", res], env=env)

    run(work / "warm", "6")  # untimed: numba's cache, the OS file cache
    variants = {"single": str(hi), "together": args.levels}
    runs: dict[str, list[dict[str, Any]]] = {}
    for i in range(args.repeats):
        for name, res in variants.items():
            m = run(work / "stores" / f"{name}-{i}", res) | {"load": os.getloadavg()[0]}
            runs.setdefault(name, []).append(m)
            print(f"  [{i}] local {name:8s} -r {res:4s} {m['wall_s']:6.2f} s wall "
                  f"{m['cpu_s']:6.2f} s CPU  {m['peak_rss_mb']:5.0f} MB  load "
                  f"{m['load']:.1f}", flush=True)

    union: int | None = None
    needed: list[tuple[str, int, int]] = []
    if not args.no_remote:
        server = TileServer(data, latency=LATENCY, keep_log=True).start()
        try:
            rproj = remote.stac_project(work / "remote", tiles, server, proj / "pipelines")
            run(work / "remote-warm", "6", rproj)
            for i in range(args.repeats):
                for name, res in variants.items():
                    server.reset_stats()
                    m = run(work / "stores" / f"remote-{name}-{i}", res, rproj)
                    m |= server.stats.as_dict() | {"load": os.getloadavg()[0]}
                    runs.setdefault(f"remote {name}", []).append(m)
                    print(f"  [{i}] http  {name:8s} -r {res:4s} {m['wall_s']:6.2f} s wall "
                          f"{m['cpu_s']:6.2f} s CPU  {m['requests']} requests  "
                          f"{m['bytes_sent'] / 1e6:.1f} MB", flush=True)
                    if i == 0 and name == "single":
                        needed = list(server.log or [])
            for res in levels[:-1]:  # what each coarser resolution alone reads
                server.reset_stats()
                run(work / "stores" / f"remote-alone-{res}", str(res), rproj)
                needed += server.log or []
                print(f"  http  alone    -r {res}: {server.stats.bytes_sent / 1e6:.1f} MB",
                      flush=True)
            union = _union_bytes(needed)
        finally:
            server.stop()

    exact = compare_levels(work, h3pipe, env, scope, levels, runs)
    agree = agreement(work, h3pipe, env, scope, levels, tiles, args.sample)
    summary = {name: _median(rs) for name, rs in runs.items()}
    targets = _targets(summary, exact, agree, union)
    results = {"machine": bench.machine(), "bbox": bench.BBOX, "levels": levels,
               "repeats": args.repeats, "latency_s": LATENCY,
               "blocks_in_scope": remote.blocks_in_scope(tiles, bench.BBOX),
               "union_of_single_runs_bytes": union,
               "median": summary, "runs": runs, "exact": exact, "exactextract": agree,
               "targets": targets}
    out = HERE / "results" / "pyramid.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results" / "pyramid.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if targets["exact_ok"] and targets["exactextract_ok"] else 1


def _export(h3pipe: list[str], env: dict[str, str], store: Path, scope: str, res: int,
            out: Path) -> Any:
    import pyarrow.parquet as pq

    subprocess.run([*h3pipe, "--store", str(store), "export", "bench", "--bbox", scope,
                    "-r", str(res), "-o", str(out)], check=True, capture_output=True, env=env)
    return pq.read_table(out).sort_by("h3_index")


def compare_levels(work: Path, h3pipe: list[str], env: dict[str, str], scope: str,
                   levels: list[int], runs: dict[str, list[dict[str, Any]]]
                   ) -> dict[str, Any]:
    """Each resolution of the first run of several against its own single run (the finest
    from the timed single runs, the coarser ones run here)."""
    import numpy as np

    together = work / "stores" / "together-0"
    out: dict[str, Any] = {}
    for res in levels:
        store = work / "stores" / "single-0"
        if res != levels[-1]:
            store = work / "stores" / f"alone-{res}"
            bench.measure([*h3pipe, "--store", str(store), "run", "bench", "--bbox", scope,
                           "-r", str(res)], env=env)
        mine = _export(h3pipe, env, together, scope, res, work / f"together-{res}.parquet")
        alone = _export(h3pipe, env, store, scope, res, work / f"alone-{res}.parquet")
        same_cells = mine["h3_index"].equals(alone["h3_index"])
        worst, identical = 0.0, True
        if same_cells:
            for stat in bench.STATS:
                a = mine[stat].to_numpy(zero_copy_only=False).astype(float)
                b = alone[stat].to_numpy(zero_copy_only=False).astype(float)
                identical &= bool(np.array_equal(a, b, equal_nan=True))
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
                worst = max(worst, float(np.nanmax(rel, initial=0.0)))
        out[str(res)] = {"cells": mine.num_rows, "same_cells": same_cells,
                         "identical": identical, "max_rel_diff": worst,
                         "ok": same_cells and worst <= EXACT_REL}
        print(f"  r{res}: {mine.num_rows} cells, same cells {same_cells}, identical "
              f"{identical}, max relative difference {worst:.1e}", flush=True)
    return out


def agreement(work: Path, h3pipe: list[str], env: dict[str, str], scope: str,
              levels: list[int], tiles: list[str], sample: int) -> dict[str, Any]:
    """exactextract on the tiles over an even sample of each resolution's cells."""
    import numpy as np
    import pyarrow.parquet as pq

    from h3pipe import grid

    tile_list = work / "tiles.txt"
    tile_list.write_text("\n".join(tiles))
    out: dict[str, Any] = {}
    for res in levels:
        table = pq.read_table(work / f"together-{res}.parquet")
        take = np.unique(np.linspace(0, table.num_rows - 1, min(sample, table.num_rows)
                                     ).astype(int))
        mine = table.take(take)
        np.save(work / f"sample-{res}.npy", grid.ids(mine["h3_index"]))
        pq.write_table(mine, work / f"sample-{res}.parquet")
        subprocess.run([sys.executable, METHODS, "exactextract", "--tiles", str(tile_list),
                        "--cells", str(work / f"sample-{res}.npy"), "--out",
                        str(work / f"ee-{res}.parquet")], check=True, env=env)
        found = bench.agreement(work / f"sample-{res}.parquet", work / f"ee-{res}.parquet")
        out[str(res)] = found
        print(f"  r{res}: exactextract on {found['cells']} cells: ok {found['ok']}, worst "
              f"{max(found['max_rel_diff'].values()):.1e}", flush=True)
    return out


def _union_bytes(ranges: list[tuple[str, int, int]]) -> int:
    """Bytes in the union of served ranges (``start``-``end`` inclusive), per file."""
    total = 0
    for name in {n for n, _, _ in ranges}:
        end = -1
        for a, b in sorted((a, b) for n, a, b in ranges if n == name):
            if b > end:
                total += b - max(a, end + 1) + 1
                end = b
    return total


def _median(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}


def _targets(summary: dict[str, Any], exact: dict[str, Any], agree: dict[str, Any],
             union: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    wall = summary["together"]["wall_s"] / summary["single"]["wall_s"]
    cpu = summary["together"]["cpu_s"] / summary["single"]["cpu_s"]
    out |= {"wall_ratio": round(wall, 2), "cpu_ratio": round(cpu, 2),
            "wall_ok": wall <= WALL_TARGET}
    if "remote single" in summary:
        byte_ratio = summary["remote together"]["bytes_sent"] / \
            summary["remote single"]["bytes_sent"]
        rwall = summary["remote together"]["wall_s"] / summary["remote single"]["wall_s"]
        over = summary["remote together"]["bytes_sent"] / union if union else None
        dup = summary["remote together"]["duplicate_bytes"] / \
            summary["remote together"]["bytes_sent"]
        out |= {"remote_wall_ratio": round(rwall, 2),
                "bytes_over_finest_alone": round(byte_ratio, 4),
                "bytes_over_union": round(over, 4) if over else None,
                "duplicate_share": round(dup, 4),
                "bytes_ok": over is not None and over <= BYTES_TARGET + 0.05}
    out["exact_ok"] = all(v["ok"] for v in exact.values())
    out["exactextract_ok"] = all(v["ok"] for v in agree.values())
    return out


def markdown(r: dict[str, Any]) -> str:
    t, m = r["targets"], r["median"]
    lo, hi = r["levels"][0], r["levels"][-1]
    lines = [f"# -r {lo}-{hi} in one run against -r {hi} alone",
             "",
             f"{r['machine'].get('cpu', '?')}, {r['machine'].get('cores', '?')} cores; "
             f"Rwanda stand-in tiles ({r['bbox']}), medians of {r['repeats']} interleaved "
             "runs, each on a fresh store (`benchmarks/pyramid.py`).",
             "",
             "| run | wall s | CPU s | peak RSS MB | load | requests | MB over HTTP |",
             "|---|---|---|---|---|---|---|"]
    for name, s in m.items():
        lines.append(f"| {name} | {s['wall_s']:.2f} | {s['cpu_s']:.2f} | "
                     f"{s['peak_rss_mb']:.0f} | {s['load']:.1f} | "
                     f"{int(s['requests']) if 'requests' in s else ''} | "
                     + (f"{s['bytes_sent'] / 1e6:.1f}" if "bytes_sent" in s else "") + " |")
    lines += ["",
              f"- wall time, -r {lo}-{hi} over -r {hi}: **{t['wall_ratio']}x** (target "
              f"<= {WALL_TARGET}x: {'met' if t['wall_ok'] else 'missed'}); CPU "
              f"{t['cpu_ratio']}x"]
    if "bytes_over_union" in t:
        lines.append(f"- bytes over HTTP (50 ms a request), -r {lo}-{hi} over the union of the "
                     f"byte ranges its single runs read: **{t['bytes_over_union']}x** (target "
                     f"{BYTES_TARGET}x, within 5%: {'met' if t['bytes_ok'] else 'missed'}; "
                     f"{t['duplicate_share']:.1%} of its bytes fetched twice); over -r {hi} "
                     f"alone {t['bytes_over_finest_alone']}x, since a resolution-{lo} cell "
                     f"whose centre is in the box reaches beyond it; wall "
                     f"{t['remote_wall_ratio']}x")
    lines.append("")
    lines.append("| resolution | cells | same cells as its own run | identical to the bit | "
                 "max relative difference | exactextract agreement (sample) |")
    lines.append("|---|---|---|---|---|---|")
    for res, e in r["exact"].items():
        a = r["exactextract"][res]
        lines.append(f"| {res} | {e['cells']:,} | {e['same_cells']} | {e['identical']} | "
                     f"{e['max_rel_diff']:.1e} | {a['ok']} ({a['cells']} cells, worst "
                     f"{max(a['max_rel_diff'].values()):.1e}) |")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"pyramid: {time.perf_counter() - t0:.0f} s")
    sys.exit(code)
