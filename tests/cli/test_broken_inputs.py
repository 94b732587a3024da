"""Broken inputs, one at a time: each must fail with the documented exit code and a one-line
``error:`` naming the culprit (or, for ``validate``, FILE:LINE problems on stdout), with no
traceback, and must leave results of an earlier successful run untouched."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import Affine, from_origin

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"
EARLIER_BBOX = "29.03,-2.17,29.10,-2.10"
RUN = ("run", "p", "--bbox", BBOX, "--workers", "1")


@dataclass
class Ctx:
    tmp: Path
    proj: Path
    raster: Path
    monkeypatch: pytest.MonkeyPatch
    extra: dict = field(default_factory=dict)

    def source(self, text: str, name: str = "s") -> None:
        (self.proj / "sources" / f"{name}.yaml").write_text(text)

    def pipeline(self, text: str, name: str = "p") -> None:
        (self.proj / "pipelines" / f"{name}.yaml").write_text(text)

    def tif(self, name: str, data: np.ndarray | None = None, **kw) -> Path:
        if data is None:
            data = np.ones((250, 250), dtype="float32")
        kw.setdefault("west", 29.0)
        kw.setdefault("north", -1.95)
        kw.setdefault("res", 0.001)
        return write_raster(self.tmp / "data" / name, data, **kw)


def make_project(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    data = np.tile(np.arange(250, dtype="float32"), (250, 1))
    raster = write_raster(tmp / "data" / "base.tif", data, west=29.0, north=-1.95, res=0.001)
    proj = write_project(
        tmp / "proj",
        sources={"s": raster_source("s", str(raster))},
        pipelines={"p": zonal_pipeline("p", "s", ["mean", "count"], dataset="ds")},
    )
    return Ctx(tmp, proj, raster, monkeypatch)


# --- breakers: each breaks ONE thing and returns the CLI args after "--project PROJ" -------

def _pipe(body: str) -> Callable[[Ctx], tuple]:
    def f(c: Ctx) -> tuple:
        c.pipeline(body)
        return RUN
    return f


def _src(body: str, args: tuple = RUN) -> Callable[[Ctx], tuple]:
    def f(c: Ctx) -> tuple:
        c.source(body.replace("RASTER", str(c.raster)).replace("TMP", str(c.tmp)))
        return args
    return f


def _swap_raster(make: Callable[[Ctx], Path], args: tuple = RUN) -> Callable[[Ctx], tuple]:
    def f(c: Ctx) -> tuple:
        path = make(c)
        c.source(raster_source("s", str(path)))
        return args
    return f


def _garbage(c: Ctx) -> Path:
    p = c.tmp / "data" / "garbage.tif"
    p.write_bytes(b"II*\x00" + bytes(range(256)) * 40)
    return p


def _truncated(c: Ctx) -> Path:
    p = c.tmp / "data" / "cog.tif"
    data = np.random.default_rng(0).random((250, 250), dtype="float32")
    with rasterio.open(p, "w", driver="COG", width=250, height=250, count=1, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(29.0, -1.95, 0.001, 0.001),
                       compress="deflate") as ds:
        ds.write(data, 1)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    return p


def _no_crs(c: Ctx) -> Path:
    p = c.tmp / "data" / "nocrs.tif"
    with rasterio.open(p, "w", driver="GTiff", width=250, height=250, count=1, dtype="float32",
                       transform=from_origin(29.0, -1.95, 0.001, 0.001)) as ds:
        ds.write(np.ones((250, 250), dtype="float32"), 1)
    return p


def _rotated(c: Ctx) -> Path:
    p = c.tmp / "data" / "rot.tif"
    t = Affine(0.001, 0.0002, 29.0, 0.0002, -0.001, -1.95)
    with rasterio.open(p, "w", driver="GTiff", width=250, height=250, count=1, dtype="float32",
                       crs="EPSG:4326", transform=t) as ds:
        ds.write(np.ones((250, 250), dtype="float32"), 1)
    return p


def _two_bands(c: Ctx) -> Path:
    p = c.tmp / "data" / "two.tif"
    with rasterio.open(p, "w", driver="GTiff", width=250, height=250, count=2, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(29.0, -1.95, 0.001, 0.001)) as ds:
        ds.write(np.ones((2, 250, 250), dtype="float32"))
    return p


def _all_nodata(c: Ctx) -> tuple:
    p = c.tif("nod.tif", np.full((250, 250), -9999, dtype="float32"), nodata=-9999)
    c.source(raster_source("s", str(p)))
    return RUN


def _aoi(content: str | None, name: str) -> Callable[[Ctx], tuple]:
    def f(c: Ctx) -> tuple:
        p = c.tmp / name
        if content is not None:
            p.write_text(content)
        return ("run", "p", "--aoi", str(p), "--workers", "1")
    return f


POINTS = json.dumps({"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {},
     "geometry": {"type": "Point", "coordinates": [x, -2.1]}} for x in (29.1, 29.12)
]})


def _export_args(out: str, *more: str) -> Callable[[Ctx], tuple]:
    def f(c: Ctx) -> tuple:
        return ("export", "ds", "-o", str(c.tmp / out), *more)
    return f


def _export_under_file(c: Ctx) -> tuple:
    (c.tmp / "file.txt").write_text("x")
    return ("export", "ds", "-o", str(c.tmp / "file.txt" / "out.parquet"))


def _store_under_file(c: Ctx) -> tuple:
    (c.tmp / "file.txt").write_text("x")
    (c.proj / "h3pipe.yaml").write_text(f"store: '{c.tmp / 'file.txt' / 'store'}'\n")
    return RUN


def _register_bad(c: Ctx) -> tuple:
    p = c.tmp / "bad_source.yaml"
    p.write_text("id: x\nkind: raster\ntheme: [unclosed\n")
    return ("sources", "register", str(p))


def _env_unset(c: Ctx) -> tuple:
    c.monkeypatch.delenv("NOPE", raising=False)
    c.source(raster_source("s", "${NOPE}/base.tif"))
    return RUN


BASE_P = zonal_pipeline("p", "s", ["mean", "count"], dataset="ds")

# (id, breaker, expected exit, culprit text, mode) where mode is
#   "error": one-line 'error:' on stderr; "validate": FILE:LINE problems on stdout;
#   "ok": a non-error case that must succeed.
VEC_P = """\
id: p
output: {dataset: ds, theme: terrain}
defaults: {resolution: 7}
steps:
  - {id: at, operation: sample, input: v, source: s, output: intermediate}
  - id: agg
    operation: h3_weighted_aggregate
    input: $at
    params: {aggregations: [{name: n, function: count}, {name: mean, function: mean,
                                                         column: value}]}
