"""``make bench-house``: h3pipe before and after a restructure (issue 27), side by side.

    python benchmarks/house.py --before 5de584b --after HEAD
    python benchmarks/house.py --before /tmp/bench-before --after /tmp/bench-after

Each side is a tree of h3pipe: a folder (a detached worktree, say), or a git revision that
is checked out as a detached worktree in a temporary folder outside the repository and
removed at the end. Every command runs in its own process through the CLI
(``python -m h3pipe``) with this venv's Python and ``PYTHONPATH`` set to its side's tree
(``PYTHONSAFEPATH=1``, so the current folder never shadows it; each side's
``h3pipe.__file__`` is printed and checked once), on its own embedded store, on the Rwanda
stand-in tiles of ``bench.py`` (generated once into benchmarks/data). Before and after
alternate (before, after, before, after...), and each row is the median of 5 (the fast
ones) or 3 (Rwanda):

1. start-up: ``--help``, ``--version``, ``validate``, ``runs list`` (a store with a few runs);
2. a run over 36 cells at resolution 7, new each time (the bbox moves by 1e-5 degree, as in
   ``small.py``): the fixed cost a notebook or a cron line pays;
3. Rwanda end to end at resolutions 6 to 9 (``bench.py``'s bbox and statistics, default
   workers, ``--force``): wall and CPU seconds, peak RSS summed over the process tree;
4. imports: ``python -X importtime`` of ``import h3pipe.api`` (the after side) and of
   ``h3pipe runs list`` on each side, and the wall time of bare imports.

Then both sides export resolution 8 and every cell's values are compared bit for bit: a
restructure must not change one (exit 1 if it does).

Other processes share the machine: before each row the 1-minute load must fall to
``--max-load`` and others must keep less than ``--noise`` of a core busy (polled, with a
deadline per row and a budget for the whole run); during a row the CPU time others used is
measured (``/proc/stat`` less this process tree's), and a row during which others kept
more than ``--noise`` of a core busy is run again (``--reruns``), the quietest attempt
kept. ``uptime`` is recorded at the start and end of each row. Results go to
``benchmarks/results/house.json`` and ``house.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (the helpers of make bench, beside this file)
import small  # noqa: E402

SIDES = ("before", "after")
RWANDA = [6, 7, 8, 9]



# -- the two sides ---------------------------------------------------------------------------

@dataclass
class Side:
    name: str
    tree: Path
    work: Path
    commit: str = ""
    subject: str = ""
    shift: int = 0  # the small run's next bbox offset
    env: dict[str, str] = field(default_factory=dict)

    @property
    def project(self) -> Path:
        return self.work / "project"

    @property
    def store(self) -> Path:
        return self.work / "store"

    def cli(self, *args: str, quiet: bool = True) -> list[str]:
        return [sys.executable, "-m", "h3pipe", "--project", str(self.project), "--store",
                str(self.store), *(["-q"] if quiet else []), *args]

    def small_run(self) -> list[str]:
        self.shift += 1
        d = self.shift * 1e-5
        x0, y0, x1, y1 = small.SMALL_BBOX
        return self.cli("run", "bench", "-r", str(small.SMALL_RES), "--bbox",
                        f"{x0 + d:.5f},{y0:.5f},{x1 + d:.5f},{y1:.5f}")


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def tree_of(spec: str, made: list[Path]) -> Path:
    """A folder as given, or a revision checked out as a detached worktree outside the repo."""
    if Path(spec).is_dir():
        return Path(spec).resolve()
    folder = Path(tempfile.mkdtemp(prefix="h3pipe-house-"))
    folder.rmdir()
    git("worktree", "add", "--detach", str(folder), spec)
    made.append(folder)
    return folder


def prepare(side: Side, tiles_dir: Path) -> None:
    side.commit = git("rev-parse", "HEAD", cwd=side.tree)
    side.subject = git("log", "-1", "--format=%s", cwd=side.tree)
    shutil.rmtree(side.work, ignore_errors=True)
    side.work.mkdir(parents=True)
    bench.make_project(side.work, tiles_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("H3PIPE_")}
    side.env = {**env, "PYTHONPATH": str(side.tree), "PYTHONSAFEPATH": "1",
                "NUMBA_CACHE_DIR": str(side.work / "numba-cache")}
    where = subprocess.run(
        [sys.executable, "-c", "import h3pipe, h3pipe.cli; print(h3pipe.__file__)"],
        env=side.env, check=True, capture_output=True, text=True).stdout.strip()
    print(f"house: {side.name} = {side.commit[:10]} {side.subject[:60]!r}\n"
          f"       h3pipe.__file__ = {where}", flush=True)
    if not Path(where).resolve().is_relative_to(side.tree):
        raise SystemExit(f"house: the {side.name} side imports h3pipe from {where}, not from "
                         f"{side.tree}; unset whatever puts another h3pipe first")
    side.env["_H3PIPE_FILE"] = where


# -- measuring -------------------------------------------------------------------------------

Meter = Callable[..., dict[str, float]]


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """``bench.measure`` for commands of a tenth of a second: the same CPU (the process and
    its children) and peak RSS summed over the process tree every 20 ms, but the wall time
    taken when the process ends, not when the next poll notices (up to ~25 ms later)."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ended: list[float] = []
    err: list[bytes] = []

    def waiter() -> None:
        assert proc.stderr is not None
        err.append(proc.stderr.read())
        proc.wait()
        ended.append(time.perf_counter())

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    ps, peak = psutil.Process(proc.pid), 0
    while thread.is_alive():
        peak = max(peak, bench.tree_rss(ps))
        thread.join(0.02)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"house: {' '.join(cmd[:6])}... failed ({proc.returncode}):\n"
                         f"{b''.join(err).decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": ended[0] - t0, "cpu_s": cpu, "peak_rss_mb": peak / 2**20}


