"""``make bench``: h3pipe against its peers on a Rwanda-sized stand-in for Copernicus DEM.

Generates six 1x1 degree tiles like cop-dem-glo-30 (3600 x 3600 float32, 1 arcsecond,
terrain plus noise, a NaN lake and -32767 voids) over lon 28.86..30.90, lat -2.84..-1.05,
then times, each in its own process and side by side: h3pipe end to end (CLI, embedded
store, default workers, results written), exactextract called directly on the same cells
(both strategies, 1 and 2 processes), rasterize-and-bincount, rasterstats on 500-cell
batches (a sample, extrapolated), and reading every pixel once (the floor); at H3
resolutions 6 to 9. Wall and CPU time, peak RSS summed over every process of a method,
cells/s and pixels/s are written to ``benchmarks/results/latest.json`` and ``latest.md``,
and the table into README.md. Then the two flood example pipelines (multi-step, per
building) run on the stand-in flood data for Rwanda.

Agreement is part of the run: every cell's count, sum, mean, min, max and stdev from
h3pipe must match direct exactextract within 1e-6 relative, or the run exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
BBOX = (28.86, -2.84, 30.90, -1.05)
# Four times the area: twice as wide and twice as tall, same south-west... north-west corner.
BBOX_4X = (28.86, -2.84 - (2.84 - 1.05), 30.90 + (30.90 - 28.86), -1.05)
STATS = ["count", "sum", "mean", "min", "max", "stdev"]
REL = 1e-6


def bbox_arg(b: tuple[float, ...]) -> str:
    return ",".join(f"{v:.2f}" for v in b)


# -- measuring a process tree -------------------------------------------------------------

def tree_rss(ps: Any) -> int:
    """Resident bytes of a process and all its descendants now (0 for those gone)."""
    import psutil

    total = 0
    try:
        for p in [ps, *ps.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall and CPU seconds, and peak RSS summed over the process and all its children."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    out, err = proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:4])}... failed ({proc.returncode}):\n"
                         f"{err.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak / 2**20}


# -- data -----------------------------------------------------------------------------------

def make_tiles(data: Path, bbox: tuple[float, ...]) -> list[str]:
    from h3pipe.demo.copdem import generate_tiles

    return [str(p) for p in generate_tiles(data, bbox)]


def cells_for(bbox: tuple[float, ...], res: int) -> np.ndarray:
    import h3
    import shapely

    return np.sort(np.asarray(h3.api.numpy_int.geo_to_cells(shapely.box(*bbox), res)))


def make_project(work: Path, tiles_dir: Path) -> Path:
    proj = work / "project"
    (proj / "sources").mkdir(parents=True, exist_ok=True)
    (proj / "pipelines").mkdir(parents=True, exist_ok=True)
    (proj / "sources" / "dem.yaml").write_text(
        f"id: dem\nkind: raster\ntheme: terrain\nnodata: -32767\n"
        f"path: '{tiles_dir}/Copernicus_DSM_COG_10_*_DEM.tif'\n")
    (proj / "pipelines" / "bench.yaml").write_text(
        "id: bench\noutput: {dataset: bench, theme: terrain}\n"
        "steps:\n  - id: stats\n    operation: zonal_stats\n    source: dem\n"
        f"    params: {{stats: [{', '.join(STATS)}]}}\n")
    return proj


# -- agreement ------------------------------------------------------------------------------

def agreement(h3pipe_out: Path, reference: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    ours = pq.read_table(h3pipe_out).to_pydict()
    ref = pq.read_table(reference).to_pydict()
    index = {c: i for i, c in enumerate(ours["h3_index"])}
    worst = {s: 0.0 for s in STATS}
    bad: list[str] = []
    missing = 0
    for j, cell in enumerate(ref["cell"]):
        i = index.get(cell)
        if i is None:
            missing += 1
            continue
        empty = not ref["count"][j]
        for s in STATS:
            e, a = ref[s][j], ours[s][i]
            if empty and s not in ("count",):
                if a is not None and s != "sum":
                    bad.append(f"{cell} {s}: expected null, got {a}")
                continue
            if a is None:
                bad.append(f"{cell} {s}: null, expected {e}")
                continue
            d = abs(a - e) / abs(e) if e else abs(a - e)
            worst[s] = max(worst[s], d)
            if d > REL and abs(a - e) > 1e-9:
                bad.append(f"{cell} {s}: {a} vs {e} (rel {d:.2e})")
    return {"cells": len(ref["cell"]), "missing": missing, "extra": len(index) - len(ref["cell"]),
            "max_rel_diff": worst, "failures": len(bad), "examples": bad[:5],
            "ok": not bad and missing == 0 and len(index) == len(ref["cell"])}


# -- the run ---------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import exactextract
    import rasterio

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "gdal": rasterio.__gdal_version__, "exactextract": getattr(
                exactextract, "__version__", "?"), "date": time.strftime("%Y-%m-%d")}


def run(args: argparse.Namespace) -> int:
    import house  # beside this file: its worktrees, made for --before and removed after

    return house.with_trees(_run, args)


def _before_side(spec: str | None, work: Path, tiles_dir: Path, made: list[Path]
                 ) -> tuple[list[str], dict[str, str], str] | None:
    """The CLI, environment and label of h3pipe as it was at ``spec`` (a revision, checked
    out as a detached worktree outside the repository, or a folder), on its own project
    and numba cache, measured beside this tree's in the same run; None without a spec."""
    if not spec:
        return None
    import house  # beside this file: its worktree helper

    tree = house.tree_of(spec, made)
    commit = house.git("rev-parse", "--short", "HEAD", cwd=tree)
    side = work / "before"
    proj = make_project(side, tiles_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("H3PIPE_")}
    env.update(PYTHONPATH=str(tree), PYTHONSAFEPATH="1",
               NUMBA_CACHE_DIR=str(side / "numba-cache"))
    cli = [sys.executable, "-m", "h3pipe", "--project", str(proj)]
    # Warm its numba cache and the file cache, untimed, as for this tree below.
    subprocess.run([*cli, "run", "bench", "--bbox", bbox_arg(BBOX), "-r", "6"], check=True,
                   capture_output=True, env=env)
    return cli, env, commit


