"""A corpus of hostile inputs, across every command: each case breaks one thing in a copy of
a small project that has one completed run, and states the exit code and the words its one
``error:`` line must hold (or, for ``validate``, its FILE:LINE problem line). No traceback,
no ``internal error``, ever.

Cases that need a server of their own (PostgreSQL, RabbitMQ) are at the end of the module.
See also test_broken_inputs.py (one-at-a-time breakage of a run that keeps earlier
results) and tests/corpus/ (invalid YAML files and their FILE:LINE reports).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from h3pipe.cli import main
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"
DONE_BBOX = "29.03,-2.17,29.10,-2.10"  # the scope of the completed run
CLOSED = "127.0.0.1:9"  # nothing listens on the discard port here


@dataclass
class W:
    """A copy of the base project to break: ``root`` the project, ``data`` its files."""

    root: Path
    data: Path
    tmp: Path

    def write(self, rel: str, content: str | bytes) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p

    def file(self, name: str, content: str | bytes) -> Path:
        p = self.tmp / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p


def _points_table(bad_row: int | None = None, covering: bool = False) -> pa.Table:
    import shapely

    pts = [shapely.Point(29.05 + i * 0.01, -2.05 - i * 0.01) for i in range(5)]
    wkb = list(shapely.to_wkb(np.array(pts)))
    if bad_row is not None:
        wkb[bad_row] = b"\x01\x01\x00\x00\x00garbage"
    cols = {"bid": [f"b{i}" for i in range(5)], "floors": [1, 2, 3, 1, 2],
            "geometry": pa.array(wkb, pa.binary())}
    column: dict = {"encoding": "WKB", "geometry_types": ["Point"]}
    if covering:
        b = shapely.bounds(np.array(pts))
        cols["bbox"] = pa.StructArray.from_arrays([pa.array(b[:, i]) for i in range(4)],
                                                  ["xmin", "ymin", "xmax", "ymax"])
        column["covering"] = {"bbox": {s: ["bbox", s] for s in ("xmin", "ymin", "xmax",
                                                                 "ymax")}}
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    return pa.table(cols).replace_schema_metadata({b"geo": json.dumps(geo).encode()})


VEC_P = """\
id: vp
output: {dataset: vds, theme: terrain}
defaults: {resolution: 7}
steps:
  - {id: at, operation: sample, input: v, source: s, output: intermediate}
  - id: agg
    operation: h3_weighted_aggregate
    input: $at
    params: {aggregations: [{name: n, function: count}]}