# -- load on a shared machine ----------------------------------------------------------------

def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def machine_busy_s() -> float:
    """CPU seconds every process of the machine has used since boot (steal excluded)."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in first[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass
class Gate:
    max_load: float
    deadline_s: float
    budget_s: float  # total waiting allowed over the whole benchmark
    noise: float
    reruns: int
    waited_s: float = 0.0

    def wait(self) -> dict[str, Any]:
        """Until the 1-minute load is at most max_load and others keep under ``noise`` of
        a core busy (over 3 s while this benchmark is idle), or the deadline."""
        t0 = time.monotonic()
        limit = min(self.deadline_s, max(0.0, self.budget_s - self.waited_s))
        while True:
            load, others = os.getloadavg()[0], self.others()
            if (load <= self.max_load and others <= self.noise) or \
                    time.monotonic() - t0 >= limit:
                break
            time.sleep(7)
        waited = time.monotonic() - t0
        self.waited_s += waited
        return {"waited_s": round(waited), "load_1m": round(load, 2),
                "others_cores": round(others, 2),
                "quiet": load <= self.max_load and others <= self.noise}

    @staticmethod
    def others(seconds: float = 3.0) -> float:
        busy0, own0 = machine_busy_s(), own_cpu_s()
        time.sleep(seconds)
        return max(0.0, (machine_busy_s() - busy0) - (own_cpu_s() - own0)) / seconds


def sample(gate: Gate, name: str, n: int, cmd: Callable[[Side], list[str]],
           sides: list[Side], meter: Meter
           ) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any]]:
    """n runs of the command on each side, interleaved; run again while others are busy."""
    attempts = []
    for attempt in range(1 + gate.reruns):
        waited = gate.wait()
        start, busy0, own0, t0 = uptime(), machine_busy_s(), own_cpu_s(), time.monotonic()
        runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in sides}
        for _ in range(n):
            for s in sides:
                runs[s.name].append(meter(cmd(s), env=s.env))
        wall = time.monotonic() - t0
        others = max(0.0, (machine_busy_s() - busy0) - (own_cpu_s() - own0)) / wall
        load = {"uptime_start": start, "uptime_end": uptime(), "gate": waited,
                "others_cores": round(others, 2)}
        attempts.append((others, runs, load))
        print(f"  {name:34s} n={n} attempt {attempt + 1}: others used {others:.2f} cores "
              f"({start.split('load average:')[-1].strip()})", flush=True)
        if others <= gate.noise:
            break
    others, runs, load = min(attempts, key=lambda a: a[0])
    load["attempts"] = len(attempts)
    load["others_cores_each"] = [round(a[0], 2) for a in attempts]
    return runs, load


def summary(name: str, n: int, runs: dict[str, list[dict[str, float]]],
            load: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "n": n, "load": load}
    for side, r in runs.items():
        out[side] = median(r)
    if len(runs) == 2:
        out["ratio"] = {k: round(out["after"][k] / out["before"][k], 3)
                        if out["before"][k] else None
                        for k in ("wall_s", "cpu_s", "peak_rss_mb")}
        out["p"] = {k: round(rank_test(out["before"][v], out["after"][v]), 3)
                    for k, v in SAMPLES.items()}
        out["verdict"] = verdict(out)
    return out


def row(gate: Gate, name: str, n: int, cmd: Callable[[Side], list[str]],
        sides: list[Side], confirm: int = 0, meter: Meter = measure) -> dict[str, Any]:
    """One measure on the given sides. When its medians differ by more than 5 % but its n
    samples cannot tell (or others kept the machine busy), it is measured again with
    ``confirm`` samples a side, and that verdict is the row's."""
    out = summary(name, n, *sample(gate, name, n, cmd, sides, meter))
    if len(sides) == 2 and confirm > n and (unsure(out) or out["load"]["others_cores"]
                                            > gate.noise):
        out["confirm"] = summary(name, confirm, *sample(gate, name, confirm, cmd, sides,
                                                        meter))
    shown = "  ".join(f"{s.name} {out[s.name]['wall_s']:.3f} s" for s in sides)
    last = out.get("confirm", out)
    print(f"  {name:34s} {shown}  {last.get('verdict', '')}"
          f"{' (confirmation)' if 'confirm' in out else ''}", flush=True)
    return out


