"""Small jobs: the fixed cost of a run, and h3pipe against exactextract at resolution 5.

    python benchmarks/small.py [--repeat 5] [--skip-exactextract]

On the Rwanda stand-in tiles of ``bench.py`` (generated once into benchmarks/data), each
command in its own process through the CLI on the embedded store, times:

* the first run after install: numba's cache of the compiled kernel empty (a fresh
  ``NUMBA_CACHE_DIR``), once;
* a run over a few dozen cells (36 at resolution 7), the median of ``--repeat``; each
  measured run is new (the bbox moves by 1e-5 degree: the same cells, a new run id), so
  it computes and publishes rather than reporting an earlier run; the same with
  ``--workers 2``, which always starts worker processes, for comparison;
* the 'already completed' answer to the same command, and ``h3pipe validate``;
* Rwanda at resolution 5 (a few hundred cells, every pixel of the scope): h3pipe end to
  end with its default workers against exactextract (both strategies, 1 and 2 processes,
  as in ``bench.py``), the median of three each, with every cell checked against
  exactextract.

The h3pipe that runs is byte-compiled first, as pip does when it installs a wheel: with
``PYTHONDONTWRITEBYTECODE`` set (as in CI and dev shells) a working tree has no
``__pycache__``, and every command would compile h3pipe's 120 modules from source, a
fifth of a second that no install pays. One small run is also made with ``-X importtime``
and its import time summed by package (``small_run_imports``): where the rest goes.

Wall and CPU seconds (CPU: the process and all its children) and peak RSS go to
``benchmarks/results/small.json``, with the load average before and after. Floors are
measured beside them, so a reader can tell what is ours and what is the libraries':
importing numpy, rasterio, shapely, h3 and pyarrow; everything a small run loaded before
issue 29 that is not h3pipe's (those, jsonschema, duckdb, typer with pydantic, and the
compiled kernel from numba's cache, both window types where a run loads one); and what a
small run loads now that is not h3pipe's (the first five, pyarrow.parquet, jsonschema,
PyYAML, typer with pydantic, exactextract, h3ronpy and pyproj: no kernel, no pandas).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (the helpers of make bench, beside this file)

# 36 cells at resolution 7, inside the stand-in tiles.
SMALL_BBOX = (29.50, -2.00, 29.63, -1.87)
SMALL_RES = 7
TARGET_S = 0.5
FLOOR = "import numpy, rasterio, shapely, h3, pyarrow"
# Everything a small run through the CLI loaded before issue 29 that is not h3pipe's own:
# the libraries above, the CLI's (typer builds its option parsers with pydantic), the
# project's checks (jsonschema), publication (duckdb) and the compiled kernel out of
# numba's cache (the kernel alone, now that ZonalStats.warm_up no longer loads it).
LIBRARIES = (FLOOR + ", jsonschema, duckdb, typer, typer._adapters, pydantic; "
             "from h3pipe.operations.coverage import polygon_moments as m; import numpy as n; "
             "a = n.array([.5, 1.5, 1.5, .5, .5]); b = n.array([.5, .5, 1.5, 1.5, .5]); "
             "i = n.array([0, 5]); j = n.array([0, 1]); "
             "[m(n.ones((2, 2), t), a, b, i, j, n.ones(2)) for t in (n.float32, n.float64)]")
# What a small run loads now that is not h3pipe's (see windows.kernel_for and
# cli._NoPandas: exactextract computes its moments, and pyarrow never loads pandas).
SMALL_LIBRARIES = (FLOOR + ", pyarrow.parquet, jsonschema, yaml, typer, typer._adapters, "
                   "pydantic, exactextract, h3ronpy, pyproj")


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs)),
            "walls": [round(r["wall_s"], 3) for r in runs], "n": len(runs)}


def _compile_h3pipe(env: dict[str, str]) -> str:
    """Byte-compile the h3pipe package ``python -m h3pipe`` runs here; its folder."""
    where = subprocess.run([sys.executable, "-c", "import h3pipe, os; "
                            "print(os.path.dirname(h3pipe.__file__))"], env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], env=env, check=True,
                   capture_output=True)
    return where


def _imports(cmd: list[str], env: dict[str, str], top: int = 15) -> dict[str, float]:
    """Import seconds (self time, summed by top-level package; h3pipe by subpackage) of one
    run of ``cmd`` under ``-X importtime``, the ``top`` largest and the total."""
    done = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, check=True,
                          capture_output=True, text=True)
    by = collections.Counter()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line[len("import time:"):].split("|")
        parts = name.strip().split(".")
        by[".".join(parts[:2]) if parts[0] == "h3pipe" else parts[0]] += int(own) / 1e6
    out = {k: round(v, 3) for k, v in by.most_common(top)}
    out["total"] = round(sum(by.values()), 3)
    return out


def _shifted(i: int) -> str:
    d = (i + 1) * 1e-5
    x0, y0, x1, y1 = SMALL_BBOX
    return f"{x0 + d:.5f},{y0:.5f},{x1 + d:.5f},{y1:.5f}"


def run(args: argparse.Namespace) -> int:
    data = HERE / "data"
    work = HERE / "results" / "tmp-small"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"small: tiles in {data} (generated once)", flush=True)
    tiles = bench.make_tiles(data / "cop-dem-glo-30", bench.BBOX)
    tile_list = work / "tiles.txt"
    tile_list.write_text("\n".join(tiles))
    proj = bench.make_project(work, data / "cop-dem-glo-30")
    # ``python -m h3pipe`` rather than the installed script, so PYTHONPATH may point at a
    # working tree to compare.
    cli = [sys.executable, "-m", "h3pipe", "--project", str(proj), "-q"]
    small = ["run", "bench", "-r", str(SMALL_RES)]
    # Every h3pipe process here shares one numba cache, empty at first: the first run
    # after install.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(work / "numba-cache")}
    print(f"small: byte-compiled {_compile_h3pipe(env)}", flush=True)
    load_before = os.getloadavg()
    results: dict[str, Any] = {}

    def say(name: str, m: dict[str, Any]) -> None:
        results[name] = m
        print(f"  {name:38s} {m['wall_s']:7.3f} s wall {m['cpu_s']:7.3f} s cpu "
              f"{m['peak_rss_mb']:6.0f} MB", flush=True)

    say("first_run_cold_numba_cache", _median([bench.measure(
        [*cli, *small, "--bbox", _shifted(-1)], env=env)]))
    bench.measure([*cli, *small, "--bbox", _shifted(-2)], env=env)  # untimed: warm the rest
    n = args.repeat
    say("floor_imports", _median([bench.measure([sys.executable, "-c", FLOOR])
                                  for _ in range(n)]))
    say("floor_libraries_and_kernel", _median([bench.measure(
        [sys.executable, "-c", LIBRARIES], env=env) for _ in range(n)]))
    say("floor_libraries_of_a_small_run", _median([bench.measure(
        [sys.executable, "-c", SMALL_LIBRARIES], env=env) for _ in range(n)]))
    default, pool = [], []
    for i in range(n):  # interleaved, so both see the same load
        default.append(bench.measure([*cli, *small, "--bbox", _shifted(2 * i)], env=env))
        pool.append(bench.measure([*cli, *small, "--bbox", _shifted(2 * i + 1),
                                   "--workers", "2"], env=env))
    say("small_run", _median(default))
    say("small_run_workers_2", _median(pool))
    imports = _imports([*cli, *small, "--bbox", _shifted(2 * n)], env)
    print(f"  small run imports: {imports}", flush=True)
    say("small_run_already_completed", _median([bench.measure(
        [*cli, *small, "--bbox", _shifted(0)], env=env) for _ in range(n)]))
    say("validate", _median([bench.measure([*cli, "validate"], env=env) for _ in range(n)]))
    cells = len(bench.cells_for(SMALL_BBOX, SMALL_RES))

    res = 5
    res5: dict[str, Any] = {}
    agree = None
    if not args.skip_exactextract:
        cells5 = bench.cells_for(bench.BBOX, res)
        np.save(work / f"cells_{res}.npy", cells5)
        print(f"resolution {res}: {len(cells5)} cells", flush=True)
        scope = ["run", "bench", "--bbox", bench.bbox_arg(bench.BBOX), "-r", str(res)]
        bench.measure([*cli, *scope], env=env)  # untimed: the file cache
        configs = [("h3pipe", "end to end, default workers")] + [
            ("exactextract", f"{s}, {p} proc") for s in ("feature-sequential",
                                                         "raster-sequential") for p in (1, 2)]
        runs: dict[str, list[dict[str, float]]] = {f"{m}: {c}": [] for m, c in configs}
        reference = work / f"ee_{res}.parquet"
        for _ in range(3):
            for method, config in configs:
                if method == "h3pipe":
                    cmd = [*cli, *scope, "--force"]
                else:
                    strategy, procs = config.split(", ")
                    cmd = [sys.executable, str(HERE / "methods.py"), "exactextract", "--tiles",
                           str(tile_list), "--cells", str(work / f"cells_{res}.npy"), "--out",
                           str(reference), "--strategy", strategy, "--procs",
                           procs.split()[0]]
                runs[f"{method}: {config}"].append(bench.measure(cmd, env=env))
        for name, r in runs.items():
            res5[name] = _median(r)
            print(f"  res {res} {name:44s} {res5[name]['wall_s']:7.3f} s wall "
                  f"{res5[name]['cpu_s']:7.3f} s cpu", flush=True)
        ours = work / f"h3pipe_{res}.parquet"
        bench.measure([*cli, "export", "bench", "-r", str(res), "-o", str(ours)], env=env)
        agree = bench.agreement(ours, reference)
        print(f"  agreement with exactextract: {agree['ok']}", flush=True)

    targets: dict[str, Any] = {"small_run": {
        "wall_s": results["small_run"]["wall_s"], "target_s": TARGET_S,
        "ok": results["small_run"]["wall_s"] <= TARGET_S}}
    if res5:
        h = res5["h3pipe: end to end, default workers"]["wall_s"]
        best_name, best = min(((k, v["wall_s"]) for k, v in res5.items()
                               if k.startswith("exactextract")), key=lambda kv: kv[1])
        targets["res5_ahead_of_exactextract"] = {
            "h3pipe_s": h, "best_exactextract_s": best, "best": best_name,
            "ratio": round(h / best, 2), "ok": h < best}
    out = {"machine": bench.machine(), "small_scope": {
        "bbox": SMALL_BBOX, "resolution": SMALL_RES, "cells": cells,
        "note": "each measured run is new: the bbox moves by 1e-5 degree per run"},
        "repeat": n, "load_average": {"before": [round(x, 2) for x in load_before],
                                      "after": [round(x, 2) for x in os.getloadavg()]},
        "runs": results, "small_run_imports": imports, "resolution_5": res5,
        "agreement_5": agree, "targets": targets}
    path = HERE / "results" / "small.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"small: wrote {path}")
    for name, t in targets.items():
        print(f"  {name}: {'met' if t['ok'] else 'MISSED'} "
              f"({', '.join(f'{k} {v}' for k, v in t.items() if k != 'ok')})")
    return 0 if agree is None or agree["ok"] else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per median (default 5)")
    ap.add_argument("--skip-exactextract", action="store_true",
                    help="only the fixed costs: no resolution 5 comparison")
    return run(ap.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
