"""``make bench-serve``: ``h3pipe serve`` under load (issue 28).

    python benchmarks/serve.py [--clients 100] [--seconds 20] [--repeat 10]

A real ``h3pipe serve --workers 2`` process on a loopback port, over a project on the Rwanda
stand-in tiles of ``bench.py`` (generated once into benchmarks/data), the embedded store:

1. **a small run over HTTP**: a run over a few dozen cells (36 at resolution 7) submitted by
   ``POST /processes/bench/execution`` to the warm server, the time until ``GET /jobs/{id}``
   says ``successful`` (polled every 5 ms), the median of ``--repeat``; each run is new (the
   bbox moves by 1e-5 degree: the same cells, a new run id). Target: <= 0.3 s.
2. **load**: ``--clients`` clients (asyncio tasks of one client process, each with its own
   connection) poll a job's status and the map's cells of a published dataset (about 8,000
   cells in view), a round of both every ``--every`` seconds (default 1, as a dashboard or
   an OGC client polls; 0 for no pause: a saturation test), for ``--seconds``, while two
   runs (resolution 9 over two halves of the tiles) execute on the server's two workers.
   Latency per endpoint (p50, p95, p99, max), requests and errors (any status but 200, or
   a transport error). Target: p99 <= 100 ms for status, no errors.
3. **the same results as the CLI**: the two runs' datasets, downloaded as GeoParquet from
   ``/jobs/{id}/results``, compared cell by cell with the same runs made by ``h3pipe run``
   on a second store: identical, bit for bit.

The client shares the machine's two cores with the server and its workers, so the
latencies include the client's own scheduling; ``uptime`` is recorded at the start and end.
Results go to ``benchmarks/results/serve.json`` and ``serve.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (the helpers of make bench, beside this file)

SMALL_BBOX = (29.50, -2.00, 29.63, -1.87)  # 36 cells at resolution 7 (as small.py)
SMALL_RES = 7
# Two runs at resolution 9 while the clients poll: the west and east halves of one tile.
LOAD_BBOXES = ((29.0, -2.0, 29.5, -1.5), (29.5, -2.0, 30.0, -1.5))
LOAD_RES = 9
TILES_BBOX = (29.0, -2.0, 30.0, -1.5)
MAP_RES = 8
STATUS_P99_MS = 100.0
SMALL_TARGET_S = 0.3


def start(project: Path, store: Path, workers: int = 2) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "h3pipe", "-p", str(project), "--store", str(store), "serve",
         "--port", "0", "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            match = re.search(r"on (http://\S+?)/? ", line)
            if match and not found:
                found.append(match.group(1).rstrip("/"))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60):
        process.kill()
        raise SystemExit("h3pipe serve did not start within 60 s")
    return process, found[0]


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def execute(client: httpx.Client, bbox: tuple[float, ...], res: int) -> str:
    answer = client.post("/processes/bench/execution",
                         json={"inputs": {"bbox": list(bbox), "resolution": res}},
                         headers={"Prefer": "respond-async"})
    answer.raise_for_status()
    return answer.json()["jobID"]


def finish(client: httpx.Client, job: str, deadline: float = 600, every: float = 0.005
           ) -> dict[str, Any]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        status = client.get(f"/jobs/{job}").json()
        if status["status"] in ("successful", "failed", "dismissed"):
            return status
        time.sleep(every)
    raise SystemExit(f"job {job} did not finish within {deadline} s")


def small_runs(client: httpx.Client, repeat: int) -> dict[str, Any]:
    seconds = []
    for i in range(repeat + 1):  # the first warms the server's own prepare
        w, s, e, n = SMALL_BBOX
        bbox = (w + 1e-5 * i, s, e + 1e-5 * i, n)
        t0 = time.perf_counter()
        status = finish(client, execute(client, bbox, SMALL_RES))
        took = time.perf_counter() - t0
        if status["status"] != "successful":
            raise SystemExit(f"small run failed: {status}")
        if i:
            seconds.append(took)
    return {"runs": repeat, "median_s": round(statistics.median(seconds), 3),
            "max_s": round(max(seconds), 3), "min_s": round(min(seconds), 3),
            "target_s": SMALL_TARGET_S, "met": statistics.median(seconds) <= SMALL_TARGET_S}


async def _client(client: httpx.AsyncClient, paths: list[str], until: float, every: float,
                  phase: float, record: dict[str, list[float]], errors: dict[str, int]
                  ) -> None:
    """One polling client: its requests one after another, then again ``every`` seconds
    after the last round began (at once, if that round took longer)."""
    await asyncio.sleep(phase)
    while time.monotonic() < until:
        began = time.monotonic()
        for path in paths:
            kind = path.split("/")[1]
            t0 = time.perf_counter()
            try:
                answer = await client.get(path)
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            record[kind].append((time.perf_counter() - t0) * 1000)
            errors[kind] += not ok
        await asyncio.sleep(max(0.0, every - (time.monotonic() - began)))


def load(url: str, clients: int, seconds: float, every: float, job: str, map_path: str
         ) -> dict[str, Any]:
    record: dict[str, list[float]] = {"jobs": [], "maps": []}
    errors = {"jobs": 0, "maps": 0}
    # Half the clients ask for status then the map, the other half the map then status;
    # their rounds start spread over the first interval, as independent pollers' would.
    mixes = ([f"/jobs/{job}", map_path], [map_path, f"/jobs/{job}"])

    async def everyone() -> None:
        # Every client made and connected before the clock starts: making an httpx client
        # costs its process milliseconds of CPU (an SSL context), which would otherwise
        # show as the server's latency in the first second.
        made = [httpx.AsyncClient(base_url=url, timeout=30) for _ in range(clients)]
        await asyncio.gather(*(c.get("/conformance") for c in made))
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client(made[i], mixes[i % 2], until, every,
                                       every * i / clients, record, errors)
                               for i in range(clients)))
        await asyncio.gather(*(c.aclose() for c in made))

    asyncio.run(everyone())
    return {kind: _latency(record[kind], errors[kind]) for kind in record}


def _latency(ms: list[float], errors: int) -> dict[str, Any]:
    ms = sorted(ms)

    def q(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p * len(ms)))], 1) if ms else 0.0

    return {"requests": len(ms), "errors": errors, "p50_ms": q(0.50), "p95_ms": q(0.95),
            "p99_ms": q(0.99), "max_ms": round(ms[-1], 1) if ms else 0.0}


def same_as_cli(client: httpx.Client, jobs: list[str], project: Path, work: Path
                ) -> dict[str, Any]:
    """Each job's GeoParquet download against the same run made by the CLI on another
    store, cell by cell."""
    import pyarrow.parquet as pq

    store = work / "cli-store"
    differences = 0
    cells = 0
    for job, bbox in zip(jobs, LOAD_BBOXES, strict=True):
        got = work / f"{job}.parquet"
        got.write_bytes(client.get(f"/jobs/{job}/results/geoparquet").content)
        subprocess.run([sys.executable, "-m", "h3pipe", "-q", "-p", str(project), "--store",
                        str(store), "run", "bench", "--bbox", bench.bbox_arg(bbox), "-r",
                        str(LOAD_RES)], check=True, capture_output=True)
        want = work / f"{job}-cli.parquet"
        subprocess.run([sys.executable, "-m", "h3pipe", "-q", "-p", str(project), "--store",
                        str(store), "export", "bench", "--bbox", bench.bbox_arg(bbox), "-r",
                        str(LOAD_RES), "-o", str(want)], check=True, capture_output=True)
        theirs = pq.read_table(want).sort_by("h3_index").to_pydict()  # no geometry
        ours = pq.read_table(got, columns=list(theirs)).sort_by("h3_index").to_pydict()
        cells += len(theirs["h3_index"])
        differences += sum(ours.get(k) != v for k, v in theirs.items())
    return {"cells": cells, "columns_differing": differences, "identical": differences == 0}


def map_path(client: httpx.Client) -> tuple[str, str]:
    """The map's view of a published dataset of some size: resolution 8 over the tiles'
    box (about 8,000 cells), the whole of it in view."""
    job = execute(client, TILES_BBOX, MAP_RES)
    finish(client, job)
    scopes = client.get("/maps/bench").json()["scopes"]
    key = next(s["scope"] for s in scopes if MAP_RES in s["resolutions"])
    return (f"/maps/bench/cells?bbox={bench.bbox_arg(TILES_BBOX)}&scope={key}"
            f"&resolution={MAP_RES}&column=mean"), job


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(args: argparse.Namespace) -> dict[str, Any]:
    tiles = HERE / "data" / "cop-dem-glo-30"
    bench.make_tiles(tiles, TILES_BBOX)
    work = Path(tempfile.mkdtemp(prefix="h3pipe-bench-serve-"))
    try:
        project = bench.make_project(work, tiles)
        process, url = start(project, work / "store")
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                results: dict[str, Any] = {"machine": bench.machine(), "uptime": [uptime()]}
                results["small_run"] = small_runs(client, args.repeat)
                dataset_map, map_job = map_path(client)
                # The same clients with no run executing: what the runs cost the others.
                client.get(dataset_map).raise_for_status()
                results["idle"] = load(url, args.clients, args.seconds, args.every, map_job,
                                       dataset_map)
                jobs = [execute(client, b, LOAD_RES) for b in LOAD_BBOXES]
                # The view and the status once before the clients come: the first reader
                # of a result pays for reading it, as the first viewer of a map would.
                client.get(dataset_map).raise_for_status()
                client.get(f"/jobs/{jobs[0]}").raise_for_status()
                results["load"] = load(url, args.clients, args.seconds, args.every, jobs[0],
                                       dataset_map)
                results["load"] |= {"clients": args.clients, "seconds": args.seconds,
                                    "every_s": args.every}
                results["load_runs"] = [finish(client, j)["status"] for j in jobs]
                results["same_as_cli"] = same_as_cli(client, jobs, project, work)
                results["uptime"].append(uptime())
        finally:
            stop(process)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    status = results["load"]["jobs"]
    results["targets"] = {
        "small_run_s": results["small_run"]["met"],
        "status_p99_ms": status["p99_ms"] <= STATUS_P99_MS,
        "no_errors": not any(v["errors"] for phase in ("idle", "load")
                             for v in results[phase].values() if isinstance(v, dict)),
        "same_as_cli": results["same_as_cli"]["identical"]}
    return results


def markdown(r: dict[str, Any]) -> str:
    small, lo = r["small_run"], r["load"]
    lines = [f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; "
             f"load at start: {r['uptime'][0].split('load average:')[-1].strip()}", "",
             "| what | measured | target | met |", "|---|---|---|---|",
             f"| small run over HTTP (36 cells, res 7), POST to successful | median "
             f"{small['median_s']} s (min {small['min_s']}, max {small['max_s']}, "
             f"{small['runs']} runs) | <= {SMALL_TARGET_S} s | {_yes(small['met'])} |"]
    for phase, when in (("idle", "no run executing"),
                        ("load", f"while two res {LOAD_RES} runs execute")):
        for kind, name in (("jobs", "job status"), ("maps", "map cells")):
            v = r[phase][kind]
            judged = kind == "jobs" and phase == "load"
            target = f"<= {STATUS_P99_MS:g} ms" if judged else "-"
            met = _yes(v["p99_ms"] <= STATUS_P99_MS) if judged else "-"
            lines.append(
                f"| {name}, {lo['clients']} clients each polling status and map every "
                f"{lo['every_s']:g} s for {lo['seconds']:g} s, {when} | p50 {v['p50_ms']} "
                f"ms, p95 {v['p95_ms']} ms, p99 {v['p99_ms']} ms, max {v['max_ms']} ms; "
                f"{v['requests']} requests, {v['errors']} errors | {target} | {met} |")
    same = r["same_as_cli"]
    lines.append(f"| the two runs' GeoParquet against the same CLI runs | "
                 f"{same['cells']} cells, {same['columns_differing']} columns differing | "
                 f"identical | {_yes(same['identical'])} |")
    return "\n".join(lines) + "\n"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--every", type=float, default=1.0,
                    help="seconds between a client's rounds (status and map); 0: no pause")
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    os.environ.pop("H3PIPE_QUEUE", None)
    results = run(args)
    out = HERE / "results"
    (out / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (out / "serve.md").write_text("# h3pipe serve under load (make bench-serve)\n\n" + md)
    print(md)
    return 0 if all(results["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