SAMPLES = {"wall_s": "walls", "cpu_s": "cpus", "peak_rss_mb": "rss"}
LABELS = {"wall_s": "wall", "cpu_s": "CPU", "peak_rss_mb": "RSS"}


def median(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs)),
            "walls": [round(r["wall_s"], 3) for r in runs],
            "cpus": [round(r["cpu_s"], 3) for r in runs],
            "rss": [round(r["peak_rss_mb"]) for r in runs]}


def rank_test(b: list[float], a: list[float]) -> float:
    """Two-sided p of the Mann-Whitney U test, exact for untied samples (ties count half)."""
    m, n = len(b), len(a)
    u = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)
    # ways[k] = arrangements of m and n ranks whose U is k (the standard recurrence).
    ways = {(0, j): [1] for j in range(n + 1)} | {(i, 0): [1] for i in range(m + 1)}
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            left, right = ways[(i - 1, j)], ways[(i, j - 1)]
            w = [0] * (i * j + 1)
            for k, c in enumerate(left):
                w[k + j] += c
            for k, c in enumerate(right):
                w[k] += c
            ways[(i, j)] = w
    dist = ways[(m, n)]
    total = sum(dist)
    low = min(u, m * n - u)
    tail = sum(c for k, c in enumerate(dist) if k <= low) / total
    return min(1.0, 2 * tail)


def verdict(r: dict[str, Any], least: float = 0.02, alpha: float = 0.05) -> str:
    """Slower or faster where the rank test says so (p < alpha) and the medians differ by
    more than ``least``; 'not shown' where the medians differ but the samples cannot tell."""
    words = []
    for key in SAMPLES:
        ratio, p = r["ratio"][key], r["p"][key]
        if ratio is None or abs(ratio - 1) <= least:
            continue
        way = "slower" if ratio > 1 else "faster"
        change = f"{(ratio - 1) * 100:+.0f} %"
        if p < alpha:
            words.append(f"{LABELS[key]} {way} {change} (p {p:.3f})")
        elif abs(ratio - 1) > 0.05:
            words.append(f"{LABELS[key]} {change} not shown (p {p:.2f})")
    return "; ".join(words) or "same"


def unsure(r: dict[str, Any]) -> bool:
    return any(abs(r["ratio"][k] - 1) > 0.05 and r["p"][k] >= 0.05
               for k in SAMPLES if r["ratio"][k] is not None)


# -- imports ---------------------------------------------------------------------------------

