"""``python benchmarks/queue_backend.py``: the queue backend (Celery on RabbitMQ,
``h3pipe worker``) against the local process pool, on the PostgreSQL store (issue 13, item 7).

1. Per-task overhead. A small synthetic raster made here (0.1 x 0.1 degree, 1 arcsecond)
   at resolution 9, about 1,200 cells, cut into about 400 tasks of 3 cells by
   ``--batch-size 3`` and into 8 tasks by the default batch size; run with the local pool
   (``--workers 2``) and through the queue with one ``h3pipe worker -c 2``, both on the same
   PostgreSQL store so that only the backend differs. The worker is started before any
   timing and warmed by an untimed run; every timed run is ``--force``, interleaved, the
   median of ``--repeats``. Per task: the wall difference over the tasks (the naive
   figure), and the slope between the 400-task and the 8-task runs (which leaves out
   each backend's fixed cost: process start, submission, the follower's polling).
2. Scale-out with I/O-bound work: the remote-read setup of ``remote.py`` (the six Rwanda
   stand-in tiles served by ``tests/tileserver.py`` with 50 ms added to every request,
   read through a static STAC catalog) at resolution 8, through the queue with 1, 2, 4
   and 8 worker processes (one ``h3pipe worker -c N``), and with the local pool of 2
   processes for reference. A worker keeps the bytes it downloaded (96 MB per process),
   so a warm worker would not read the tiles again: before every timed run the worker is
   started afresh and warmed on the small raster of part 1 (kernel loaded, store
   connected, tile caches empty), as a new local pool is. Every run's export must be
   identical, bit for bit, to the local pool's.

The worker processes are started in their own process group on a queue name used by
nobody else (``H3PIPE_QUEUE_NAME``, random per invocation) and killed before this exits,
whatever happens; the queue is deleted from the broker at the end. The database is dropped
and created afresh. Writes ``benchmarks/results/queue.json`` and prints a table.

    python benchmarks/queue_backend.py [--repeats 3] [--scale-repeats 2] [--pg URL] [--amqp URL]
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is named like the standard library's queue module, which concurrent.futures,
# logging and kombu import: take the real one into sys.modules before benchmarks/ (this
# script's folder, first on sys.path) can shadow it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
importlib.import_module("queue")
sys.path[:0] = [str(HERE), str(ROOT)]

import bench  # noqa: E402  (measure, make_tiles, make_project, machine, ...)
import numpy as np  # noqa: E402
import remote  # noqa: E402  (stac_project, blocks_in_scope)
import store  # noqa: E402  (fresh_database, server_cpu, same_bits)

from tests.tileserver import TileServer  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/h3pipe_bench_queue"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"
LATENCY = 0.05
# Part 1: the small raster and its scope.
TINY_BOX = (29.40, -2.10, 29.50, -2.00)  # the raster's extent
TINY_SCOPE = "29.401,-2.099,29.499,-2.001"
TINY_RES = 9
TINY_BATCH = 3
# Part 2: Rwanda at resolution 8, as in remote.py.
SCALE_RES = 8
PROCESSES = (1, 2, 4, 8)
WORKER_GRACE = 5.0


# -- worker processes ---------------------------------------------------------------------

_STARTED: list[subprocess.Popen[bytes]] = []


def _kill_group(proc: subprocess.Popen[bytes], grace: float = WORKER_GRACE + 10) -> None:
    """SIGTERM the worker's process group (its Celery parent and pool children), then
    SIGKILL whatever is left of the group after ``grace`` seconds."""
    pgid = proc.pid  # started with start_new_session: its own group, led by it
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc in _STARTED:
        _STARTED.remove(proc)


def _kill_all() -> None:
    for proc in list(_STARTED):
        _kill_group(proc)


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(f"queue bench: stopped by signal {signum}")


class Worker:
    """One ``h3pipe worker -c N`` in its own process group; a context manager."""

    def __init__(self, cli: list[str], amqp: str, concurrency: int, env: dict[str, str],
                 log: Path) -> None:
        self.cmd = [*cli, "worker", "--queue", amqp, "-c", str(concurrency), "--grace",
                    str(WORKER_GRACE)]
        self.env, self.log, self.concurrency = env, log, concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        _STARTED.append(self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _kill_group(self.proc)

    def check(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"queue bench: the worker exited ({self.proc.returncode}); see "
                             f"{self.log}:\n{self.log.read_text()[-2000:]}")

    def cpu_s(self) -> float:
        """CPU seconds of the worker's processes alive now (its pool children persist)."""
        import psutil

        assert self.proc is not None
        total = 0.0
        try:
            ps = psutil.Process(self.proc.pid)
            for p in [ps, *ps.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total


# A known race in h3pipe (see the README): two workers creating a step's output table at
# once, one fails with 'type ... already exists' and the run fails. Such a run is counted
# and made again, on fresh workers.
RACE = "already exists"
ATTEMPTS = 3


def attempt(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, float] | None, str]:
    """``bench.measure``, or None and the error when the run failed on the race above."""
    try:
        return bench.measure(cmd, env=env), ""
    except SystemExit as exc:
        text = str(exc)
        if RACE not in text:
            raise
        return None, text.strip().splitlines()[-1][:400]


