"""The PostgreSQL store against the embedded store: Rwanda at resolution 9 (about 212,000
cells), end to end through the CLI, on the stand-in tiles of ``bench.py``.

Each store gets one untimed run first (numba's compiled kernel, the file cache, and the
cell outlines PostgreSQL keeps once per cell; that first run is recorded too), then
``--repeats`` forced runs, alternating between the stores so that the load of a shared
machine falls on both alike. The medians are compared with the target (PostgreSQL within
1.2x of embedded, issue 29), and the two exports must be identical bit for bit, or the run
exits 1. Each PostgreSQL run also counts the transactions its database committed or
rolled back, per task (PostgreSQL's own statistics of the throwaway database), and the
first runs are compared too (the outlines of every cell go into ``h3.cells`` then).
Writes ``benchmarks/results/store.json``.

    python benchmarks/store.py [--pg postgresql://postgres@127.0.0.1:5432/h3pipe_bench_store]

The code measured is the h3pipe that ``python -m h3pipe`` finds from the current folder:
to measure another checkout, run from outside this one with ``PYTHONPATH`` set to it.
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

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import BBOX, machine, make_project, make_tiles, measure  # noqa: E402

TARGET = 1.2
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/h3pipe_bench_store"


def fresh_database(url: str) -> None:
    """Drop and create the database ``url`` names (through the server's 'postgres')."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    name = params.get("dbname")
    if not name:
        raise SystemExit(f"store bench: {url} names no database")
    admin = make_conninfo(**{**params, "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def server_cpu() -> float:
    """CPU seconds used so far by this machine's PostgreSQL processes: a run's work on the
    server, which ``measure`` (the h3pipe process tree) does not see. Other clients of the
    same server count too, so it is a rough figure on a shared machine."""
    import psutil

    total = 0.0
    for p in psutil.process_iter(["name", "cpu_times", "ppid"]):
        t = p.info["cpu_times"]
        if p.info["name"] not in ("postgres", "postmaster") or t is None:
            continue
        total += t.user + t.system
        if p.info["ppid"] == 1 or psutil.Process(p.info["ppid"]).name() != "postgres":
            total += t.children_user + t.children_system  # backends that have exited
    return total


def transactions(url: str) -> int:
    """Transactions the database ``url`` names has committed and rolled back so far, as
    its statistics say once every other backend on it has gone (a backend reports them as
    it exits, which may be after the run's process has)."""
    import time

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND pid <> pg_backend_pid()").fetchone()[0]:
            if time.monotonic() > deadline:
                raise SystemExit(f"store bench: backends on {url} did not go")
            time.sleep(0.05)
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def timed(cmd: list[str], pg: str | None = None, tasks: int = 0) -> dict[str, float]:
    """``measure`` plus the server's CPU seconds meanwhile, and with ``pg``, the
    transactions of that database per task (this one's reading counts as one)."""
    before, xacts = server_cpu(), transactions(pg) if pg else 0
    m = measure(cmd)
    m["server_cpu_s"] = server_cpu() - before
    if pg and tasks:
        m["transactions_per_task"] = (transactions(pg) - xacts - 1) / tasks
    return m


def task_count(url: str) -> int:
    """Tasks of the latest run in the PostgreSQL store at ``url``."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM h3pipe.tasks WHERE run_id = (SELECT run_id "
                           "FROM h3pipe.runs ORDER BY created_at DESC LIMIT 1)").fetchone()
    return int(row[0]) if row else 0


def same_bits(a: Any, b: Any) -> list[str]:
    """Where two result tables differ: names, types, nulls or any value's bits."""
    import pyarrow as pa

    if a.schema.names != b.schema.names or a.schema.types != b.schema.types:
        return [f"schemas differ: {a.schema} vs {b.schema}"]
    if a.num_rows != b.num_rows:
        return [f"{a.num_rows} rows vs {b.num_rows}"]
    bad = []
    for name in a.schema.names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if not x.is_null().equals(y.is_null()):
            bad.append(f"{name}: nulls differ")
        elif pa.types.is_floating(x.type):
            xs = np.asarray(x.fill_null(0)).view(np.uint64)
            ys = np.asarray(y.fill_null(0)).view(np.uint64)
            if not np.array_equal(xs, ys):
                bad.append(f"{name}: {int((xs != ys).sum())} values differ in their bits")
        elif not x.equals(y):
            bad.append(f"{name}: values differ")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", default=DEFAULT_PG,
                    help="a PostgreSQL database to drop and recreate (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iso3", default="RWA")
    ap.add_argument("--resolution", type=int, default=9)
    ap.add_argument("--work", type=Path, default=HERE / "results" / "tmp" / "store",
                    help="a folder to replace with the project and the stores "
                    "(default %(default)s)")
    args = ap.parse_args()

    import pyarrow.parquet as pq

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = HERE / "data" / "cop-dem-glo-30"
    print(f"store bench: tiles in {data} (generated once)", flush=True)
    make_tiles(data, BBOX)  # the bench's tiles cover Rwanda
    proj = make_project(work, data)
    fresh_database(args.pg)
    # This checkout's h3pipe, whichever is installed: the same interpreter and sys.path.
    cli = [sys.executable, "-m", "h3pipe", "--project", str(proj)]
    stores = {"embedded": [], "postgresql": ["--store", args.pg]}
    subprocess.run([*cli, *stores["postgresql"], "db", "upgrade"], check=True,
                   capture_output=True)
    scope = ["--iso3", args.iso3, "-r", str(args.resolution)]
    first: dict[str, dict[str, float]] = {}
    for name, opt in stores.items():
        first[name] = timed([*cli, *opt, "run", "bench", *scope])
        print(f"  {name:10s} first run   {first[name]['wall_s']:7.2f} s wall "
              f"{first[name]['cpu_s']:7.2f} s cpu (+{first[name]['server_cpu_s']:.2f} s "
              "PostgreSQL)", flush=True)
    tasks = task_count(args.pg)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
    for i in range(args.repeats):
        for name, opt in (stores.items() if i % 2 == 0 else reversed(stores.items())):
            m = timed([*cli, *opt, "run", "bench", *scope, "--force"],
                      args.pg if opt else None, tasks)
            runs[name].append({k: round(v, 3) for k, v in m.items()})
            per_task = (f", {m['transactions_per_task']:.2f} transactions/task"
                        if "transactions_per_task" in m else "")
            print(f"  {name:10s} run {i + 1}/{args.repeats}   {m['wall_s']:7.2f} s wall "
                  f"{m['cpu_s']:7.2f} s cpu (+{m['server_cpu_s']:.2f} s PostgreSQL) "
                  f"{m['peak_rss_mb']:6.0f} MB{per_task}", flush=True)
    exports = {}
    for name, opt in stores.items():
        out = work / f"{name}.parquet"
        subprocess.run([*cli, *opt, "export", "bench", "-r", str(args.resolution), "-o",
                        str(out)], check=True, capture_output=True)
        exports[name] = pq.read_table(out)
    differences = same_bits(exports["postgresql"], exports["embedded"])
    median = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r["cpu_s"] + r["server_cpu_s"] for r in rs)
           for name, rs in runs.items()}
    ratio = median["postgresql"] / median["embedded"]
    results = {
        "machine": machine(), "load": [round(v, 2) for v in os.getloadavg()],
        "scope": {"iso3": args.iso3, "resolution": args.resolution,
                  "cells": exports["embedded"].num_rows, "tasks": tasks},
        "first_run": {k: {m: round(v, 3) for m, v in r.items()} for k, r in first.items()},
        "first_run_ratio": round(first["postgresql"]["wall_s"] / first["embedded"]["wall_s"],
                                 3),
        "runs": runs, "median_wall_s": {k: round(v, 3) for k, v in median.items()},
        "median_cpu_s_with_server": {k: round(v, 3) for k, v in cpu.items()},
        "median_transactions_per_task": round(statistics.median(
            r["transactions_per_task"] for r in runs["postgresql"]), 2),
        "ratio": round(ratio, 3), "cpu_ratio": round(cpu["postgresql"] / cpu["embedded"], 3),
        "target": TARGET, "ok": ratio <= TARGET,
        "identical": not differences, "differences": differences[:5]}
    (HERE / "results" / "store.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"store bench: {results['scope']['cells']} cells, {tasks} tasks; median embedded "
          f"{median['embedded']:.2f} s, PostgreSQL {median['postgresql']:.2f} s: {ratio:.2f}x "
          f"(CPU with the server's {results['cpu_ratio']:.2f}x, "
          f"{results['median_transactions_per_task']} transactions per task; first runs "
          f"{results['first_run_ratio']:.2f}x) "
          f"(target {TARGET}x: {'met' if ratio <= TARGET else 'MISSED'}); exports "
          f"{'identical bit for bit' if not differences else 'DIFFER: ' + '; '.join(differences)}")
    return 0 if not differences else 1


if __name__ == "__main__":
    raise SystemExit(main())