"""


def _vector(path: str) -> str:
    return (f"id: v\nkind: vector\npath: '{path}'\nid_field: bid\nattributes: [floors]\n"
            "theme: infrastructure\n")


def _laughs() -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with one raster source, pipeline p (dataset ds) and a completed run, and
    the hostile data files the cases point at."""
    tmp = tmp_path_factory.mktemp("base")
    data = np.tile(np.arange(250, dtype="float32"), (250, 1))
    raster = write_raster(tmp / "data" / "base.tif", data, west=29.0, north=-1.95, res=0.001)
    root = write_project(tmp / "proj", sources={"s": raster_source("s", str(raster))},
                         pipelines={"p": zonal_pipeline("p", "s", ["mean", "count"])})
    d = tmp / "data"
    pq.write_table(_points_table(), d / "good.parquet")
    pq.write_table(_points_table(bad_row=3), d / "bad_wkb.parquet", row_group_size=2)
    pq.write_table(_points_table(bad_row=3, covering=True), d / "bad_wkb_cover.parquet",
                   row_group_size=2)
    good = (d / "good.parquet").read_bytes()
    (d / "truncated.parquet").write_bytes(good[: len(good) // 2])
    (d / "empty.tif").write_bytes(b"")
    (d / "text.tif").write_text("this is not a raster\n")
    (d / "text.parquet").write_text("this is not Parquet\n")
    (d / "half.tif").write_bytes(raster.read_bytes()[:4000])
    (d / "broken.geojson").write_text('{"type": "FeatureCollection", "features": [\n')
    (d / "empty.geojson").write_text("")
    assert main(["--project", str(root), "run", "p", "--bbox", DONE_BBOX, "--workers",
                 "1"]) == 0
    return tmp


@pytest.fixture
def work(base: Path, tmp_path: Path) -> W:
    shutil.copytree(base / "proj", tmp_path / "proj")
    return W(tmp_path / "proj", base / "data", tmp_path)


# --- the cases: (id, setup -> args after '--project ROOT', exit code, words, mode) -----------
# mode "error": one 'error:' line on stderr holding every word; "validate": a FILE:LINE
# problem on stdout holding them; "ok": exit 0, the words on stdout or stderr.

Setup = Callable[[W], tuple]


def args(*a: str) -> Setup:
    return lambda w: a


def pipe(text: str, *a: str) -> Setup:
    def f(w: W) -> tuple:
        w.write("pipelines/p.yaml", text)
        return a or ("run", "p", "--bbox", BBOX, "--workers", "1")
    return f


def src(text: str | bytes, *a: str, name: str = "x") -> Setup:
    """A second source file beside s: a broken one stops every command that loads sources."""
    def f(w: W) -> tuple:
        w.write(f"sources/{name}.yaml", text)
        return a or ("run", "p", "--bbox", BBOX, "--workers", "1")
    return f


def settings(text: str | bytes, *a: str) -> Setup:
    def f(w: W) -> tuple:
        w.write("h3pipe.yaml", text)
        return a or ("run", "p", "--bbox", BBOX, "--workers", "1")
    return f


def raster_at(name: str, *a: str) -> Setup:
    def f(w: W) -> tuple:
        w.write("sources/s.yaml", raster_source("s", str(w.data / name)))
        return a or ("run", "p", "--bbox", BBOX, "--workers", "1")
    return f


def vector_at(path: str, *a: str) -> Setup:
    def f(w: W) -> tuple:
        w.write("sources/v.yaml", _vector(path.replace("DATA", str(w.data))))
        w.write("pipelines/vp.yaml", VEC_P)
        return a or ("run", "vp", "--bbox", BBOX, "--workers", "1")
    return f


def aoi(content: str | bytes | None, name: str, command: str = "run") -> Setup:
    def f(w: W) -> tuple:
        p = w.tmp / name
        if content is not None:
            p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return (command, "p", "--aoi", str(p)) + (("--workers", "1") if command == "run"
                                                  else ())
    return f


P = zonal_pipeline("p", "s", ["mean", "count"])
RUN = ("run", "p", "--bbox", BBOX, "--workers", "1")
MAP = ("map", "ds", "mean", "--run", "latest")
S = "id: x\nkind: raster\npath: '/nowhere/x.tif'\ntheme: terrain\n"

CASES: list[tuple[str, Setup, int, tuple[str, ...], str]] = [
    # -- malformed and hostile YAML, met by run, plan, validate and sources register ---------
    ("yaml-dup-key-top", pipe(P + "id: q\n"), 2, ("p.yaml", "duplicate"), "error"),
    ("yaml-dup-key-nested", pipe(P.replace("resolution: 7,", "resolution: 7, resolution: 8,")),
     2, ("p.yaml",), "error"),
    ("yaml-billion-laughs-run", src(_laughs()), 2, ("x.yaml", "more than 10000 values"),
     "error"),
    ("yaml-billion-laughs-plan", src(_laughs(), "plan", "p", "--bbox", BBOX), 2,
     ("x.yaml", "more than 10000 values"), "error"),
    ("yaml-billion-laughs-validate", src(_laughs(), "validate"), 1,
     ("x.yaml", "more than 10000 values"), "validate"),
    ("yaml-billion-laughs-settings", settings(_laughs()), 2,
     ("h3pipe.yaml", "more than 10000 values"), "error"),
    ("yaml-recursive-alias", pipe("id: p\nsteps: &s [*s]\n"), 2, ("p.yaml", "recursive"),
     "error"),
    ("yaml-deep-nesting", pipe("x: " + "[" * 5000 + "]" * 5000 + "\n"), 2,
     ("p.yaml", "nested more than 64 levels"), "error"),
    ("yaml-huge-float", pipe(P.replace("resolution: 7", "resolution: 1e400")), 2,
     ("p.yaml", "resolution"), "error"),
    ("yaml-huge-int", pipe(P.replace("resolution: 7", "resolution: " + "9" * 400)), 2,
     ("p.yaml", "resolution"), "error"),
    ("yaml-negative-batch", pipe(P.replace("batch_size: 50", "batch_size: -50")), 2,
     ("p.yaml", "batch_size"), "error"),
    ("yaml-resolution-list", pipe(P.replace("resolution: 7", "resolution: [7]")), 2,
     ("p.yaml", "resolution"), "error"),
    ("yaml-resolution-bool", pipe(P.replace("resolution: 7", "resolution: true")), 2,
     ("p.yaml", "resolution"), "error"),
    ("yaml-stats-number", pipe(P.replace("stats: [mean, count]", "stats: 5")), 2,
     ("p.yaml", "stats"), "error"),
    ("yaml-unknown-top-key", pipe(P + "frobnicate: 1\n"), 2, ("p.yaml", "frobnicate"),
     "error"),
    ("yaml-unknown-source-key", src(S + "colour: red\n"), 2, ("x.yaml", "colour"), "error"),
    ("yaml-unknown-settings-key", settings("frobnicate: 1\n"), 2,
     ("h3pipe.yaml", "frobnicate"), "error"),
    ("yaml-tab-settings", settings("store: .h3pipe\n\tqueue: x\n"), 2, ("h3pipe.yaml",),
     "error"),
    ("yaml-tab-validate", src("id: x\n\tkind: raster\n", "validate"), 1, ("x.yaml",),
     "validate"),
    ("yaml-latin-1", src("id: x\ntitle: caf\u00e9\n".encode("latin-1")), 2,
     ("x.yaml", "not UTF-8"), "error"),
    ("yaml-binary", src(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))), 2,
     ("x.yaml", "binary file"), "error"),
    ("yaml-control-chars", src(b"id: x\nkind: raster\x1b[0m\n"), 2,
     ("x.yaml", "unacceptable character"), "error"),
    ("yaml-huge-file", src("id: x\n" + "# pad\n" * 300_000), 2, ("x.yaml", "larger than 1 MiB"),
     "error"),
    ("yaml-long-string", src(S.replace("theme: terrain", "theme: " + "t" * 200_000)), 2,
     ("x.yaml", "theme"), "error"),
    ("yaml-long-id", src(S.replace("id: x", "id: " + "x" * 500)), 2, ("x.yaml", "id"),
     "error"),
    ("yaml-empty-source", src(""), 2, ("x.yaml",), "error"),
    ("yaml-null-document", src("~\n"), 2, ("x.yaml",), "error"),
    ("yaml-list-document", src("- id: x\n- kind: raster\n"), 2, ("x.yaml",), "error"),
    ("yaml-string-document", src("just a sentence\n"), 2, ("x.yaml",), "error"),
    ("yaml-multi-document", src(S + "---\n" + S), 2, ("x.yaml",), "error"),
    ("yaml-unclosed-quote", src("id: 'x\nkind: raster\n"), 2, ("x.yaml",), "error"),
    ("yaml-python-tag", src("id: !!python/object/apply:os.system ['true']\n"), 2, ("x.yaml",),
     "error"),
    ("yaml-bom-pipeline-ok", pipe("\ufeff" + P), 0, ("completed",), "ok"),
    ("yaml-bom-unknown-key", pipe("\ufeff" + P + "frobnicate: 1\n"), 2,
     (f"p.yaml:{P.count(chr(10)) + 1}", "frobnicate"), "error"),
    ("yaml-crlf-pipeline-ok", pipe(P.replace("\n", "\r\n")), 0, ("completed",), "ok"),
    ("yaml-crlf-bad-resolution", pipe(P.replace("resolution: 7", "resolution: 99")
                                      .replace("\n", "\r\n")), 2, ("p.yaml:3", "99"),
     "error"),
    ("yaml-nul-byte", src(b"id: x\x00\nkind: raster\n"), 2, ("x.yaml",), "error"),
    ("sources-register-laughs", lambda w: (w.file("bomb.yaml", _laughs()), ("sources", "register",
                                        str(w.tmp / "bomb.yaml")))[1], 2,
     ("bomb.yaml", "more than 10000 values"), "error"),
    ("sources-register-missing", args("sources", "register", "/nowhere/s.yaml"), 2,
     ("/nowhere/s.yaml",), "error"),
    ("sources-register-a-pipeline", lambda w: ("sources", "register",
                                            str(w.root / "pipelines" / "p.yaml")), 2,
     ("p.yaml",), "error"),
    # -- bad command-line values ----------------------------------------------------------------
    ("run-batch-size-float", args(*RUN, "--batch-size", "1e3"), 2, ("--batch-size",), "error"),
    ("run-workers-negative", args("run", "p", "--bbox", BBOX, "--workers", "-1"), 2,
     ("workers",), "error"),
    ("run-resolution-range-too-far", args(*RUN, "-r", "4-99"), 2, ("outside 0..15",), "error"),
    ("run-resolution-backwards", args(*RUN, "-r", "9-4"), 2, ("backwards",), "error"),
    ("run-resolution-words", args(*RUN, "-r", "six"), 2, ("six",), "error"),
    ("run-from-step-unknown", args(*RUN, "--from-step", "nosuchstep"), 2, ("nosuchstep",),
     "error"),
    ("run-max-null-share-2", args(*RUN, "--max-null-share", "2"), 2, ("max-null-share",),
     "error"),
    ("run-queue-not-amqp", args(*RUN, "--queue", "http://127.0.0.1:9/"), 2, ("amqp",),
     "error"),
    ("run-two-scopes", args("run", "p", "--bbox", BBOX, "--iso3", "RWA", "--workers", "1"), 2,
     ("exactly one of", "--iso3, --bbox"), "error"),
    ("run-no-scope", args("run", "p", "--workers", "1"), 2, ("exactly one of",), "error"),
    ("run-iso3-lowercase-unknown", args("run", "p", "--iso3", "zzz", "--workers", "1"), 2,
     ("ZZZ",), "error"),
    ("run-iso3-group-unknown", args("run", "p", "--iso3", "@nogroup", "--workers", "1"), 2,
     ("nogroup",), "error"),
    ("run-aoi-empty", aoi("", "empty.geojson"), 2, ("empty.geojson",), "error"),
    ("run-aoi-not-json", aoi('{"type": "Feature", ', "broken.geojson"), 2,
     ("broken.geojson",), "error"),
    ("run-aoi-binary", aoi(bytes(range(256)) * 8, "noise.gpkg"), 2, ("noise.gpkg",), "error"),
    ("run-aoi-empty-collection", aoi('{"type": "FeatureCollection", "features": []}',
                                     "none.geojson"), 2, ("none.geojson",), "error"),
    ("plan-resolution-range-ok", args("plan", "p", "--bbox", BBOX, "-r", "6-8"), 0,
     ("resolutions 6 (", "7 (", "8 ("), "ok"),
    ("plan-resolution-list-json-ok", args("plan", "p", "--bbox", BBOX, "-r", "6,8",
                                          "--format", "json"), 0, ('"resolution": 8',), "ok"),
    ("plan-format-xml", args("plan", "p", "--bbox", BBOX, "--format", "xml"), 2, ("xml",),
     "error"),
    ("plan-unknown-pipeline", args("plan", "nopipe", "--bbox", BBOX), 2, ("nopipe",), "error"),
    ("plan-resolution-16", args("plan", "p", "--bbox", BBOX, "-r", "16"), 2, ("16",), "error"),
    ("plan-bbox-inverted", args("plan", "p", "--bbox", "29.18,-2.02,29.02,-2.18"), 2, ("bbox",),
     "error"),
    ("plan-empty-scope", args("plan", "p", "--bbox", "29.1,-2.1,29.1001,-2.0999", "-r", "0"),
     2, ("scope",), "error"),
    ("plan-aoi-not-json", aoi("not json at all", "notes.geojson", "plan"), 2,
     ("notes.geojson",), "error"),
    ("validate-missing-path", args("validate", "nosuchfile.yaml"), 2, ("nosuchfile.yaml",),
     "error"),
    ("validate-format-xml", args("validate", "--format", "xml"), 2, ("xml",), "error"),
    ("validate-empty-folder", lambda w: ("--project", str(w.tmp / "empty"), "validate")
     if (w.tmp / "empty").mkdir() is None else (), 2, ("not an h3pipe project",), "error"),
    ("validate-project-is-a-file", lambda w: ("--project", str(w.file("f.txt", "x")),
                                              "validate"), 2, ("f.txt",), "error"),
    ("export-iso3-unknown", lambda w: ("export", "ds", "--iso3", "XYZ",
                                       "-o", str(w.tmp / "x.parquet")), 2,
     ("no results", "it has: bbox"), "error"),
    ("export-run-unknown", lambda w: ("export", "ds", "--run", "nope",
                                      "-o", str(w.tmp / "x.parquet")), 2, ("nope",), "error"),
    ("export-bbox-short", lambda w: ("export", "ds", "--bbox", "1,2",
                                     "-o", str(w.tmp / "x.parquet")), 2, ("bbox",), "error"),
    ("export-where-not-a-sweep", lambda w: ("export", "ds", "--where", "year=2050",
                                            "-o", str(w.tmp / "x.parquet")), 2, ("year",),
     "error"),
    ("export-where-no-equals", lambda w: ("export", "ds", "--where", "year",
                                          "-o", str(w.tmp / "x.parquet")), 2, ("year",),
     "error"),
    ("export-resolution-16", lambda w: ("export", "ds", "-r", "16",
                                        "-o", str(w.tmp / "x.parquet")), 2, ("no results",),
     "error"),
    ("map-vmin-above-vmax", lambda w: (*MAP, "--vmin", "100", "--vmax", "1",
                                       "-o", str(w.tmp / "m.png")), 2, ("--vmin", "--vmax"),
     "error"),
    ("map-vmin-equals-vmax", lambda w: (*MAP, "--vmin", "5", "--vmax", "5",
                                        "-o", str(w.tmp / "m.png")), 2, ("--vmin",), "error"),
    ("map-vmin-nan", lambda w: (*MAP, "--vmin", "nan", "-o", str(w.tmp / "m.png")), 2,
     ("--vmin", "finite"), "error"),
    ("map-width-huge", lambda w: (*MAP, "--width", "100000", "-o", str(w.tmp / "m.png")), 2,
     ("--width", "10,000"), "error"),
    ("map-height-huge", lambda w: (*MAP, "--height", "50000", "-o", str(w.tmp / "m.png")), 2,
     ("--height", "10,000"), "error"),
    ("map-width-tiny", lambda w: (*MAP, "--width", "10", "-o", str(w.tmp / "m.png")), 2,
     ("--width",), "error"),
    ("map-unknown-column", lambda w: ("map", "ds", "nosuchcol", "--run", "latest",
                                      "-o", str(w.tmp / "m.png")), 2, ("nosuchcol",), "error"),
    ("map-unknown-dataset", lambda w: ("map", "nods", "--run", "latest",
                                       "-o", str(w.tmp / "m.png")), 2, ("nods",), "error"),
    ("map-no-scope", lambda w: ("map", "ds", "-o", str(w.tmp / "m.png")), 2, ("scope",),
     "error"),
    ("map-where-no-sweep", lambda w: (*MAP, "--where", "ssp=ssp245",
                                      "-o", str(w.tmp / "m.png")), 2, ("ssp",), "error"),
    ("runs-show-empty-id", args("runs", "show", ""), 2, ("run",), "error"),
    ("runs-report-unknown", lambda w: ("runs", "report", "nope", "-o", str(w.tmp / "r.html")),
     2, ("nope",), "error"),
    ("runs-cancel-unknown", args("runs", "cancel", "nope"), 2, ("nope",), "error"),
    ("runs-cancel-latest-not-running", args("runs", "cancel", "latest"), 2,
     ("p-r7-", "is not running"), "error"),
    ("runs-wait-unknown", args("runs", "wait", "nope"), 2, ("nope",), "error"),
    ("runs-list-no-store", lambda w: (shutil.rmtree(w.root / ".h3pipe"), ("runs", "list"))[1],
     2, ("no h3pipe store",), "error"),
    ("resume-unknown", args("resume", "nope"), 2, ("nope",), "error"),
    ("clean-run-unknown", args("clean", "--run", "nope"), 2, ("nope",), "error"),
    ("clean-older-than-negative", args("clean", "--older-than", "-5"), 2, ("--older-than",),
     "error"),
    ("clean-older-than-nan", args("clean", "--older-than", "nan"), 2, ("--older-than",),
     "error"),
    ("clean-older-than-inf", args("clean", "--older-than", "inf"), 2, ("--older-than",),
     "error"),
    ("clean-older-than-words", args("clean", "--older-than", "soon"), 2, ("--older-than",),
     "error"),
    ("db-status-mysql", args("--store", "mysql://u:pw@db/h3", "db", "status"), 2,
     ("mysql://...", "postgresql://"), "error"),
    ("db-upgrade-s3", args("--store", "s3://bucket/h3", "db", "upgrade"), 2, ("s3://...",),
     "error"),
    ("store-mysql-run", args("--store", "mysql://u:pw@db/h3", *RUN), 2, ("mysql://...",),
     "error"),
    ("log-file-missing-folder", lambda w: ("--log-file", str(w.tmp / "no" / "dir" / "x.log"),
                                           "runs", "list"), 2, (str(Path("no") / "dir"),),
     "error"),
    ("sources-inspect-bad-id", lambda w: ("sources", "inspect", str(w.data / "half.tif"),
                                          "--id", "Bad ID!", "-o", str(w.tmp / "s.yaml")), 2,
     ("Bad ID!", "bad-id"), "error"),
    ("sources-inspect-not-a-raster", lambda w: ("sources", "inspect", str(w.data / "text.tif")),
     2, ("text.tif",), "error"),
    ("sources-inspect-empty-file", lambda w: ("sources", "inspect", str(w.data / "empty.tif")),
     2, ("empty.tif",), "error"),
    ("sources-inspect-missing", args("sources", "inspect", "/nowhere/dem.tif"), 2,
     ("/nowhere/dem.tif",), "error"),
    ("sources-inspect-format-xml", lambda w: ("sources", "inspect", str(w.data / "empty.tif"),
                                              "--format", "xml"), 2, ("xml",), "error"),
    ("sources-show-unknown", args("sources", "show", "nosource"), 2, ("nosource",), "error"),
    ("sources-deactivate-unknown", args("sources", "deactivate", "nosource"), 2,
     ("nosource",), "error"),
    ("worker-embedded-store", args("worker", "--queue", f"amqp://guest:guest@{CLOSED}//"), 2,
     ("PostgreSQL",), "error"),
    ("schema-unknown-kind", args("schema", "bogus"), 2, ("bogus",), "error"),
    ("unknown-command", args("frobnicate"), 2, ("frobnicate",), "error"),
    # -- missing and corrupt data files --------------------------------------------------------
    ("raster-empty-file", raster_at("empty.tif"), 2, ("empty.tif",), "error"),
    ("raster-text-file", raster_at("text.tif"), 2, ("text.tif",), "error"),
    ("raster-truncated-header", raster_at("half.tif"), 1, ("half.tif", "truncated"), "error"),
    ("raster-empty-file-plan", raster_at("empty.tif", "plan", "p", "--bbox", BBOX), 2,
     ("empty.tif",), "error"),
    ("raster-closed-port", lambda w: (w.write("sources/s.yaml", raster_source(
        "s", f"http://{CLOSED}/dem.tif")), RUN)[1], 1, ("dem.tif", CLOSED), "error"),
    ("vector-not-parquet", vector_at("DATA/text.parquet"), 2, ("text.parquet",), "error"),
    ("vector-truncated-parquet", vector_at("DATA/truncated.parquet"), 2,
     ("truncated.parquet",), "error"),
    ("vector-corrupt-wkb", vector_at("DATA/bad_wkb.parquet"), 2,
     ("bad_wkb.parquet", "row 3", "row group 1", "WKB"), "error"),
    ("vector-corrupt-wkb-plan", vector_at("DATA/bad_wkb.parquet", "plan", "vp", "--bbox",
                                          BBOX), 2, ("bad_wkb.parquet", "row 3"), "error"),
    ("vector-corrupt-wkb-covering", vector_at("DATA/bad_wkb_cover.parquet"), 1,
     ("bad_wkb_cover.parquet", "feature 'b3'", "WKB"), "error"),
    ("vector-geojson-not-json", vector_at("DATA/broken.geojson"), 2, ("broken.geojson",),
     "error"),
    ("vector-geojson-empty", vector_at("DATA/empty.geojson"), 2, ("empty.geojson",), "error"),
]