def importtime(cmd: list[str], env: dict[str, str]) -> dict[str, int]:
    """Each module's own import time in microseconds, from ``python -X importtime``."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"house: {' '.join(cmd[:6])}... failed:\n{proc.stderr[-2000:]}")
    mods: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cum, name = line[len("import time:"):].split("|")
        mods[name.strip()] = mods.get(name.strip(), 0) + int(self_us)
    return mods


def family(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "h3pipe" else parts[0]


def import_profile(samples: list[dict[str, int]]) -> dict[str, Any]:
    """Median over samples of the total, and of each package's (h3pipe: subpackage's) share."""
    fams: dict[str, list[int]] = {}
    for mods in samples:
        per: dict[str, int] = {}
        for m, us in mods.items():
            per[family(m)] = per.get(family(m), 0) + us
        for f in set(fams) | set(per):
            fams.setdefault(f, []).append(per.get(f, 0))
    packages = {f: round(statistics.median(v) / 1000, 1) for f, v in fams.items()}
    top = dict(sorted(packages.items(), key=lambda kv: -kv[1]))
    return {"total_ms": round(statistics.median(sum(m.values()) for m in samples) / 1000, 1),
            "modules": round(statistics.median(len(m) for m in samples)),
            "h3pipe_modules": round(statistics.median(
                sum(1 for k in m if k.split(".")[0] == "h3pipe") for m in samples)),
            "h3pipe_ms": round(statistics.median(
                sum(us for k, us in m.items() if k.split(".")[0] == "h3pipe")
                for m in samples) / 1000, 1),
            "packages_ms": top}


LIGHT = {"h3pipe --help": ("--help",), "h3pipe --version": ("--version",),
         "h3pipe validate": ("validate",), "h3pipe runs list": ("runs", "list")}


def profiles(gate: Gate, sides: list[Side], after: Side, n: int) -> dict[str, Any]:
    """``-X importtime`` of the API and of the light commands, n times each, interleaved."""
    out: dict[str, Any] = {"gate": gate.wait(), "uptime_start": uptime()}
    busy0, own0, t0 = machine_busy_s(), own_cpu_s(), time.monotonic()
    api = [importtime([sys.executable, "-c", "import h3pipe.api"], after.env)
           for _ in range(n)]
    out["import_h3pipe_api_after"] = import_profile(api)
    out["light"] = {}
    for name, args in LIGHT.items():
        got: dict[str, list[dict[str, int]]] = {s.name: [] for s in sides}
        for _ in range(n):
            for s in sides:
                got[s.name].append(importtime(s.cli(*args, quiet=False), s.env))
        prof: dict[str, Any] = {s.name: import_profile(got[s.name]) for s in sides}
        # What the command loads after that it did not before, outside h3pipe itself.
        seen = {s.name: {m.split(".")[0] for ms in got[s.name] for m in ms} for s in sides}
        fam_after = prof["after"]["packages_ms"]
        prof["new_packages_ms"] = {p: fam_after.get(p, 0.0)
                                   for p in sorted(seen["after"] - seen["before"] - {"h3pipe"})}
        prof["gone_packages"] = sorted(seen["before"] - seen["after"] - {"h3pipe"})
        prof["api_imported"] = {s.name: any("h3pipe.api" in ms for ms in got[s.name])
                                for s in sides}
        fam_before = prof["before"]["packages_ms"]
        grew = {f: round(fam_after.get(f, 0.0) - fam_before.get(f, 0.0), 1)
                for f in set(fam_after) | set(fam_before)}
        prof["grew_ms"] = dict(sorted(grew.items(), key=lambda kv: -kv[1])[:8])
        out["light"][name] = prof
    out["uptime_end"] = uptime()
    out["others_cores"] = round(max(0.0, (machine_busy_s() - busy0) - (own_cpu_s() - own0))
                                / (time.monotonic() - t0), 2)
    return out


def imports(gate: Gate, sides: list[Side], n: int, confirm: int) -> dict[str, Any]:
    after = next(s for s in sides if s.name == "after")
    py = sys.executable
    attempts = []
    for _ in range(1 + gate.reruns):
        attempts.append(profiles(gate, sides, after, n))
        print(f"  importtime profiles: others used {attempts[-1]['others_cores']:.2f} cores",
              flush=True)
        if attempts[-1]["others_cores"] <= gate.noise:
            break
    out = min(attempts, key=lambda a: a["others_cores"])
    out["attempts"] = len(attempts)
    out["rows"] = [
        row(gate, "python -c pass (floor)", n, lambda s: [py, "-c", "pass"], sides, confirm),
        row(gate, "import h3pipe.cli", n, lambda s: [py, "-c", "import h3pipe.cli"], sides,
            confirm),
        row(gate, "import h3pipe.api (after)", n, lambda s: [py, "-c", "import h3pipe.api"],
            [after])]
    return out


# -- agreement -------------------------------------------------------------------------------

def same_values(paths: dict[str, Path]) -> dict[str, Any]:
    """Every cell's every value, bit for bit (floats compared as their bits; nulls as nulls)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = {k: pq.read_table(p).sort_by("h3_index") for k, p in paths.items()}
    b, a = t["before"], t["after"]
    out: dict[str, Any] = {"rows": {"before": b.num_rows, "after": a.num_rows},
                           "columns": {"before": b.column_names, "after": a.column_names},
                           "types_differ": {}, "cells_differ": {}, "compared": []}
    if b.num_rows != a.num_rows or not b.column("h3_index").equals(a.column("h3_index")):
        out["ok"] = False
        out["problem"] = "the two sides' cells are not the same set"
        return out
    for col in b.column_names:
        if col not in a.column_names:
            continue
        x, y = b.column(col), a.column(col)
        if x.type != y.type:
            out["types_differ"][col] = [str(x.type), str(y.type)]
            y = y.cast(x.type)
        nx = pc.is_null(x).to_numpy(zero_copy_only=False)
        ny = pc.is_null(y).to_numpy(zero_copy_only=False)
        if pa.types.is_floating(x.type) or pa.types.is_integer(x.type):
            vx = x.fill_null(0).to_numpy()
            vy = y.fill_null(0).to_numpy()
            if pa.types.is_floating(x.type):
                bits = np.dtype(f"u{vx.dtype.itemsize}")
                vx, vy = vx.view(bits), vy.view(bits)
            differ = (nx != ny) | ((~nx) & (vx != vy))
        else:
            differ = np.array([p != q for p, q in zip(x.to_pylist(), y.to_pylist(),
                                                      strict=True)])
        out["compared"].append(col)
        if differ.any():
            out["cells_differ"][col] = int(differ.sum())
    out["only_before"] = [c for c in b.column_names if c not in a.column_names]
    out["only_after"] = [c for c in a.column_names if c not in b.column_names]
    out["ok"] = not out["cells_differ"] and not out["only_before"] and not out["only_after"]
    return out