# -- data and projects --------------------------------------------------------------------

def make_tiny_raster(folder: Path) -> Path:
    """A 360 x 360 float32 GeoTIFF at 1 arcsecond over TINY_BOX: smooth terrain, noise and
    a few voids, so that every statistic has something to do."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.tif"
    n = 360
    rng = np.random.default_rng(13)
    y, x = np.mgrid[0:n, 0:n] / n
    data = (1500 + 300 * np.sin(6 * x) * np.cos(4 * y) + rng.normal(0, 5, (n, n)))
    data = data.astype("float32")
    data[rng.random((n, n)) < 0.002] = -32767
    profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "float32",
               "crs": "EPSG:4326", "transform": from_origin(TINY_BOX[0], TINY_BOX[3],
                                                             1 / 3600, 1 / 3600),
               "nodata": -32767, "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


def add_tiny(proj: Path, tiny: Path) -> None:
    """The small raster as source 'tiny' and pipeline 'tiny' of ``proj``."""
    stats = ", ".join(bench.STATS)
    (proj / "sources" / "tiny.yaml").write_text(
        f"id: tiny\nkind: raster\ntheme: terrain\nnodata: -32767\npath: '{tiny}'\n")
    (proj / "pipelines" / "tiny.yaml").write_text(
        "id: tiny\noutput: {dataset: tiny, theme: terrain}\n"
        "steps:\n  - id: stats\n    operation: zonal_stats\n    source: tiny\n"
        f"    params: {{stats: [{stats}]}}\n")


# -- what the store recorded --------------------------------------------------------------

def latest_run(pg: str, pipeline: str) -> dict[str, Any]:
    """The newest run of ``pipeline``: its row, its tasks, and from its events how long
    the publication took (last stage closed -> run completed)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(pg, row_factory=dict_row, options="-c search_path=h3pipe") as conn:
        run = conn.execute("SELECT run_id, status, queue, started_at, finished_at, cells "
                           "FROM runs WHERE pipeline_id = %s ORDER BY started_at DESC "
                           "LIMIT 1", (pipeline,)).fetchone()
        assert run is not None, f"no run of {pipeline}"
        tasks = conn.execute("SELECT count(*) AS n, sum(seconds) AS seconds, "
                             "sum(rows_out) AS rows, min(started_at) AS first, "
                             "max(finished_at) AS last, count(DISTINCT worker) AS workers "
                             "FROM tasks WHERE run_id = %s AND status = 'completed'",
                             (run["run_id"],)).fetchone()
        events = conn.execute("SELECT at, kind, status FROM events WHERE run_id = %s AND "
                              "((kind = 'stage' AND status = 'completed') OR (kind = 'run' "
                              "AND status = 'completed')) ORDER BY id", (run["run_id"],)
                              ).fetchall()
    assert run["status"] == "completed", run
    from datetime import datetime

    def t(s: str | None) -> float | None:
        return datetime.fromisoformat(s).timestamp() if s else None

    started, finished = t(run["started_at"]), t(run["finished_at"])
    stage_done = [t(e["at"]) for e in events if e["kind"] == "stage"]
    run_done = [t(e["at"]) for e in events if e["kind"] == "run"]
    out = {"run_id": run["run_id"], "tasks": int(tasks["n"]), "rows": int(tasks["rows"] or 0),
           "task_seconds_sum": round(float(tasks["seconds"] or 0), 3),
           "store_wall_s": round(finished - started, 3) if started and finished else None,
           "workers": int(tasks["workers"]),
           "tasks_span_s": round(t(tasks["last"]) - t(tasks["first"]), 3)
           if tasks["first"] and tasks["last"] else None}
    if stage_done and run_done and run_done[-1] is not None and stage_done[-1] is not None:
        out["publish_s"] = round(run_done[-1] - stage_done[-1], 3)
    return out