"""


def _vec(source: str, pipeline: str = VEC_P) -> Callable[[Ctx], tuple]:
    """A vector source 'v' (points in the raster, from TMP/v.gpkg) and a feature pipeline,
    one of the two broken."""
    def f(c: Ctx) -> tuple:
        import pyogrio
        import shapely

        pts = [shapely.Point(29.05 + i * 0.01, -2.05 - i * 0.01) for i in range(5)]
        table = __import__("pyarrow").table({"bid": [f"b{i}" for i in range(5)],
                                              "floors": [1, 2, 3, 1, 2],
                                              "geometry": shapely.to_wkb(np.array(pts))})
        pyogrio.write_arrow(table, c.tmp / "v.gpkg", driver="GPKG", geometry_name="geometry",
                            geometry_type="Point", crs="EPSG:4326")
        (c.tmp / "junk.gpkg").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
        c.source(source.replace("TMP", str(c.tmp)), name="v")
        c.pipeline(pipeline)
        return RUN
    return f


V_OK = "id: v\nkind: vector\npath: 'TMP/v.gpkg'\nid_field: bid\nattributes: [floors]\n" \
       "theme: infrastructure\n"

CASES: list = [
    # vector sources and feature pipelines
    ("vec-missing-file", _vec(V_OK.replace("v.gpkg", "nope.gpkg")), 2, "nope.gpkg", "error"),
    ("vec-corrupt-file", _vec(V_OK.replace("v.gpkg", "junk.gpkg")), 2, "junk.gpkg", "error"),
    ("vec-missing-field", _vec(V_OK.replace("[floors]", "[height]")), 2, "height", "error"),
    ("vec-postgis-no-id", _vec("id: v\nkind: vector\npath: postgresql://x@127.0.0.1:1/db\n"
                               "table: public.homes\ntheme: infrastructure\n"), 2, "id_field",
     "error"),
    ("vec-postgis-down", _vec("id: v\nkind: vector\npath: postgresql://x@127.0.0.1:1/db\n"
                              "table: public.homes\nid_field: hid\ntheme: infrastructure\n"),
     1, "cannot reach the database", "error"),  # a server down: transient, exit 1
    ("vec-sql-unknown-column", _vec(V_OK, VEC_P.replace(
        "{name: n, function: count}", "{name: n, function: count, where: 'flors > 1'}")), 2,
     "flors", "error"),
    ("vec-sample-over-cells", _vec(V_OK, VEC_P.replace("input: v, ", "")), 2,
     "runs over features, but its input gives cells", "error"),
    ("vec-publish-features", _vec(V_OK, VEC_P.replace("output: intermediate", "")), 2,
     "not H3 cells", "error"),

    # malformed YAML, in a pipeline and in a source, seen by run (2) and by validate (1)
    ("pipe-yaml-tab", _pipe("id: p\n\toutput: {dataset: ds}\n"), 2, "p.yaml", "error"),
    ("pipe-yaml-unclosed", _pipe("id: p\nsteps: [\n"), 2, "p.yaml", "error"),
    ("pipe-yaml-dupkey", _pipe(BASE_P + "id: q\n"), 2, "p.yaml", "error"),
    ("src-yaml-tab", _src("id: s\n\tkind: raster\n"), 2, "s.yaml", "error"),
    ("src-yaml-unclosed", _src("id: s\nkind: [raster\n"), 2, "s.yaml", "error"),
    ("src-yaml-dupkey", _src(raster_source("s", "RASTER") + "kind: raster\n"), 2, "s.yaml",
     "error"),
    ("validate-pipe-tab", lambda c: (c.pipeline("id: p\n\tsteps: []\n"), ("validate",))[1], 1,
     "p.yaml", "validate"),
    ("validate-src-dupkey",
     lambda c: (c.source(raster_source("s", str(c.raster)) + "theme: x\n"), ("validate",))[1], 1,
     "s.yaml", "validate"),
    ("validate-unknown-op",
     lambda c: (c.pipeline(BASE_P.replace("zonal_stats", "zonal_magic")), ("validate",))[1], 1,
     "zonal_magic", "validate"),
    # wrong types
    ("pipe-steps-not-list", _pipe("id: p\noutput: {dataset: ds, theme: terrain}\nsteps: abc\n"),
     2, "steps", "error"),
    ("pipe-resolution-str", _pipe(BASE_P.replace("resolution: 7", "resolution: seven")), 2,
     "resolution", "error"),
    ("src-band-str", _src(raster_source("s", "RASTER", band="one")), 2, "band", "error"),
    # bad references
    ("unknown-source-ref", _pipe(BASE_P.replace("source: s", "source: nosuchsrc")), 2,
     "nosuchsrc", "error"),
    ("unknown-op", _pipe(BASE_P.replace("zonal_stats", "zonal_magic")), 2, "zonal_magic",
     "error"),
    ("unknown-stat", _pipe(BASE_P.replace("count]", "bogusstat]")), 2, "bogusstat", "error"),
    ("unknown-step-ref", _pipe(BASE_P + "    input: $ghoststep\n"), 2, "ghoststep", "error"),
    ("cycle", _pipe(BASE_P + "    depends_on: [b]\n  - id: b\n    operation: zonal_stats\n"
                    "    source: s\n    depends_on: [stats]\n    params: {stats: [max]}\n"),
     2, "cycle", "error"),
    ("no-h3-stats-step", _pipe(BASE_P + "    output: intermediate\n"), 2, "h3_stats", "error"),
    # source files
    ("missing-raster", _src(raster_source("s", "TMP/data/missing.tif")), 2, "missing.tif",
     "error"),
    ("glob-no-match", _src(raster_source("s", "TMP/data/*.nomatch.tif")), 2, "nomatch", "error"),
    ("env-unset", _env_unset, 2, "NOPE", "error"),
    ("corrupt-raster", _swap_raster(_garbage), 2, "garbage.tif", "error"),
    ("truncated-cog", _swap_raster(_truncated), 1, "cog.tif", "error"),
    ("raster-no-crs", _swap_raster(_no_crs), 2, "nocrs.tif", "error"),
    ("raster-rotated", _swap_raster(_rotated), 2, "rot.tif", "error"),
    ("raster-no-overlap", lambda c: (c.source(raster_source("s", str(c.tif(
        "far.tif", west=10.0, north=50.0)))), RUN)[1], 2, "source 's'", "error"),
    ("band-3-of-2", lambda c: (c.source(raster_source("s", str(_two_bands(c)), band=3)), RUN)[1],
     2, "band", "error"),
    ("stac-dead-url", _src("id: s\nkind: stac\ntheme: terrain\n"
                           "stac: {url: 'http://127.0.0.1:9/x', collection: dem, asset: data, "
                           "signer: none}\n"), 1, "127.0.0.1:9", "error"),
    ("all-nodata-ok", _all_nodata, 0, "", "ok"),
    # scopes
    ("empty-scope", lambda c: ("run", "p", "--bbox", "29.1,-2.1,29.1001,-2.0999", "-r", "0",
                               "--workers", "1"), 2, "scope", "error"),
    ("bbox-three", lambda c: ("run", "p", "--bbox", "29.0,-2.1,29.1", "--workers", "1"), 2,
     "bbox", "error"),
    ("bbox-words", lambda c: ("run", "p", "--bbox", "a,b,c,d", "--workers", "1"), 2, "bbox",
     "error"),
    ("bbox-inverted", lambda c: ("run", "p", "--bbox", "29.18,-2.02,29.02,-2.18", "--workers",
                                 "1"), 2, "bbox", "error"),
    ("bbox-out-of-range", lambda c: ("run", "p", "--bbox", "200,-2.1,210,-2.0", "--workers", "1"),
     2, "bbox", "error"),
    ("bbox-empty", lambda c: ("run", "p", "--bbox", "", "--workers", "1"), 2, "bbox", "error"),
    ("bbox-nan", lambda c: ("run", "p", "--bbox", "nan,-2.1,29.1,-2.0", "--workers", "1"), 2,
     "bbox", "error"),
    # A valid scope across the antimeridian, far from the project's raster.
    ("bbox-antimeridian-no-data", lambda c: ("run", "p", "--bbox", "179.5,-2.1,-179.5,-2.0",
                                             "--workers", "1"), 2, "does not overlap scope bbox",
     "error"),
    ("unknown-iso3", lambda c: ("run", "p", "--iso3", "XYZ", "--workers", "1"), 2, "XYZ",
     "error"),
    ("aoi-missing", _aoi(None, "nowhere.geojson"), 2, "nowhere.geojson", "error"),
    ("aoi-points", _aoi(POINTS, "points.geojson"), 2, "points.geojson", "error"),
    ("aoi-text", _aoi("just some text, not geodata\n", "notes.txt"), 2, "notes.txt", "error"),
    # options
    ("resolution-16", lambda c: (*RUN, "-r", "16"), 2, "16", "error"),
    ("resolution-neg", lambda c: (*RUN, "-r", "-1"), 2, "-1", "error"),
    ("resolution-nan", lambda c: (*RUN, "-r", "x"), 2, "resolution", "error"),
    ("batch-size-0", lambda c: (*RUN, "--batch-size", "0"), 2, "batch", "error"),
    ("batch-size-neg", lambda c: (*RUN, "--batch-size", "-5"), 2, "batch", "error"),
    ("workers-0", lambda c: ("run", "p", "--bbox", BBOX, "--workers", "0"), 2, "workers",
     "error"),
    ("unknown-pipeline", lambda c: ("run", "nopipe", "--bbox", BBOX), 2, "nopipe", "error"),
    ("unknown-option", lambda c: (*RUN, "--frobnicate"), 2, "--frobnicate", "error"),
    ("missing-argument", lambda c: ("run",), 2, "PIPELINE", "error"),
    # export / runs / sources
    ("export-unknown-dataset", lambda c: ("export", "nods", "-o", str(c.tmp / "x.parquet")), 2,
     "nods", "error"),
    ("export-unknown-format", _export_args("x.parquet", "--format", "bogusfmt"), 2, "bogusfmt",
     "error"),
    ("export-under-file", _export_under_file, 2, "file.txt", "error"),
    ("runs-show-unknown", lambda c: ("runs", "show", "deadbeef42"), 2, "deadbeef42", "error"),
    ("sources-show-unknown", lambda c: ("sources", "show", "nosrc"), 2, "nosrc", "error"),
    ("sources-register-bad", _register_bad, 2, "bad_source.yaml", "error"),
    ("store-under-file", _store_under_file, 2, "file.txt", "error"),
    ("project-missing", lambda c: ("--project", str(c.tmp / "gone"), *RUN), 2, "gone", "error"),
]

# Cases that once showed a bug (fixed since); kept here as plain regression cases.
XFAIL: dict[str, str] = {}

PARAMS = [
    pytest.param(*case, id=case[0],
                 marks=[pytest.mark.xfail(strict=True, reason=XFAIL[case[0]])]
                 if case[0] in XFAIL else [])
    for case in CASES
]

RUNS = {"run"}


def _export(cli, proj: Path, out: Path) -> bytes:
    r = cli("--project", proj, "export", "ds", "-o", out)
    assert r.exit_code == 0, r.stderr
    return out.read_bytes()


@pytest.mark.parametrize("name,breaker,code,culprit,mode", PARAMS)
def test_broken_input(name, breaker, code, culprit, mode, tmp_path, cli, monkeypatch):
    c = make_project(tmp_path, monkeypatch)
    # An earlier, successful run of another scope, whose results must survive.
    r = cli("--project", c.proj, "run", "p", "--bbox", EARLIER_BBOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    before = _export(cli, c.proj, tmp_path / "before.parquet")

    args = breaker(c)
    full = args if args[0] == "--project" else ("--project", c.proj, *args)
    r = cli(*full)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)

    if mode == "ok":
        out = tmp_path / "ok.parquet"
        _export(cli, c.proj, out)
        t = pq.read_table(out, filters=[("resolution", "=", 7)])
        assert t.num_rows > 0
        counts = t.column("count").to_pylist()
        means = t.column("mean").to_pylist()
        # The new scope's cells (those outside the earlier scope) have count 0 and null mean.
        assert any(m is None for m in means)
        assert all((n in (0, None)) for n, m in zip(counts, means, strict=True) if m is None)
    elif mode == "validate":
        problems = [ln for ln in r.stdout.splitlines() if re.match(r"^\S+:\d+", ln)]
        assert problems, r.stdout
        assert any(culprit in ln for ln in problems), r.stdout
    else:
        lines = r.stderr.rstrip("\n").splitlines()
        assert lines, r.stderr
        if lines[-1].startswith("Try '") and len(lines) > 1:  # usage errors add a help hint
            lines = lines[:-1]
        last = lines[-1]
        assert last.startswith("error: "), r.stderr
        assert sum(ln.startswith("error: ") for ln in r.stderr.splitlines()) == 1, r.stderr
        assert culprit.lower() in last.lower(), r.stderr

    if args and (args[0] in RUNS or args[:1] == ("--project",)) and mode != "ok" \
            and name != "store-under-file":  # that one points the project at another store
        after = _export(cli, c.proj, tmp_path / "after.parquet")
        assert after == before, "results of the earlier run changed"


# --- hostile YAML: in a fresh interpreter under a 2 GiB address-space limit -----------------
# Each file would once end 'validate' with 'internal error: MemoryError' or RecursionError.
# Wherever it sits (a source, a pipeline, h3pipe.yaml, a PATH outside the project), it must
# give one FILE[:LINE]: problem naming it, exit 1, in bounded memory and about a second.
# Hostile sources go in an extra file, x.yaml: a broken s.yaml would also fail pipeline p.

def _laughs() -> bytes:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return ("\n".join(lines) + "\n").encode()


def _merge_bomb() -> bytes:
    lines = ["a0: &a0 {k: 1}", "b0: &b0 {j: 1}"]
    for i in range(1, 30):
        lines += [f"a{i}: &a{i} {{<<: [*a{i - 1}, *b{i - 1}], ka{i}: *a{i - 1}}}",
                  f"b{i}: &b{i} {{<<: [*b{i - 1}, *a{i - 1}], kb{i}: *b{i - 1}}}"]
    return ("\n".join(lines) + "\n").encode()


HOSTILE = [
    # (id, where the file goes, its bytes, what the one problem line says)
    ("billion-laughs", "pipelines/p.yaml", _laughs(), "more than 10000 values"),
    ("merge-bomb", "sources/x.yaml", _merge_bomb(), "more than 10000 values"),
    ("deep-flow", "sources/x.yaml", b"x: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
     "nested more than 64 levels"),
    ("deep-map", "pipelines/p.yaml", b"x: " + b"{a: " * 50_000 + b"1" + b"}" * 50_000 + b"\n",
     "nested more than 64 levels"),
    ("recursive-alias", "pipelines/p.yaml", b"id: p\nsteps: &s [*s]\n", "recursive"),
    ("huge", "h3pipe.yaml", b"store: .h3pipe\n" + b"# padding\n" * 400_000, "larger than 1 MiB"),
    ("binary", "elsewhere/x.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
     "binary file"),
    ("latin-1", "pipelines/p.yaml", "id: p\ntitle: caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    ("control-chars", "sources/x.yaml", b"id: x\nkind: raster\x1b[0m\n",
     "unacceptable character"),
]


def _limited() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))


def _h3pipe(*args: str | Path) -> tuple[int, str, str, float]:
    import os
    import subprocess
    import sys
    import time

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "h3pipe", *map(str, args)],
                          capture_output=True, text=True, timeout=60, preexec_fn=_limited,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def _small_project(root: Path) -> Path:
    return write_project(root, sources={"s": raster_source("s", "dem.tif")},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean"])})


@pytest.fixture(scope="module")
def startup(tmp_path_factory: pytest.TempPathFactory) -> float:
    """How long 'validate' takes on a small valid project here and now (a loaded machine
    starts Python slowly): a hostile file may add at most a second to it."""
    root = _small_project(tmp_path_factory.mktemp("valid"))
    code, _, err, seconds = _h3pipe("--project", root, "validate")
    assert code == 0, err
    return seconds


@pytest.mark.parametrize("where,content,says", [pytest.param(*h[1:], id=h[0]) for h in HOSTILE])
def test_hostile_yaml_is_one_problem(where, content, says, tmp_path, startup):
    root = _small_project(tmp_path / "proj")
    outside = where.startswith("elsewhere/")
    target = tmp_path / where if outside else root / where
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    shown = str(target) if outside else where

    code, out, err, seconds = _h3pipe("--project", root, "validate", *([target] if outside
                                                                       else []))

    assert "internal error" not in out + err and "Traceback" not in err, err
    assert code == 1, (out, err)
    assert out.count("\n") == 1, out
    assert re.match(rf"^{re.escape(shown)}(:\d+)?: ", out), out
    assert says in out, out
    assert err.startswith("1 problem(s) in "), err
    assert seconds < startup + 1.0, (seconds, startup)


def test_hostile_source_stops_a_run_with_one_error_line(tmp_path, startup):
    root = _small_project(tmp_path / "proj")
    (root / "sources" / "x.yaml").write_bytes(_laughs())

    code, out, err, seconds = _h3pipe("--project", root, "run", "p", "--bbox", BBOX)

    assert code == 2, (out, err)
    assert "internal error" not in err and "Traceback" not in err, err
    # l3, on line 4, is where the count passes 10000 (see tests/config/test_yamlio.py).
    assert err.splitlines() == [
        "error: sources/x.yaml:4: the document holds more than 10000 values, counting each use "
        "of an alias or merge key; look for aliases that expand out of control"]
    assert seconds < startup + 1.0, (seconds, startup)
