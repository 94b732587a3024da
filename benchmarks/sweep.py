"""A scenario sweep as one run, against the same work as 39 and as 312 separate runs.

    python benchmarks/sweep.py [--single-band N]

On the FATHOM-like stand-in (39 scenarios x 8 return periods on Rwanda's 6 tiles, from
``h3pipe.demo.fathom``) and the stand-in buildings (``h3pipe.demo.flood``), both generated
once into benchmarks/data, building flood exposure over Rwanda at resolution 7, each run in
its own process through the CLI on the embedded store (the default workers):

* ``one_run``: pipelines/building_flood_exposure_fathom.yaml, every scenario and return
  period in one run;
* ``39_runs``: the same pipeline restricted by ``matrix:`` to one scenario, 39 pipelines
  (a dataset each), run one after another: what a sweep took before, with one source of
  8 bands;
* ``312_runs``: one single-band source (``band: k`` of one scenario's files) and one
  pipeline per scenario and return period, run one after another; ``--single-band N``
  runs only every (312 // N)-th of them and scales the time up (the record says so).

Every result of the separate runs is compared with the one run's (same cells, same
numbers, exactly). Wall and CPU seconds and peak RSS go to
``benchmarks/results/sweep.json``; the targets: the one run takes at most a fifth of the
39 runs' time, and peaks at most at 1 GB summed over its processes (issue 29; how well
``h3pipe plan`` foresees that peak is ``benchmarks/memory.py``'s).
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

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (the helpers of make bench, beside this file)

PIPELINE = "building_flood_exposure_fathom"
TARGET_RATIO = 5.0
ONE_RUN_MB = 1000.0  # issue 29: the one run's peak, summed over its processes


def _project(work: Path, fathom: Path, buildings: Path) -> Path:
    proj = work / "project"
    (proj / "sources").mkdir(parents=True)
    (proj / "pipelines").mkdir(parents=True)
    source = (ROOT / "sources" / "fathom-flood.yaml").read_text()
    (proj / "sources" / "fathom-flood.yaml").write_text(source.replace(
        "${FATHOM:-.h3pipe/demo/fathom}", str(fathom)))
    (proj / "sources" / "buildings.yaml").write_text(
        f"id: buildings\nkind: vector\ntheme: infrastructure\npath: '{buildings}'\n")
    shutil.copy(ROOT / "pipelines" / f"{PIPELINE}.yaml", proj / "pipelines")
    return proj


def _single_scenario(proj: Path, scenarios: list[tuple[str, str, str | None]]) -> list[str]:
    """One pipeline per scenario (its matrix fixed), each publishing its own dataset."""
    text = (ROOT / "pipelines" / f"{PIPELINE}.yaml").read_text()
    head, steps = text.split("matrix:", 1)
    steps = steps[steps.index("steps:"):]
    ids = []
    for k, (kind, year, ssp) in enumerate(scenarios):
        pid = f"sc{k:02d}"
        matrix = f"matrix: {{flood_type: [{kind}], year: [{year}]" + \
            (f", ssp: [{ssp}]}}\n" if ssp else "}\n")
        body = head.replace(f"id: {PIPELINE}", f"id: {pid}").replace(
            f"dataset: {PIPELINE}", f"dataset: {pid}")
        (proj / "pipelines" / f"{pid}.yaml").write_text(body + matrix + steps)
        ids.append(pid)
    return ids


def _single_band(proj: Path, fathom: Path, scenarios: list[tuple[str, str, str | None]],
                 bands: tuple[int, ...], every: int) -> list[tuple[str, str, str]]:
    """One single-band source and pipeline per scenario and return period (every
    ``every``-th of them): the flood-exposure pipeline on one band, no sweep."""
    from h3pipe.demo.fathom import scenario_id

    text = (ROOT / "pipelines" / f"{PIPELINE}.yaml").read_text()
    head, steps = text.split("matrix:", 1)
    steps = steps[steps.index("steps:"):]
    out = []
    n = 0
    for kind, year, ssp in scenarios:
        sid = scenario_id(kind, year, ssp)
        for b, rp in enumerate(bands, 1):
            n += 1
            if (n - 1) % every:
                continue
            pid = f"sb{n:03d}"
            (proj / "sources" / f"{pid}.yaml").write_text(
                f"id: {pid}\nkind: raster\ntheme: hazard\nband: {b}\n"
                f"path: '{fathom}/{kind}/{sid}/*.tif'\n")
            body = head.replace(f"id: {PIPELINE}", f"id: {pid}").replace(
                f"dataset: {PIPELINE}", f"dataset: {pid}")
            (proj / "pipelines" / f"{pid}.yaml").write_text(
                body + steps.replace("source: fathom-flood", f"source: {pid}"))
            out.append((pid, sid, f"rp{rp}"))
    return out


def _result(proj: Path, dataset: str) -> dict[tuple[str, str | None], dict[str, Any]]:
    """A dataset's current result in the embedded store: rows by (cell, scenario)."""
    files = sorted((proj / ".h3pipe" / "results" / dataset).rglob("*.parquet"))
    return {(r["h3_index"], r.get("scenario")): r for r in pq.read_table(files[-1]).to_pylist()}