@pytest.mark.parametrize("name,setup,code,words,mode",
                         [pytest.param(*c, id=c[0]) for c in CASES])
def test_hostile_input(name, setup, code, words, mode, work, cli):
    given = setup(work)
    full = given if given[:1] == ("--project",) else ("--project", work.root, *given)

    r = cli(*full)

    said = r.stdout + r.stderr
    assert "Traceback" not in said and "internal error" not in said, said
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    if mode == "ok":
        assert all(w in said for w in words), said
        return
    if mode == "validate":
        problems = [ln for ln in r.stdout.splitlines() if ln and not ln.startswith(" ")]
        assert problems and all(w in problems[0] for w in words), r.stdout
        return
    lines = r.stderr.rstrip("\n").splitlines()
    if len(lines) > 1 and lines[-1].startswith("Try '"):  # usage errors add a help hint
        lines = lines[:-1]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], r.stderr
    assert all(w.lower() in errors[0].lower() for w in words), r.stderr


def test_the_corpus_is_broad() -> None:
    """At least 100 hostile cases in tests/, over every command."""
    from tests.cli.test_broken_inputs import CASES as BROKEN
    from tests.cli.test_broken_inputs import HOSTILE
    from tests.corpus.corpus_cases import INVALID, cases

    total = len(CASES) + len(BROKEN) + len(HOSTILE) + len(cases(INVALID))
    assert total >= 200, total
    named = " ".join(c[0] for c in CASES)
    for command in ("run", "plan", "validate", "export", "map", "runs-show", "runs-list",
                    "runs-cancel", "runs-report", "resume", "clean", "db-status", "db-upgrade",
                    "sources-register", "sources-inspect", "worker"):
        assert command in named, command