def _run(args: argparse.Namespace, made: list[Path]) -> int:
    data = HERE / "data"
    work = HERE / "results" / "tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"bench: tiles in {data} (generated once)", flush=True)
    tiles = [t for t in make_tiles(data / "cop-dem-glo-30", BBOX)]
    tile_list = work / "tiles.txt"
    tile_list.write_text("\n".join(tiles))
    import rasterio

    tile_pixels = 0
    for t in tiles:
        with rasterio.open(t) as ds:
            tile_pixels += ds.width * ds.height
            pixel_deg2 = ds.res[0] * ds.res[1]
    # Pixels inside the scope: what a method must look at (the tiles reach beyond it).
    pixels = round((BBOX[2] - BBOX[0]) * (BBOX[3] - BBOX[1]) / pixel_deg2)
    proj = make_project(work, data / "cop-dem-glo-30")
    py = sys.executable
    methods = str(HERE / "methods.py")
    h3pipe_cli = [str(BIN / "h3pipe"), "--project", str(proj)]
    before = _before_side(args.before, work, data / "cop-dem-glo-30", made)
    rows: list[dict[str, Any]] = []
    agree: dict[str, Any] = {}

    def record(method: str, config: str, res: int | None, cells: int, m: dict[str, float],
               note: str = "") -> dict[str, Any]:
        row = {"method": method, "config": config, "resolution": res, "cells": cells,
               "pixels": pixels, **{k: round(v, 3) for k, v in m.items()},
               "cells_per_s": round(cells / m["wall_s"]) if cells else None,
               "pixels_per_s": round(pixels / m["wall_s"]), "note": note}
        rows.append(row)
        print(f"  {method:13s} {config:28s} res {res} {m['wall_s']:8.2f} s wall "
              f"{m['cpu_s']:8.2f} s cpu {m['peak_rss_mb']:7.0f} MB", flush=True)
        return row

    # Warm caches once (numba's compiled kernel, the OS file cache), untimed. Measured runs
    # pass --force: the same run again would otherwise be reported, not recomputed.
    subprocess.run([*h3pipe_cli, "run", "bench", "--bbox", bbox_arg(BBOX), "-r", "6"],
                   check=True, capture_output=True)
    floor_row = record("read+decode", "1 process (floor)", None, 0, measure(
        [py, methods, "floor", "--tiles", str(tile_list), "--out", str(work / "floor.json")]),
        note=f"all {tile_pixels / 1e6:.0f} M pixels of the {len(tiles)} tiles")
    floor_row["pixels_per_s"] = round(tile_pixels / floor_row["wall_s"])
    for res in args.resolutions:
        cells = cells_for(BBOX, res)
        np.save(work / f"cells_{res}.npy", cells)
        print(f"resolution {res}: {len(cells)} cells", flush=True)
        run_args = ["run", "bench", "--bbox", bbox_arg(BBOX), "-r", str(res), "--force"]
        if before is not None:
            cli, env, label = before
            record("h3pipe", f"before ({label})", res, len(cells),
                   measure([*cli, *run_args], env=env))
        record("h3pipe", "end to end, default workers", res, len(cells),
               measure([*h3pipe_cli, *run_args]))
        out = work / f"h3pipe_{res}.parquet"
        subprocess.run([*h3pipe_cli, "export", "bench", "-r", str(res), "-o", str(out)],
                       check=True, capture_output=True)
        reference = None
        for strategy in ("feature-sequential", "raster-sequential"):
            for procs in (1, 2):
                if args.quick and procs == 1:
                    continue
                ref = work / f"ee_{res}_{strategy}_{procs}.parquet"
                record("exactextract", f"{strategy}, {procs} proc", res, len(cells), measure(
                    [py, methods, "exactextract", "--tiles", str(tile_list), "--cells",
                     str(work / f"cells_{res}.npy"), "--out", str(ref), "--strategy", strategy,
                     "--procs", str(procs)]))
                reference = reference or ref
        assert reference is not None
        agree[str(res)] = agreement(out, reference)
        print(f"  agreement with exactextract: {agree[str(res)]['ok']} "
              f"(max rel diff {max(agree[str(res)]['max_rel_diff'].values()):.1e})", flush=True)
        record("bincount", "rasterize centres + numpy", res, len(cells), measure(
            [py, methods, "bincount", "--tiles", str(tile_list), "--cells",
             str(work / f"cells_{res}.npy"), "--out", str(work / f"bincount_{res}.parquet")]))
        if not args.quick:
            sample_out = work / f"rasterstats_{res}.json"
            m = measure([py, methods, "rasterstats", "--tiles", str(tile_list), "--cells",
                         str(work / f"cells_{res}.npy"), "--out", str(sample_out),
                         "--sample", "2"])
            s = json.loads(sample_out.read_text())
            m["wall_s"] = s["extrapolated_seconds"]
            m["cpu_s"] = m["cpu_s"] * s["extrapolated_seconds"] / max(s["seconds"], 1e-9)
            record("rasterstats", "500-cell batches", res, len(cells), m,
                   note=f"extrapolated from {s['sampled_cells']} cells; RSS of the sample")

    # Scope four times larger, resolution 8: memory must stay flat.
    if not args.quick:
        print("4x scope: generating tiles", flush=True)
        make_tiles(data / "cop-dem-glo-30", BBOX_4X)
        cells4 = cells_for(BBOX_4X, 8)
        m = measure([*h3pipe_cli, "run", "bench", "--bbox", bbox_arg(BBOX_4X), "-r", "8",
                     "--force"])
        r4 = record("h3pipe", "end to end, 4x scope", 8, len(cells4), m,
                    note="4 times the area of the scope above")
        r4["pixels"] = pixels * 4
        r4["pixels_per_s"] = round(pixels * 4 / m["wall_s"])

    if not args.quick:
        bench_features(work, rows, record)

    results = {"machine": machine(), "dataset": {"bbox": BBOX, "tiles": len(tiles),
               "tile_pixels": tile_pixels, "scope_pixels": pixels}, "runs": rows,
               "agreement": agree}
    for row in rows:
        base = next((r for r in rows if r["method"] == "h3pipe"
                     and r["resolution"] == row["resolution"]
                     and r["config"] == "end to end, default workers"), None)
        row["wall_vs_h3pipe"] = round(row["wall_s"] / base["wall_s"], 2) if base else None
    results["targets"] = targets(rows)
    out_dir = HERE / "results"
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (out_dir / "latest.md").write_text(md)
    update_readme(md)
    print(md)
    ok = all(a["ok"] for a in agree.values())
    if not ok:
        print("bench: h3pipe DISAGREES with exactextract; see latest.json", file=sys.stderr)
    return 0 if ok else 1