def light(words: tuple[str, ...]) -> Callable[[Side], list[str]]:
    return lambda s: s.cli(*words, quiet=False)


def rwanda(bbox: str, res: int) -> Callable[[Side], list[str]]:
    return lambda s: s.cli("run", "bench", "--bbox", bbox, "-r", str(res), "--force")


# -- the benchmark ---------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    return with_trees(_run, args)


def with_trees(body: Callable[[argparse.Namespace, list[Path]], int],
               args: argparse.Namespace) -> int:
    """``body(args, made)``, then every worktree it checked out (``tree_of`` lists them in
    ``made``) removed, however it ended."""
    made: list[Path] = []
    try:
        return body(args, made)
    finally:
        for folder in made:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(folder)], check=False)


def _run(args: argparse.Namespace, made: list[Path]) -> int:
    data = HERE / "data"
    work = HERE / "results" / "tmp-house"
    print(f"house: tiles in {data} (generated once)", flush=True)
    bench.make_tiles(data / "cop-dem-glo-30", bench.BBOX)
    sides = [Side(name, tree_of(spec, made), work / name)
             for name, spec in (("before", args.before), ("after", args.after))]
    for s in sides:
        prepare(s, data / "cop-dem-glo-30")
    gate = Gate(args.max_load, args.wait, args.budget, args.noise, args.reruns)
    machine = bench.machine()
    machine["uptime_start"] = uptime()
    print(f"house: {machine['cpu']}, {machine['cores']} cores; {machine['uptime_start']}",
          flush=True)

    # Untimed: each side's numba cache (its own kernel file), the file cache, and a store
    # holding a few runs for 'runs list'.
    bbox = bench.bbox_arg(bench.BBOX)
    for s in sides:
        bench.measure(s.small_run(), env=s.env)
        bench.measure(s.small_run(), env=s.env)
        bench.measure(s.cli("run", "bench", "--bbox", bbox, "-r", "6"), env=s.env)

    fast, slow, again = args.fast_repeat, args.repeat, args.confirm
    measures: dict[str, Any] = {}
    print("1. start-up", flush=True)
    measures["startup"] = [
        row(gate, name, fast, light(words), sides, again) for name, words in (
            ("h3pipe --help", ("--help",)), ("h3pipe --version", ("--version",)),
            ("h3pipe validate", ("validate",)), ("h3pipe runs list (3 runs)", ("runs", "list")))]
    print("2. a small run", flush=True)
    cells = len(bench.cells_for(small.SMALL_BBOX, small.SMALL_RES))
    measures["small_run"] = [row(gate, f"run, {cells} cells at res {small.SMALL_RES}", fast,
                                 lambda s: s.small_run(), sides, again)]
    print("3. Rwanda end to end", flush=True)
    measures["rwanda"] = []
    for res in args.resolutions:
        r = row(gate, f"Rwanda res {res}", slow, rwanda(bbox, res), sides, args.confirm_slow,
                bench.measure)
        r["resolution"], r["cells"] = res, len(bench.cells_for(bench.BBOX, res))
        measures["rwanda"].append(r)
    print("4. imports", flush=True)
    measures["imports"] = imports(gate, sides, fast, again)

    print("agreement at resolution 8", flush=True)
    paths = {}
    for s in sides:
        paths[s.name] = s.work / "bench_r8.parquet"
        # Already computed when 8 was among the resolutions measured (then reported, not rerun).
        bench.measure(s.cli("run", "bench", "--bbox", bbox, "-r", "8"), env=s.env)
        bench.measure(s.cli("export", "bench", "-r", "8", "-o", str(paths[s.name])), env=s.env)
    agree = same_values(paths)
    print(f"  same values: {agree['ok']} ({agree['rows']['after']} cells, "
          f"{len(agree['compared'])} columns)", flush=True)

    machine["uptime_end"] = uptime()
    results = {
        "machine": machine,
        "sides": {s.name: {"tree": str(s.tree), "commit": s.commit, "subject": s.subject,
                           "h3pipe_file": s.env["_H3PIPE_FILE"]} for s in sides},
        "settings": {"repeat": slow, "fast_repeat": fast, "confirm": again,
                     "confirm_slow": args.confirm_slow, "max_load": gate.max_load,
                     "noise_cores": gate.noise, "reruns": gate.reruns,
                     "waited_s": round(gate.waited_s), "bbox": bench.BBOX,
                     "small_bbox": small.SMALL_BBOX, "stats": bench.STATS},
        "measures": measures, "agreement_res8": agree}
    out = HERE / "results"
    (out / "house.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (out / "house.md").write_text(md)
    print(md)
    return 0 if agree["ok"] else 1


# -- the note --------------------------------------------------------------------------------

def _load(r: dict[str, Any]) -> str:
    def la(text: str) -> str:
        return text.split("load average:")[-1].strip().split(",")[0]

    load = r["load"]
    again = f", {load['attempts']} attempts" if load["attempts"] > 1 else ""
    return (f"{la(load['uptime_start'])} → {la(load['uptime_end'])}; others "
            f"{load['others_cores']}{again}")


def table(rows: list[dict[str, Any]], extra: str = "") -> list[str]:
    lines = ["| measure | n | wall s before | wall s after | after/before | CPU s before | "
             "CPU s after | after/before | peak RSS MB before | peak RSS MB after | "
             "after/before | verdict | load 1 min (start → end); others' cores |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [x for row_ in rows for x in (row_, *(
            [{**row_["confirm"], "name": f"{row_['name']}, again"}] if "confirm" in row_
            else []))]:
        b, a, q = r["before"], r["after"], r["ratio"]
        lines.append(
            f"| {r['name']}{extra} | {r['n']} | {b['wall_s']:.3f} | {a['wall_s']:.3f} | "
            f"{q['wall_s']:.2f} | {b['cpu_s']:.2f} | {a['cpu_s']:.2f} | {q['cpu_s']:.2f} | "
            f"{b['peak_rss_mb']} | {a['peak_rss_mb']} | {q['peak_rss_mb']:.2f} | "
            f"{r['verdict']} | {_load(r)} |")
    return lines