# --- with servers: PostgreSQL and RabbitMQ --------------------------------------------------

@pytest.mark.parametrize("broker,code,words", [
    pytest.param("amqp://guest:not-the-password@127.0.0.1:5672//", 2,
                 ("refused the login of user 'guest'", "127.0.0.1:5672", "password"),
                 id="wrong-password"),
    pytest.param("amqp://nobody:pw@127.0.0.1:5672//", 2, ("user 'nobody'",), id="no-such-user"),
    pytest.param(f"amqp://guest:guest@{CLOSED}//", 69, (CLOSED, "start RabbitMQ"),
                 id="closed-port"),
])
@pytest.mark.parametrize("command", ["worker", "run"])
def test_a_refused_login_is_told_from_a_broker_that_is_down(broker, code, words, command,
                                                             work, cli, pg_url):
    from tests.workers import broker_up

    broker_up()
    assert cli("--store", pg_url, "db", "upgrade").exit_code == 0
    given = ("worker",) if command == "worker" else ("run", "p", "--bbox", BBOX)
    r = cli("--project", work.root, "--store", pg_url, *given, "--queue", broker)

    assert r.exit_code == code, (r.stdout, r.stderr)
    (line,) = r.stderr.splitlines()[-1:]
    assert line.startswith("error: ") and all(w in line for w in words), r.stderr
    assert "Traceback" not in r.stderr and "pw@" not in r.stderr
    assert ("start RabbitMQ" in line) == (code == 69), line