def bench_features(work: Path, rows: list[dict[str, Any]], record: Any) -> None:
    """The two flood examples on the Rwanda stand-in (150,000 buildings): multi-step
    pipelines whose work is per feature; 'cells' is buildings here."""
    from h3pipe.demo.flood import generate

    print("feature pipelines: stand-in flood data", flush=True)
    paths = generate(HERE / "data" / "flood")
    proj = work / "flood"
    for folder in ("sources", "pipelines"):
        shutil.copytree(ROOT / folder, proj / folder)
    env = {**os.environ, "FLOOD_DEPTH_100Y": str(paths[0]), "WORLDPOP": str(paths[1]),
           "BUILDINGS": str(paths[2])}
    import pyarrow.parquet as pq

    buildings = pq.read_metadata(paths[2]).num_rows
    cli = [str(BIN / "h3pipe"), "--project", str(proj)]
    for pipeline, steps in (("building_flood_exposure", "sample, aggregate"),
                            ("flood_risk_weighted", "sample, 100 m join, aggregate")):
        subprocess.run([*cli, "run", pipeline, "--iso3", "RWA"], check=True,
                       capture_output=True, env=env)  # warm: file cache, kernel
        m = measure([*cli, "run", pipeline, "--iso3", "RWA", "--force"], env=env)
        row = record("h3pipe", f"{pipeline} ({steps})", None, buildings, m,
                     note="cells = buildings in the file; those in Rwanda are computed")
        row["pixels_per_s"] = 0