def _serial(cli: list[str], pipelines: list[str]) -> dict[str, float]:
    """The pipelines run one after another: summed wall and CPU, the largest peak RSS."""
    total = {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0}
    for pid in pipelines:
        m = bench.measure([*cli, "run", pid, "--iso3", "RWA"])
        total["wall_s"] += m["wall_s"]
        total["cpu_s"] += m["cpu_s"]
        total["peak_rss_mb"] = max(total["peak_rss_mb"], m["peak_rss_mb"])
    return {k: round(v, 2) for k, v in total.items()}


def run(args: argparse.Namespace) -> int:
    from h3pipe.demo import fathom as demo_fathom
    from h3pipe.demo import flood as demo_flood

    data = HERE / "data"
    fathom_dir = data / "fathom"
    t0 = time.perf_counter()
    demo_fathom.generate(fathom_dir)
    generated = time.perf_counter() - t0
    buildings = demo_flood.generate(data / "flood")[2]
    work = HERE / "results" / "tmp-sweep"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    proj = _project(work, fathom_dir, buildings)
    scenarios = demo_fathom.scenarios()
    single = _single_scenario(proj, scenarios)
    every = max(1, (len(scenarios) * 8) // args.single_band) if args.single_band else 1
    bands = _single_band(proj, fathom_dir, scenarios, demo_fathom.RETURN_PERIODS, every)
    cli = [sys.executable, "-m", "h3pipe", "--project", str(proj), "-q"]
    print(f"sweep: stand-in in {fathom_dir} ({generated:.1f} s to check or write), "
          f"{len(scenarios)} scenarios, {len(bands)} single-band runs", flush=True)
    results: dict[str, Any] = {}
    results["one_run"] = {k: round(v, 2) for k, v in bench.measure(
        [*cli, "run", PIPELINE, "--iso3", "RWA"]).items()}
    print(f"  one run          {results['one_run']}", flush=True)
    results["39_runs"] = _serial(cli, single)
    print(f"  39 runs          {results['39_runs']}", flush=True)
    measured = _serial(cli, [pid for pid, _, _ in bands])
    scale = len(scenarios) * 8 / len(bands)
    results["312_runs"] = {**{k: round(v * scale, 2) if k != "peak_rss_mb" else v
                              for k, v in measured.items()},
                           "runs_measured": len(bands), "scaled_by": round(scale, 2)}
    print(f"  312 runs         {results['312_runs']}", flush=True)
    agree = _agreement(proj, scenarios, single, bands)
    print(f"  agreement: {agree}", flush=True)
    one = results["one_run"]["wall_s"]
    ratio = results["39_runs"]["wall_s"] / one
    targets = {"one_run_at_most_a_fifth_of_39_runs": {
        "one_run_s": one, "39_runs_s": results["39_runs"]["wall_s"], "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO, "ok": ratio >= TARGET_RATIO},
        "vs_312_runs": {"ratio": round(results["312_runs"]["wall_s"] / one, 2)},
        "one_run_peak_at_most_1_gb": {
            "peak_rss_mb": results["one_run"]["peak_rss_mb"], "target_mb": ONE_RUN_MB,
            "ok": results["one_run"]["peak_rss_mb"] <= ONE_RUN_MB}}
    out = {"machine": bench.machine(), "scope": "RWA, resolution 7",
           "work": "building flood exposure, 39 scenarios x 8 return periods",
           "runs": results, "agreement": agree, "targets": targets}
    path = HERE / "results" / "sweep.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"sweep: wrote {path}; one run is {ratio:.1f}x faster than 39 runs "
          f"({'met' if ratio >= TARGET_RATIO else 'MISSED'}: at least {TARGET_RATIO:g}x); "
          f"its peak {results['one_run']['peak_rss_mb']:,.0f} MB "
          f"({'met' if targets['one_run_peak_at_most_1_gb']['ok'] else 'MISSED'}: at most "
          f"{ONE_RUN_MB:,.0f} MB)")
    return 0 if agree["ok"] else 1


def _agreement(proj: Path, scenarios: list[tuple[str, str, str | None]], single: list[str],
               bands: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The separate runs' numbers against the one run's, cell by cell."""
    from h3pipe.demo.fathom import scenario_id

    whole = _result(proj, PIPELINE)
    bad = []
    for pid in single:  # a single-scenario run: exactly the one run's rows of its scenario
        alone = _result(proj, pid)
        if any(whole.get(key) != {**row, "resolution": whole.get(key, {}).get("resolution")}
               for key, row in alone.items()):
            bad.append(pid)
    stats = ("flooded_buildings", "share_flooded", "mean_depth_when_flooded_m")
    for pid, sid, rp in bands:  # a single-band run: the one run's columns of its band
        for (cell, _), row in _result(proj, pid).items():
            mine = whole.get((cell, sid))
            if mine is None or mine["buildings"] != row["buildings"] or any(
                    mine[f"{rp}_{c}"] != row[c] for c in stats):
                bad.append(pid)
                break
    counts = {len([k for k in whole if k[1] == scenario_id(*sc)]) for sc in scenarios}
    return {"ok": not bad and len(counts) == 1, "compared_runs": len(single) + len(bands),
            "rows": len(whole), "differ": bad[:10]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--single-band", type=int, default=0, metavar="N",
                    help="run only about N of the 312 single-band runs and scale the time")
    return run(ap.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