@pytest.fixture
def unprivileged_db():
    """A database owned by a role that is no superuser, without PostGIS; and one with
    PostGIS created by the superuser beforehand. The role and both go at the end."""
    import secrets

    from tests.pg import _admin

    tag = secrets.token_hex(4)
    role, bare, ready = f"h3pipe_role_{tag}", f"h3pipe_bare_{tag}", f"h3pipe_ready_{tag}"
    with _admin() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
        for db in (bare, ready):
            conn.execute(f'CREATE DATABASE "{db}" OWNER "{role}"')
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{ready}",
                         autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    yield {name: f"postgresql://{role}@127.0.0.1:5432/{db}"
           for name, db in (("bare", bare), ("ready", ready))}, role, bare
    with _admin() as conn:
        for db in (bare, ready):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_db_upgrade_as_an_unprivileged_role(unprivileged_db, work, cli):
    urls, role, bare = unprivileged_db

    r = cli("--project", work.root, "--store", urls["bare"], "db", "upgrade")

    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [
        f"error: the database store at {urls['bare']} has no PostGIS, and user '{role}' may "
        f"not add it; ask a database administrator to run 'CREATE EXTENSION postgis;' in "
        f"database {bare} (psql -d {bare}), then 'h3pipe db upgrade' again"]
    # Where PostGIS is there already, the same role upgrades and runs.
    r = cli("--project", work.root, "--store", urls["ready"], "db", "upgrade")
    assert r.exit_code == 0, r.stderr
    assert "0001_initial" in r.stdout
    r = cli("--project", work.root, "--store", urls["ready"], *RUN)
    assert r.exit_code == 0, r.stderr