# Issue 29: h3pipe end to end against the best exactextract configuration, by resolution,
# and against the one-process read floor.
VS_EXACTEXTRACT = {5: 0.8, 6: 0.8, 7: 0.3, 8: 0.3, 9: 0.3}
VS_FLOOR = {6: 1.5, 7: 1.5, 8: 1.5}


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(method: str, res: int | None, config: str | None = None) -> list[dict[str, Any]]:
        return [r for r in rows if r["method"] == method and r["resolution"] == res
                and (config is None or r["config"] == config)]

    out: dict[str, Any] = {}
    floor = pick("read+decode", None)
    for res in sorted({r["resolution"] for r in rows if r["resolution"] is not None}):
        h = pick("h3pipe", res, "end to end, default workers")
        ee = pick("exactextract", res)
        if h and ee and res in VS_EXACTEXTRACT:
            best = min(ee, key=lambda r: r["wall_s"])
            ratio = h[0]["wall_s"] / best["wall_s"]
            goal = VS_EXACTEXTRACT[res]
            out[f"vs_best_exactextract_res{res}"] = {
                "ratio": round(ratio, 2), "target": goal, "best": best["config"],
                "ok": ratio <= goal}
        if h and floor and res in VS_FLOOR:
            ratio = h[0]["wall_s"] / floor[0]["wall_s"]
            out[f"vs_floor_res{res}"] = {"ratio": round(ratio, 2), "target": VS_FLOOR[res],
                                         "ok": ratio <= VS_FLOOR[res]}
    h = pick("h3pipe", 8, "end to end, default workers")
    if h:
        out["peak_rss"] = {"mb": h[0]["peak_rss_mb"], "target_mb": 1024,
                           "ok": h[0]["peak_rss_mb"] <= 1024}
    big = pick("h3pipe", 8, "end to end, 4x scope")
    if h and big:
        growth = big[0]["peak_rss_mb"] / h[0]["peak_rss_mb"]
        out["rss_4x_scope"] = {"mb": big[0]["peak_rss_mb"], "growth": round(growth, 2),
                               "ok": big[0]["peak_rss_mb"] <= 1024 and growth <= 1.25}
    out.update(_linear(rows))
    return out