def export(cli: list[str], env: dict[str, str], dataset: str, run_id: str, out: Path) -> Any:
    import pyarrow.parquet as pq

    subprocess.run([*cli, "export", dataset, "--run", run_id, "-o", str(out)], check=True,
                   capture_output=True, env=env)
    return pq.read_table(out).sort_by("h3_index")


def batch_size_difference(a: Any, b: Any) -> dict[str, Any]:
    """Cells whose numbers differ between two runs of the same scope, and by how much."""
    assert a.column("h3_index").equals(b.column("h3_index"))
    out: dict[str, Any] = {}
    for name in bench.STATS:
        x = np.asarray(a.column(name).to_numpy(zero_copy_only=False), dtype=float)
        y = np.asarray(b.column(name).to_numpy(zero_copy_only=False), dtype=float)
        both = ~(np.isnan(x) | np.isnan(y))
        rel = np.abs(x - y)[both] / np.maximum(np.abs(y[both]), 1e-300)
        out[name] = {"cells_differing": int((x[both] != y[both]).sum()),
                     "max_rel_diff": float(rel.max()) if rel.size else 0.0}
    return out


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


# -- part 1 -------------------------------------------------------------------------------

def overhead(cli: list[str], env: dict[str, str], pg: str, amqp: str, work: Path,
             repeats: int) -> dict[str, Any]:
    run = [*cli, "run", "tiny", "--bbox", TINY_SCOPE, "-r", str(TINY_RES)]
    # For context only: the same local runs on the embedded store (a folder).
    embedded = [*cli[:cli.index("--store")], "--store", str(work / "embedded-store"),
                *cli[cli.index("--store") + 2:]]
    variants = {
        "local, many tasks": [*run, "--workers", "2", "--batch-size", str(TINY_BATCH)],
        "queue, many tasks": [*run, "--queue", amqp, "--batch-size", str(TINY_BATCH)],
        "local, few tasks": [*run, "--workers", "2"],
        "queue, few tasks": [*run, "--queue", amqp],
        "local embedded, many": [*embedded, "run", "tiny", "--bbox", TINY_SCOPE, "-r",
                                 str(TINY_RES), "--workers", "2", "--batch-size",
                                 str(TINY_BATCH)],
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    failures: list[str] = []
    refs: dict[str, Any] = {}
    with Worker(cli, amqp, 2, env, work / "worker-overhead.log") as worker:
        # Untimed: numba's cache, the file cache, the worker's pool children and store.
        for cmd in (variants["local, few tasks"], variants["queue, few tasks"],
                    variants["queue, many tasks"], variants["local embedded, many"]):
            attempt([*cmd, "--force"], env)  # a warm-up lost to the race warms as well
        worker.check()
        for i in range(repeats):
            names = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in names:
                for _ in range(ATTEMPTS):
                    cpu0, pg0 = worker.cpu_s(), store.server_cpu()
                    got, error = attempt([*variants[name], "--force"], env)
                    if got is not None:
                        break
                    failures.append(f"{name}: {error}")
                    print(f"  [{i}] {name}: failed on the output-table race, again",
                          flush=True)
                else:
                    raise SystemExit(f"queue bench: {name} failed {ATTEMPTS} times: {error}")
                m = got
                m["worker_cpu_s"] = worker.cpu_s() - cpu0 if name.startswith("queue") else 0
                m["postgres_cpu_s"] = store.server_cpu() - pg0
                m = {k: round(v, 3) for k, v in m.items()}
                m["load_1min"] = round(os.getloadavg()[0], 2)
                is_embedded = "embedded" in name
                m |= latest_run(pg, "tiny") if not is_embedded else {
                    "tasks": runs["local, many tasks"][-1]["tasks"] if runs[
                        "local, many tasks"] else 0, "run_id": "latest"}
                m["tasks_per_s"] = round(m["tasks"] / m["wall_s"], 1)
                runs[name].append(m)
                print(f"  [{i}] {name:20s} {m['tasks']:4d} tasks {m['wall_s']:6.2f} s "
                      f"{m['tasks_per_s']:6.1f} tasks/s (store: {m.get('store_wall_s')} s, "
                      f"publish {m.get('publish_s')} s, load {m['load_1min']})", flush=True)
                table = export(embedded if is_embedded else cli, env, "tiny", m["run_id"],
                               work / "tiny.parquet")
                # The cells' numbers may differ in the last bits between batch sizes (a
                # batch's window), so each run is held to the first of its batch size.
                size = "few" if "few" in name else "many"
                refs.setdefault(size, table)
                m["identical_to_first"] = not store.same_bits(table, refs[size])
            worker.check()
    summary: dict[str, Any] = {}
    for name, rs in runs.items():
        summary[name] = {k: median([r[k] for r in rs]) for k in
                         ("wall_s", "cpu_s", "worker_cpu_s", "postgres_cpu_s", "tasks_per_s",
                          "store_wall_s", "task_seconds_sum") if k in rs[0]}
        summary[name]["tasks"] = rs[0]["tasks"]
        summary[name]["walls"] = [r["wall_s"] for r in rs]
    many, few = summary["local, many tasks"], summary["local, few tasks"]
    qmany, qfew = summary["queue, many tasks"], summary["queue, few tasks"]
    n, n_few = many["tasks"], few["tasks"]
    slope_local = (many["wall_s"] - few["wall_s"]) / (n - n_few)
    slope_queue = (qmany["wall_s"] - qfew["wall_s"]) / (qmany["tasks"] - qfew["tasks"])
    figures = {
        "tasks": n, "tasks_few": n_few, "cells": int(runs["local, many tasks"][0]["rows"]),
        "batch_size": TINY_BATCH,
        "added_s_per_task_naive": round((qmany["wall_s"] - many["wall_s"]) / n, 4),
        "s_per_task_local": round(slope_local, 4),
        "s_per_task_queue": round(slope_queue, 4),
        "added_s_per_task_slope": round(slope_queue - slope_local, 4),
        "fixed_s_local": round(few["wall_s"] - n_few * slope_local, 2),
        "fixed_s_queue": round(qfew["wall_s"] - qfew["tasks"] * slope_queue, 2),
        "queue_worker_cpu_s_per_task": round(qmany["worker_cpu_s"] / n, 4),
        "postgres_cpu_s_per_task_queue": round(qmany["postgres_cpu_s"] / n, 4),
        "postgres_cpu_s_per_task_local": round(many["postgres_cpu_s"] / n, 4),
        "identical": all(r["identical_to_first"] for rs in runs.values() for r in rs),
        "many_vs_few_tasks": batch_size_difference(refs["many"], refs["few"]),
    }
    return {"scope": {"bbox": TINY_SCOPE, "raster": "360 x 360 float32, 1 arcsecond",
                      "resolution": TINY_RES}, "runs": runs, "median": summary,
            "figures": figures, "failed_runs_on_race": failures}


# -- part 2 -------------------------------------------------------------------------------

def warm(cli: list[str], env: dict[str, str], amqp: str, concurrency: int) -> None:
    """An untimed queue run on the small raster: every pool child has taken a task or
    two (kernel loaded, store connected) and read none of the Rwanda tiles."""
    attempt([*cli, "run", "tiny", "--bbox", TINY_SCOPE, "-r", str(TINY_RES), "--queue", amqp,
             "--batch-size", str(max(4, 1200 // (8 * concurrency))), "--force"], env)


def scale_out(cli: list[str], env: dict[str, str], pg: str, amqp: str, work: Path,
              server: TileServer, repeats: int, processes: tuple[int, ...],
              in_scope: dict[str, int]) -> dict[str, Any]:
    run = [*cli, "run", "bench", "--bbox", bench.bbox_arg(bench.BBOX), "-r", str(SCALE_RES),
           "--force"]
    runs: dict[str, list[dict[str, Any]]] = {}
    ref = None

    failures: list[str] = []

    def one(name: str, cmd: list[str], worker: Worker | None) -> dict[str, Any] | None:
        nonlocal ref
        server.reset_stats()
        cpu0 = worker.cpu_s() if worker else 0.0
        pg0 = store.server_cpu()
        got, error = attempt(cmd, env)
        if got is None:
            failures.append(f"{name}: {error}")
            print(f"  {name}: failed on the output-table race; again on fresh workers",
                  flush=True)
            return None
        m = got
        m["worker_cpu_s"] = worker.cpu_s() - cpu0 if worker else 0.0
        m["postgres_cpu_s"] = store.server_cpu() - pg0
        m = {k: round(v, 3) for k, v in m.items()}
        m["load_1min"] = round(os.getloadavg()[0], 2)
        m |= latest_run(pg, "bench") | server.stats.as_dict()
        m["cells_per_s"] = round(m["rows"] / m["wall_s"])
        m["bytes_over_blocks_in_scope"] = round(m["bytes_sent"] / in_scope["bytes"], 2)
        table = export(cli, env, "bench", m["run_id"], work / "bench.parquet")
        if ref is None:
            ref = table
        diff = store.same_bits(table, ref)
        m["identical_to_local"] = not diff
        if diff:
            m["differences"] = diff[:5]
        runs.setdefault(name, []).append(m)
        print(f"  {name:22s} {m['wall_s']:6.2f} s {m['cells_per_s']:7d} cells/s "
              f"{m['tasks']} tasks by {m.get('workers', '?')} {m['requests']} requests "
              f"{m['bytes_sent'] / 1e6:6.1f} MB, identical: {not diff}, load "
              f"{m['load_1min']}", flush=True)
        return m

    # Untimed: the local pool once (numba's cache, the OS file cache); then the reference.
    bench.measure([*cli, "run", "bench", "--bbox", bench.bbox_arg(bench.BBOX), "-r", "7"],
                  env=env)
    local = "local pool, 2 processes"
    for _ in range(repeats):
        one(local, [*run, "--workers", "2"], None)
    for n in processes:
        for _ in range(repeats):
            for _ in range(ATTEMPTS):
                # A fresh worker each time: its children's tile caches empty, as a new
                # pool's.
                with Worker(cli, amqp, n, env, work / f"worker-scale-{n}.log") as worker:
                    warm(cli, env, amqp, n)
                    worker.check()
                    if one(f"queue, {n} process{'es' if n > 1 else ''}",
                           [*run, "--queue", amqp], worker) is not None:
                        break
            else:
                raise SystemExit(f"queue bench: {n} processes failed {ATTEMPTS} times")
    summary: dict[str, Any] = {}
    for name, rs in runs.items():
        summary[name] = {k: median([r[k] for r in rs]) for k in
                         ("wall_s", "cpu_s", "worker_cpu_s", "postgres_cpu_s", "cells_per_s",
                          "store_wall_s", "task_seconds_sum", "requests", "bytes_sent",
                          "bytes_over_blocks_in_scope", "load_1min")}
        summary[name] |= {"tasks": rs[0]["tasks"], "rows": rs[0]["rows"],
                          "walls": [r["wall_s"] for r in rs],
                          "publish_s": median([r.get("publish_s") or 0 for r in rs]),
                          "identical_to_local": all(r["identical_to_local"] for r in rs)}
    one_proc = summary["queue, 1 process"]["wall_s"]
    for s in summary.values():
        s["speedup_over_1_process"] = round(one_proc / s["wall_s"], 2)
        s["tasks_per_s"] = round(s["tasks"] / s["wall_s"], 1)
    return {"scope": {"bbox": bench.BBOX, "resolution": SCALE_RES, "tiles": 6,
                      "latency_s": LATENCY, "blocks_in_scope": in_scope},
            "runs": runs, "median": summary,
            "identical": all(s["identical_to_local"] for s in summary.values()),
            "failed_runs_on_race": failures}


# -- the whole ----------------------------------------------------------------------------

def delete_queue(amqp: str, name: str) -> None:
    try:
        from kombu import Connection

        with Connection(amqp, connect_timeout=5) as conn:
            conn.default_channel.queue_delete(name)
    except Exception as exc:  # the broker gone: nothing left to tidy
        print(f"queue bench: could not delete queue {name}: {exc}", file=sys.stderr)


def table(results: dict[str, Any]) -> str:
    o = results["overhead"]
    f = o["figures"]
    lines = [f"Per-task overhead: {f['cells']} cells at res {TINY_RES}, {f['tasks']} tasks of "
             f"{f['batch_size']} cells (and {f['tasks_few']} tasks), median of "
             f"{results['repeats']}",
             f"  {'variant':20s} {'tasks':>5s} {'wall s':>7s} {'tasks/s':>8s}"]
    for name, s in o["median"].items():
        lines.append(f"  {name:20s} {s['tasks']:5d} {s['wall_s']:7.2f} {s['tasks_per_s']:8.1f}")
    lines.append(f"  added per task: {f['added_s_per_task_naive'] * 1000:.1f} ms (wall "
                 f"difference / tasks); slope {f['s_per_task_local'] * 1000:.1f} ms local, "
                 f"{f['s_per_task_queue'] * 1000:.1f} ms queue per task")
    s2 = results["scale_out"]
    lines += [f"Scale-out: Rwanda res {SCALE_RES} over HTTP (+{LATENCY * 1000:.0f} ms per "
              f"request), median of {results['scale_repeats']}",
              f"  {'variant':24s} {'wall s':>7s} {'cells/s':>8s} {'speedup':>8s} "
              f"{'requests':>8s} {'MB':>6s} identical"]
    for name, s in s2["median"].items():
        lines.append(f"  {name:24s} {s['wall_s']:7.2f} {s['cells_per_s']:8.0f} "
                     f"{s['speedup_over_1_process']:8.2f} {s['requests']:8.0f} "
                     f"{s['bytes_sent'] / 1e6:6.1f} {s['identical_to_local']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", default=DEFAULT_PG,
                    help="a PostgreSQL database to drop and recreate (default %(default)s)")
    ap.add_argument("--amqp", default=DEFAULT_AMQP, help="the broker (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per median, part 1")
    ap.add_argument("--scale-repeats", type=int, default=2, help="runs per median, part 2")
    ap.add_argument("--processes", default=",".join(map(str, PROCESSES)),
                    help="worker processes to scale out to (default %(default)s)")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(_kill_all)
    work = HERE / "results" / "tmp" / "queue"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Every process here runs in the work folder: ``python -m`` puts the current folder
    # first on sys.path, and from benchmarks/ this file would shadow the queue module.
    os.chdir(work)
    t_start = time.perf_counter()
    name = f"h3pipe-bench-queue-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if k not in ("H3PIPE_QUEUE", "H3PIPE_PROJECT")}
    env |= {"PYTHONPATH": str(ROOT), "H3PIPE_QUEUE_NAME": name, "H3PIPE_STORE": args.pg}
    data = HERE / "data" / "cop-dem-glo-30"
    print(f"queue bench: tiles in {data} (generated once); queue '{name}', store "
          f"{args.pg}", flush=True)
    tiles = bench.make_tiles(data, bench.BBOX)
    tiny = make_tiny_raster(work / "tiny")
    store.fresh_database(args.pg)
    local_proj = bench.make_project(work, data)
    server = TileServer(data, latency=LATENCY).start()
    results: dict[str, Any] = {}
    try:
        proj = remote.stac_project(work, tiles, server, local_proj / "pipelines")
        add_tiny(proj, tiny)
        cli = [sys.executable, "-m", "h3pipe", "-q", "--project", str(proj), "--store",
               args.pg]
        subprocess.run([*cli, "db", "upgrade"], check=True, capture_output=True, env=env)
        results = {"machine": bench.machine(), "broker": args.amqp.split("@")[-1],
                   "store": args.pg, "queue_name": name, "repeats": args.repeats,
                   "scale_repeats": args.scale_repeats,
                   "note": "2-core machine shared with other work; the broker, PostgreSQL, "
                   "the tile server, the workers and the submitter all on it"}
        if not args.skip_overhead:
            print("part 1: per-task overhead", flush=True)
            results["overhead"] = overhead(cli, env, args.pg, args.amqp, work, args.repeats)
        if not args.skip_scale:
            print("part 2: scale-out over HTTP", flush=True)
            in_scope = remote.blocks_in_scope(tiles, bench.BBOX)
            processes = tuple(int(p) for p in args.processes.split(","))
            results["scale_out"] = scale_out(cli, env, args.pg, args.amqp, work, server,
                                             args.scale_repeats, processes, in_scope)
    finally:
        _kill_all()
        server.stop()
        delete_queue(args.amqp, name)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    out = HERE / "results" / "queue.json"
    if "overhead" in results and "scale_out" in results:
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(table(results))
        print(f"queue bench: wrote {out} in {results['seconds']:.0f} s")
    else:
        (work / "partial.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"queue bench: partial results in {work / 'partial.json'}")
    ok = all(results.get(k, {}).get("figures", results.get(k, {})).get("identical", True)
             for k in ("overhead", "scale_out"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