def markdown(res: dict[str, Any]) -> str:
    m, sides, st, ms = res["machine"], res["sides"], res["settings"], res["measures"]
    b, a = sides["before"], sides["after"]
    lines = [
        "# h3pipe before and after issue 27 (`benchmarks/house.py`)", "",
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}, GDAL {m['gdal']}; the machine shared with other engineers' "
        "test runs.", "",
        f"- before: `{b['commit']}` {b['subject']} (h3pipe from `{b['h3pipe_file']}`)",
        f"- after: `{a['commit']}` {a['subject']} (h3pipe from `{a['h3pipe_file']}`)", "",
        f"`uptime` at the start: `{m['uptime_start']}`; at the end: `{m['uptime_end']}`.", "",
        "Each command in its own process (`python -m h3pipe` with `PYTHONPATH` at its side's "
        "tree), each side on its own embedded store; before and after alternate, medians of "
        f"{st['fast_repeat']} (start-up, small run, imports) or {st['repeat']} (Rwanda). "
        "CPU is the process and its children; peak RSS is summed over the process tree "
        "every 20 ms (`bench.measure` for Rwanda; for the other rows the same, but with the "
        "wall time taken when the process ends rather than at the next 20 ms poll). "
        "A verdict says slower or faster where the medians differ by more than 2 % and a "
        "two-sided Mann-Whitney rank test of the two sides' samples gives p < 0.05 (with 5 "
        "samples a side the smallest p possible is 0.008; with 3, 0.1, so 3 samples can "
        "never show a difference); 'not shown' where the medians differ by more than 5 % "
        "but the samples cannot tell. Such a row, or one run while others were busy, is "
        f"measured again ('again') with {st['confirm']} samples a side "
        f"({st['confirm_slow']} for Rwanda), and that verdict is the row's. "
        "Before each row the 1-minute load had to fall to "
        f"{st['max_load']} and others' CPU under {st['noise_cores']} cores (waited "
        f"{st['waited_s']} s in all, with a deadline per row); 'others' is "
        "the CPU that processes outside this benchmark used during the row, in cores (of "
        f"2); a row above {st['noise_cores']} was run again, up to {st['reruns']} times, "
        "and the quietest attempt kept.", "", "## In short", ""] + in_short(res) + [""]
    lines += ["## 1. Start-up", ""] + table(ms["startup"]) + [""]
    lines += ["## 2. A small run (the fixed cost)", "",
              "Each run new: the bbox moves by 1e-5 degree, the same cells, a new run id.", ""]
    lines += table(ms["small_run"]) + [""]
    lines += ["## 3. Rwanda end to end", "",
              f"bbox {bench.bbox_arg(tuple(st['bbox']))}, statistics "
              f"{', '.join(st['stats'])}, default workers, `--force`.", ""]
    lines += table([{**r, "name": f"{r['name']} ({r['cells']:,} cells)"}
                    for r in ms["rwanda"]]) + [""]
    im = ms["imports"]
    lines += ["## 4. Imports", "", "Wall time of bare imports:", ""]
    lines += table([r for r in im["rows"] if "before" in r])
    api_row = next(r for r in im["rows"] if "before" not in r)
    lines += ["", f"`import h3pipe.api` (after only): {api_row['after']['wall_s']:.3f} s wall, "
              f"{api_row['after']['cpu_s']:.2f} s CPU, {api_row['after']['peak_rss_mb']} MB "
              f"(load {_load(api_row)}).", ""]
    api = im["import_h3pipe_api_after"]
    lines += [f"`python -X importtime -c 'import h3pipe.api'` (after): {api['total_ms']} ms "
              f"of imports, {api['modules']} modules ({api['h3pipe_modules']} of h3pipe); the "
              "largest packages (ms, median):", "",
              ", ".join(f"{k} {v}" for k, v in list(api["packages_ms"].items())[:12]), ""]
    lines += ["What the light commands import (`-X importtime`, medians; import ms is the "
              "sum of every module's own time, under the tracing's overhead; load "
              f"{im['uptime_start'].split('load average:')[-1].strip()} at the start, others "
              f"{im['others_cores']} cores):", "",
              "| command | side | import ms | modules | of h3pipe | h3pipe's ms | "
              "loads h3pipe.api | largest packages (ms) |", "|---|---|---|---|---|---|---|---|"]
    for cmd, prof in im["light"].items():
        for name in SIDES:
            p = prof[name]
            lines.append(
                f"| {cmd} | {name} | {p['total_ms']} | {p['modules']} | {p['h3pipe_modules']} | "
                f"{p['h3pipe_ms']} | {'yes' if prof['api_imported'][name] else 'no'} | "
                + ", ".join(f"{k} {v}" for k, v in list(p["packages_ms"].items())[:8]) + " |")
    lines.append("")
    for cmd, prof in im["light"].items():
        new = prof["new_packages_ms"]
        lines.append(f"- {cmd}: {prof['after']['total_ms'] - prof['before']['total_ms']:+.0f} "
                     "ms of imports after; packages loaded after and not before: "
                     + (", ".join(f"{k} ({v} ms)" for k, v in new.items()) or "none")
                     + "; no longer loaded: " + (", ".join(prof["gone_packages"]) or "none")
                     + "; grew most: " + ", ".join(f"{k} {v:+} ms" for k, v in
                                                   prof["grew_ms"].items()) + ".")
    lines.append("")
    lines += cost(res)
    ag = res["agreement_res8"]
    lines += ["## Same numbers", "",
              f"Resolution 8 exported by each side and compared cell by cell, bit for bit: "
              f"{'identical' if ag['ok'] else 'DIFFERENT'} ({ag['rows']['after']} cells; "
              f"columns {', '.join(ag['compared'])})."]
    if ag.get("cells_differ"):
        lines.append(f"Cells that differ, per column: {ag['cells_differ']}.")
    if ag.get("types_differ"):
        lines.append(f"Types that differ: {ag['types_differ']}.")
    if ag.get("only_before") or ag.get("only_after"):
        lines.append(f"Columns only before: {ag.get('only_before')}; only after: "
                     f"{ag.get('only_after')}.")
    return "\n".join(lines) + "\n"


