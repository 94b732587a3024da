"""A sentinel password, given to the PostgreSQL store in every form a location can carry
one, never shows in any output: stdout, stderr, the --log-file, -v tracebacks, the plan's
JSON, the HTML report, an export, and a worker's start-up lines. Trust authentication
accepts any password, so the runs succeed against the real server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import pytest

from h3pipe import masking
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.workers import BROKER, REPO, broker_up

SENTINEL = "S3ntinel-pw-7f3a"
# The same, with characters a URL's userinfo must percent-encode.
ODD = "S3nt!nel/pw@7f3a"
BBOX = "29.0,-2.1,29.2,-1.9"


def _forms(db: str) -> dict[str, tuple[str, dict[str, str], str | None]]:
    """(the store location, environment, h3pipe.yaml's store) per form of the password."""
    at = f"127.0.0.1:5432/{db}"
    return {
        "userinfo": (f"postgresql://postgres:{SENTINEL}@{at}", {}, None),
        "userinfo-encoded": (f"postgresql://postgres:{quote(ODD, safe='')}@{at}", {}, None),
        "query": (f"postgresql://postgres@{at}?password={SENTINEL}&sslmode=disable", {},
                  None),
        "sslpassword": (f"postgresql://postgres:{SENTINEL}@{at}?sslpassword={SENTINEL}", {},
                        None),
        "keyword": (f"host=127.0.0.1 port=5432 dbname={db} user=postgres "
                    f"password={SENTINEL} sslmode=disable", {}, None),
        "keyword-quoted": (f"host=127.0.0.1 dbname={db} password='{SENTINEL} x' user=postgres",
                           {}, None),
        "PGPASSWORD": (f"postgresql://postgres@{at}", {"PGPASSWORD": SENTINEL}, None),
        "${VAR} in h3pipe.yaml": ("", {"H3PIPE_TEST_DB_PW": SENTINEL},
                                  f"store: postgresql://postgres:${{H3PIPE_TEST_DB_PW}}@{at}"),
    }


def _leaks(text: str) -> list[str]:
    forms = {s for secret in (SENTINEL, ODD)
             for s in (secret, quote(secret, safe=""), quote_plus(secret))}
    return sorted(f for f in forms if f in text)


def _db(pg_url: str) -> str:
    return pg_url.rsplit("/", 1)[1]


def _project(tmp_path: Path, settings: str | None) -> Path:
    data = np.arange(40000, dtype="float32").reshape(200, 200)
    write_raster(tmp_path / "dem.tif", data, west=29.0, north=-1.9, res=0.001)
    # Its header reads, its pixels do not: the run starts, then fails.
    cut = write_raster(tmp_path / "cut.tif", data, west=29.0, north=-1.9, res=0.001, block=16)
    with cut.open("r+b") as f:
        f.truncate(cut.stat().st_size // 2)
    return write_project(
        tmp_path / "proj", settings=settings,
        sources={"dem": raster_source("dem", str(tmp_path / "dem.tif"), title="'Elevation'"),
                 "cut": raster_source("cut", str(cut)),
                 "gone": raster_source("gone", str(tmp_path / "missing.tif"))},
        pipelines={"p": zonal_pipeline("p", "dem", ["mean", "count"]),
                   "broken": zonal_pipeline("broken", "cut", ["mean"], dataset="b"),
                   "missing": zonal_pipeline("missing", "gone", ["mean"], dataset="m")})


@pytest.mark.parametrize("form", list(_forms("x")))
def test_no_output_shows_the_store_password(form, cli, pg_url, tmp_path, monkeypatch):
    location, env, settings = _forms(_db(pg_url))[form]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("H3PIPE_STORE", raising=False)
    project = _project(tmp_path, settings)
    log, html, out = tmp_path / "h3pipe.log", tmp_path / "report.html", tmp_path / "ds.parquet"
    store = ["--store", location] if location else []
    at = ["--project", str(project), "--log-file", str(log), "-v", *store]
    seen: dict[str, str] = {}

    def run(*args: str, code: int = 0) -> None:
        r = cli(*at, *args)
        assert r.exit_code == code, (args, r.stdout, r.stderr)
        seen[" ".join(args)] = r.stdout + r.stderr

    run("db", "upgrade")
    run("db", "status")
    run("plan", "p", "--bbox", BBOX, "--format", "json")
    run("run", "p", "--bbox", BBOX, "--workers", "1")
    run("runs", "show", "latest")
    run("runs", "list")
    run("runs", "report", "latest", "-o", str(html))
    run("export", "ds", "-o", str(out))
    run("run", "broken", "--bbox", BBOX, "--workers", "1", code=1)
    run("runs", "show", "latest", code=1)  # a failed run's record, with its error
    run("run", "missing", "--bbox", BBOX, "--workers", "1", code=2)
    run("sources", "list")
    # The database was the store (no folder was made of a keyword string), and shown.
    assert not (project / ".h3pipe" / "catalog.sqlite").exists()
    assert _db(pg_url) in seen["db status"]
    assert masking.MASK in seen["db status"] or form == "PGPASSWORD"
    files = {p.name: p.read_bytes().decode("utf-8", "replace") for p in (log, html)}
    files["ds.parquet"] = out.read_bytes().decode("latin-1")
    assert html.stat().st_size > 1000 and "Elevation" in files["report.html"]
    files["the store's tables"] = _dump(pg_url)
    leaks = {k: _leaks(v) for k, v in {**seen, **files}.items() if _leaks(v)}
    assert not leaks, leaks


@pytest.mark.parametrize("form", ["userinfo", "query", "keyword"])
def test_a_connection_error_does_not_show_the_password(form, cli, pg_url, tmp_path):
    """A database that does not exist: the driver's error is shown, its password not."""
    location = _forms(_db(pg_url) + "_nope")[form][0]
    project = _project(tmp_path, None)
    log = tmp_path / "h3pipe.log"
    for args in (["db", "status"], ["run", "p", "--bbox", BBOX, "--workers", "1"]):
        r = cli("--project", project, "--log-file", log, "-v", "--store", location, *args)
        assert r.exit_code != 0 and "does not exist" in r.stderr, r.stderr
        assert "Traceback" in r.stderr  # -v: the whole chain, scrubbed
        assert not _leaks(r.stdout + r.stderr + log.read_text()), r.stderr


def test_a_queue_run_and_its_worker_never_show_the_passwords(pg_url, tmp_path):
    """A real worker and a real queue run: the store's sentinel and the broker's password
    (guest, which RabbitMQ needs right) are masked in the worker's lines and the run's
    output, and the store's own tables do not hold the sentinel either."""
    broker_up()
    location = _forms(_db(pg_url))["query"][0]
    project = _project(tmp_path, None)
    logfile = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("H3PIPE_")}
    env |= {"PYTHONPATH": str(REPO), "H3PIPE_QUEUE_NAME": f"h3pipe-secrets-{os.getpid()}"}
    h3pipe = [sys.executable, "-m", "h3pipe", "--project", str(project), "--store", location]
    subprocess.run([*h3pipe, "db", "upgrade"], env=env, check=True, capture_output=True)
    with logfile.open("wb") as sink:
        proc = subprocess.Popen([*h3pipe, "-v", "worker", "--queue", BROKER, "--concurrency",
                                 "1"], stdout=sink, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while ": ready" not in logfile.read_text():
            assert proc.poll() is None, logfile.read_text()
            assert time.monotonic() < deadline, logfile.read_text()
            time.sleep(0.2)
        run = subprocess.run([*h3pipe, "-v", "run", "p", "--bbox", BBOX, "--queue", BROKER],
                             env=env, capture_output=True, text=True, timeout=300)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", env["H3PIPE_QUEUE_NAME"]],
                       capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr
    text = logfile.read_text()
    assert "amqp://guest:***@127.0.0.1:5672//" in text and "password=***" in text
    assert "guest:guest" not in text + run.stdout + run.stderr
    assert not _leaks(text + run.stdout + run.stderr), text + run.stderr
    assert not _leaks(_dump(pg_url))


def _dump(url: str) -> str:
    """Every row of the store's catalog tables, as text."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'h3pipe'")]
        assert "queue_runs" in tables
        return "\n".join(str(row) for t in tables
                         for row in conn.execute(f'SELECT * FROM h3pipe."{t}"'))


def test_a_registered_source_is_listed_without_its_password(cli, tmp_path):
    """A PostGIS source written with its password: the catalog's location column (what
    'sources list' shows) holds it masked."""
    project = write_project(tmp_path / "proj", sources={"b": f"""\
        id: b
        kind: vector
        path: postgresql://postgres:{SENTINEL}@127.0.0.1:5432/gis
        table: public.buildings
        id_field: bid
        theme: infrastructure
        """})
    r = cli("--project", project, "sources", "register", project / "sources" / "b.yaml")
    assert r.exit_code == 0, r.stderr
    listing = cli("--project", project, "sources", "list")
    assert "postgresql://postgres:***@127.0.0.1:5432/gis" in listing.stdout, listing.stdout
    assert not _leaks(r.stdout + r.stderr + listing.stdout + listing.stderr)


def test_a_recorded_error_is_kept_and_shown_without_its_password(cli, tmp_path):
    """What a run records of an error (a library's message may quote a connection string)
    is scrubbed before the store keeps it, so 'runs show' cannot print it."""
    from h3pipe.storage import open_store
    from h3pipe.storage.runlog import RunLog

    project = _project(tmp_path, None)
    assert cli("--project", project, "run", "p", "--bbox", BBOX, "--workers", "1"
               ).exit_code == 0
    quoted = f"could not reach postgresql://u@db/x?password={SENTINEL} (password='{ODD}')"
    with open_store(".h3pipe", project) as store:
        log = RunLog(store.catalog)
        [row] = store.catalog.query("SELECT run_id FROM runs")
        log.event(row["run_id"], "run", row["run_id"], "failed", quoted)
        log.finish(row["run_id"], "failed", quoted)
        kept = str(store.catalog.query("SELECT * FROM runs")) + str(
            store.catalog.query("SELECT * FROM events"))
    shown = cli("--project", project, "runs", "show", "latest")
    assert "password=***" in shown.stdout, shown.stdout
    assert not _leaks(kept + shown.stdout + shown.stderr)