def _linear(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cost linear in pixels and cells: with the pixels fixed, wall = a + b * cells fitted
    over the resolutions, every point within 30% of the fit."""
    runs = [r for r in rows if r["method"] == "h3pipe" and r["config"] ==
            "end to end, default workers"]
    if len(runs) < 3:
        return {}
    x = np.array([r["cells"] for r in runs], dtype=float)
    y = np.array([r["wall_s"] for r in runs])
    b, a = np.polyfit(x, y, 1)
    fit = a + b * x
    dev = (y - fit) / fit
    return {"linear_in_cells": {
        "seconds_fixed": round(float(a), 3), "us_per_cell": round(float(b) * 1e6, 2),
        "deviation": {str(r["resolution"]): round(float(d), 3)
                      for r, d in zip(runs, dev, strict=True)},
        "time_per_cell_us": {str(r["resolution"]): round(r["wall_s"] / r["cells"] * 1e6, 2)
                             for r in runs},
        "ok": bool(np.all(np.abs(dev) <= 0.3))}}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}, GDAL {m['gdal']}: {results['dataset']['tiles']} tiles of "
        f"3600 x 3600, {results['dataset']['scope_pixels'] / 1e6:.0f} M pixels inside the bbox "
        f"{bbox_arg(results['dataset']['bbox'])}. Wall and CPU seconds, peak RSS summed over "
        "all processes of a method; `x h3pipe` is wall time relative to h3pipe at the same "
        "resolution.",
        "",
        "| res | method | configuration | cells | wall s | CPU s | peak RSS MB | cells/s | "
        "M pixels/s | x h3pipe |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(
            f"| {r['resolution'] if r['resolution'] is not None else '-'} | {r['method']} | "
            f"{r['config']}{note} | {r['cells'] or '-'} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} |"
            f" {r['peak_rss_mb']:.0f} | {r['cells_per_s'] or '-'} | "
            f"{r['pixels_per_s'] / 1e6:.1f} | "
            f"{r['wall_vs_h3pipe'] if r['wall_vs_h3pipe'] is not None else '-'} |")
    lines += ["", "Targets (issue 29: by resolution against the best exactextract and the "
              "read floor; memory at resolution 8):", ""]
    for name, t in results["targets"].items():
        detail = ", ".join(f"{k} {v}" for k, v in t.items() if k != "ok")
        lines.append(f"- {name}: {'met' if t['ok'] else 'MISSED'} ({detail})")
    lines += ["", "Agreement with exactextract (every cell; count, sum, mean, min, max, "
              "stdev; 1e-6 relative):", ""]
    for res, a in results["agreement"].items():
        worst = max(a["max_rel_diff"].values())
        lines.append(f"- resolution {res}: {'ok' if a['ok'] else 'FAILED'}, {a['cells']} "
                     f"cells, largest relative difference {worst:.1e}")
    return "\n".join(lines) + "\n"


def update_readme(md: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{md}{end}{tail}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolutions", type=lambda s: [int(v) for v in s.split(",")],
                    default=[5, 6, 7, 8, 9])
    ap.add_argument("--before", metavar="REV_OR_DIR",
                    help="also run h3pipe as it was at this revision (or folder), alternately "
                    "with this tree, on its own project: the before and after of one run")
    ap.add_argument("--quick", action="store_true",
                    help="skip 1-process exactextract, rasterstats and the 4x scope")
    return run(ap.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