def cost(res: dict[str, Any]) -> list[str]:
    """What loading the API costs a light command, from the rows above."""
    ms = res["measures"]
    rows = {r["name"]: final(r) for r in [*ms["startup"], *ms["imports"]["rows"]]}
    floor = rows["python -c pass (floor)"]
    api = rows["import h3pipe.api (after)"]["after"]
    cli = rows["import h3pipe.cli"]
    out = [f"Cost of the API on its own: `import h3pipe.api` takes {api['wall_s']:.3f} s wall "
           f"and {api['cpu_s']:.2f} s CPU, against {floor['after']['wall_s']:.3f} s for an "
           f"empty interpreter and {cli['after']['wall_s']:.3f} s for `import h3pipe.cli` "
           f"(before: {cli['before']['wall_s']:.3f} s)."]
    light = ms["imports"]["light"]
    for name in ("h3pipe --help", "h3pipe --version", "h3pipe validate",
                 "h3pipe runs list (3 runs)"):
        r = rows[name]
        d = r["after"]["wall_s"] - r["before"]["wall_s"]
        prof = light[name.removesuffix(" (3 runs)")]
        rss = r["after"]["peak_rss_mb"] - r["before"]["peak_rss_mb"]
        out.append(f"`{name.removeprefix('h3pipe ').removesuffix(' (3 runs)')}` after minus "
                   f"before (n={r['n']}): {d * 1000:+.0f} ms wall (p {r['p']['wall_s']:.3f}), "
                   f"{(r['after']['cpu_s'] - r['before']['cpu_s']) * 1000:+.0f} ms CPU (p "
                   f"{r['p']['cpu_s']:.3f}), {rss:+d}"
                   f" MB; its imports {prof['after']['total_ms'] - prof['before']['total_ms']:+.0f}"
                   f" ms, of which h3pipe's own modules "
                   f"{prof['after']['h3pipe_ms'] - prof['before']['h3pipe_ms']:+.0f} ms "
                   f"({prof['before']['h3pipe_modules']} → {prof['after']['h3pipe_modules']} "
                   f"modules), loading h3pipe.api: "
                   f"{'yes' if prof['api_imported']['after'] else 'no'}.")
    return [" ".join(out), ""]


def final(r: dict[str, Any]) -> dict[str, Any]:
    """A row's last word: its confirmation when it had one."""
    if "confirm" not in r:
        return r
    return {**r["confirm"], **{k: r[k] for k in ("name", "resolution", "cells") if k in r}}


def in_short(res: dict[str, Any]) -> list[str]:
    """Which rows are slower after, by how much, and why where the imports say."""
    ms = res["measures"]
    rows = [final(r) for r in [*ms["startup"], *ms["small_run"], *ms["rwanda"],
                               *[r for r in ms["imports"]["rows"] if "before" in r]]]
    light = ms["imports"]["light"]

    def change(r: dict[str, Any]) -> str:
        d = r["after"]["wall_s"] - r["before"]["wall_s"]
        return (f"{r['before']['wall_s']:.3f} → {r['after']['wall_s']:.3f} s wall "
                f"({d * 1000:+.0f} ms), CPU {r['before']['cpu_s']:.2f} → "
                f"{r['after']['cpu_s']:.2f} s, RSS {r['before']['peak_rss_mb']} → "
                f"{r['after']['peak_rss_mb']} MB")

    def why(r: dict[str, Any]) -> str:
        prof = light.get(r["name"].removesuffix(" (3 runs)"))
        if prof is None:
            return ""
        new = sorted(prof["new_packages_ms"].items(), key=lambda kv: -kv[1])[:4]
        return (f". It loads h3pipe.api: {'yes' if prof['api_imported']['after'] else 'no'}"
                f" (before: {'yes' if prof['api_imported']['before'] else 'no'}); its "
                f"imports {prof['before']['total_ms']:.0f} → {prof['after']['total_ms']:.0f} "
                f"ms under `-X importtime`, h3pipe's own modules "
                f"{prof['before']['h3pipe_modules']} → {prof['after']['h3pipe_modules']} "
                f"({prof['after']['h3pipe_ms'] - prof['before']['h3pipe_ms']:+.0f} ms)"
                + ("; new packages: " + ", ".join(f"{k} {v} ms" for k, v in new)
                   if new else ""))

    shown = [r for r in rows if "slower" in r["verdict"]]
    unshown = [r for r in rows if r not in shown and any(
        "not shown" in w and "+" in w for w in r["verdict"].split("; "))]
    out = ["Slower after (rank test p < 0.05):", ""]
    out += [f"- **{r['name']}** (n={r['n']}): "
            + ", ".join(w for w in r["verdict"].split("; ") if "slower" in w)
            + f"; {change(r)}{why(r)}." for r in shown] or ["- none"]
    out += ["", "Higher medians after that the samples do not show (p ≥ 0.05):", ""]
    out += [f"- {r['name']} (n={r['n']}): {r['verdict']}; {change(r)}." for r in unshown] \
        or ["- none"]
    rw = [final(r) for r in ms["rwanda"]]
    out += ["", "Rwanda end to end, wall after/before: "
            + ", ".join(f"res {r['resolution']} {r['ratio']['wall_s']:.2f}" for r in rw)
            + "; CPU after/before: "
            + ", ".join(f"{r['ratio']['cpu_s']:.2f}" for r in rw)
            + "; peak RSS after/before: "
            + ", ".join(f"{r['ratio']['peak_rss_mb']:.2f}" for r in rw) + "."]
    ag = res["agreement_res8"]
    out += ["", f"Values at resolution 8: {'identical, bit for bit' if ag['ok'] else 'DIFFERENT'}"
            f" ({ag['rows']['after']:,} cells)."]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="5de584b",
                    help="a tree (folder) or a git revision (default 5de584b)")
    ap.add_argument("--after", default="HEAD", help="a tree or a revision (default HEAD)")
    ap.add_argument("--repeat", type=int, default=3, help="Rwanda runs per median")
    ap.add_argument("--fast-repeat", type=int, default=5, help="other runs per median")
    ap.add_argument("--confirm", type=int, default=15,
                    help="samples a side when a fast row is measured again")
    ap.add_argument("--confirm-slow", type=int, default=7,
                    help="samples a side when a Rwanda row is measured again")
    ap.add_argument("--resolutions", type=lambda s: [int(v) for v in s.split(",")],
                    default=RWANDA)
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="wait for the 1-minute load to fall to this before each row")
    ap.add_argument("--wait", type=float, default=600, help="seconds to wait per row at most")
    ap.add_argument("--budget", type=float, default=2700,
                    help="seconds of waiting for a quiet machine over the whole run")
    ap.add_argument("--noise", type=float, default=0.5,
                    help="others' mean busy cores during a row above which it is run again")
    ap.add_argument("--reruns", type=int, default=2, help="times a noisy row is run again")
    ap.add_argument("--render", action="store_true",
                    help="only write house.md again from house.json")
    args = ap.parse_args()
    if args.render:
        results = json.loads((HERE / "results" / "house.json").read_text())
        (HERE / "results" / "house.md").write_text(markdown(results))
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
