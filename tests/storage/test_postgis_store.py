"""The PostgreSQL/PostGIS store: migrations, the same numbers as the embedded store,
replacement without duplicates, the catalog commands, and credentials never shown."""

from __future__ import annotations

import numpy as np
import psycopg
import pyarrow.parquet as pq

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"
STATS = ["count", "sum", "mean", "min", "max", "stdev", "median", "variety"]


def _project(tmp_path):
    data = np.random.default_rng(4).normal(900, 40, (250, 250)).astype("float32")
    data[50:90, 50:90] = np.nan
    tif = write_raster(tmp_path / "r.tif", data, west=29.0, north=-1.95, res=0.001)
    return write_project(tmp_path / "p", sources={"s": raster_source("s", str(tif))},
                         pipelines={"p": zonal_pipeline("p", "s", STATS, dataset="elev")})


def _no_secret(result):
    assert "s3cret-pw" not in result.stdout + result.stderr
    return result


def test_schema_must_be_upgraded_first(tmp_path, cli, pg_url):
    proj = _project(tmp_path)
    r = _no_secret(cli("--store", pg_url, "--project", proj, "db", "status"))
    assert r.exit_code == 1 and "pending: 0001_initial" in r.stdout
    r = _no_secret(cli("--store", pg_url, "--project", proj, "run", "p", "--bbox", BBOX))
    assert r.exit_code == 2 and "h3pipe db upgrade" in r.stderr
    r = _no_secret(cli("--store", pg_url, "--project", proj, "db", "upgrade"))
    assert r.exit_code == 0 and "applied now: 0001_initial" in r.stdout
    r = _no_secret(cli("--store", pg_url, "--project", proj, "db", "upgrade"))
    assert "nothing (up to date)" in r.stdout
    assert cli("--store", pg_url, "--project", proj, "db", "status").exit_code == 0


def test_same_numbers_as_the_embedded_store_and_no_duplicates(tmp_path, cli, pg_url):
    proj = _project(tmp_path)
    assert cli("--store", pg_url, "--project", proj, "db", "upgrade").exit_code == 0
    for extra in ((), ("--force",)):  # the forced run replaces the scope's rows
        r = _no_secret(cli("--store", pg_url, "--project", proj, "run", "p", "--bbox", BBOX,
                           "--workers", "2", "--batch-size", "20", *extra))
        assert r.exit_code == 0, r.stderr
    # Same batching on the embedded store: the stores must not change a single bit.
    assert cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "2",
               "--batch-size", "20").exit_code == 0
    pg_out, emb_out = tmp_path / "pg.parquet", tmp_path / "emb.parquet"
    assert cli("--store", pg_url, "--project", proj, "export", "elev", "-o", pg_out
               ).exit_code == 0
    assert cli("--project", proj, "export", "elev", "-o", emb_out).exit_code == 0
    pg, emb = pq.read_table(pg_out), pq.read_table(emb_out)
    assert pg.num_rows == emb.num_rows > 20
    assert pg.to_pylist() == emb.to_pylist()

    url = pg_url.replace(":s3cret-pw", "")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT (h3_index, stat)) FROM "
                            "h3.stats_terrain").fetchone()
        assert rows[0] == rows[1] == emb.num_rows * len(STATS)
        cells = conn.execute("SELECT count(*), bool_and(ST_IsValid(geom)) FROM h3.cells"
                             ).fetchone()
        assert cells == (emb.num_rows, True)
        temp = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'h3_temp'"
                            ).fetchone()
        assert temp == (0,)  # each run dropped its intermediates
    listing = _no_secret(cli("--store", pg_url, "--project", proj, "runs", "list"))
    assert listing.stdout.count("completed") == 1  # one run id for the same inputs
    assert "status:     completed" in _no_secret(
        cli("--store", pg_url, "--project", proj, "runs", "show", "latest")).stdout


def test_source_catalog_lives_in_postgres_too(tmp_path, cli, pg_url):
    proj = _project(tmp_path)
    cli("--store", pg_url, "--project", proj, "db", "upgrade")
    src = proj / "sources" / "s.yaml"
    assert "added (version 1)" in cli("--store", pg_url, "--project", proj, "sources",
                                      "register", src).stdout
    assert cli("--store", pg_url, "--project", proj, "sources", "deactivate", "s").exit_code == 0
    r = cli("--store", pg_url, "--project", proj, "validate")
    assert r.exit_code == 1 and "deactivated" in r.stdout
    # The embedded store knows nothing of it.
    assert cli("--project", proj, "validate").exit_code == 0


def test_connection_from_the_environment_or_a_service_file(tmp_path, cli, pg_url,
                                                           monkeypatch):
    proj = _project(tmp_path)
    name = pg_url.rsplit("/", 1)[1]
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGUSER", "postgres")
    monkeypatch.setenv("PGDATABASE", name)
    r = cli("--store", "postgresql://", "--project", proj, "db", "upgrade")
    assert r.exit_code == 0 and "0001_initial" in r.stdout
    for var in ("PGHOST", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(var)
    service = tmp_path / "pg_service.conf"
    service.write_text(f"[h3]\nhost=127.0.0.1\nport=5432\nuser=postgres\ndbname={name}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    r = cli("--store", "postgresql:///?service=h3", "--project", proj, "db", "status")
    assert r.exit_code == 0 and "pending: none" in r.stdout


def test_a_reader_never_sees_a_half_written_scope(tmp_path, cli, pg_url):
    import subprocess
    import sys
    import threading

    proj = _project(tmp_path)
    cli("--store", pg_url, "--project", proj, "db", "upgrade")
    args = ["--store", pg_url, "--project", str(proj), "run", "p", "--bbox", BBOX,
            "--resolution", "9", "--workers", "2"]
    assert cli(*args).exit_code == 0
    args.append("--force")  # the same scope, recomputed, while a reader watches
    url = pg_url.replace(":s3cret-pw", "")
    with psycopg.connect(url) as conn:
        full = conn.execute("SELECT count(*) FROM h3.stats_terrain").fetchone()[0]
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                seen.append(conn.execute("SELECT count(*) FROM h3.stats_terrain"
                                         ).fetchone()[0])

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:  # the same scope again, in another process, while we read
        done = subprocess.run([sys.executable, "-m", "h3pipe", *args], capture_output=True,
                              text=True, timeout=120)
    finally:
        stop.set()
        watcher.join()
    assert done.returncode == 0, done.stderr
    assert len(seen) > 20 and set(seen) == {full}


def test_parquet_intermediates_on_postgres_give_the_same_rows(tmp_path, cli, pg_url):
    proj = _project(tmp_path)
    cli("--store", pg_url, "--project", proj, "db", "upgrade")
    args = ["--store", pg_url, "--project", proj]
    assert cli(*args, "run", "p", "--bbox", BBOX, "--workers", "2",
               "--batch-size", "20").exit_code == 0
    table_out = tmp_path / "table.parquet"
    assert cli(*args, "export", "elev", "-o", table_out).exit_code == 0
    text = (proj / "pipelines" / "p.yaml").read_text()
    (proj / "pipelines" / "p.yaml").write_text(text.replace(
        "    params:", "    storage: parquet\n    params:"))
    assert "storage: parquet" in (proj / "pipelines" / "p.yaml").read_text()
    r = cli(*args, "run", "p", "--bbox", BBOX, "--workers", "2", "--batch-size", "20",
            "--force")
    assert r.exit_code == 0, r.stderr
    parquet_out = tmp_path / "parquet.parquet"
    assert cli(*args, "export", "elev", "-o", parquet_out).exit_code == 0
    assert pq.read_table(parquet_out).to_pylist() == pq.read_table(table_out).to_pylist()
    with psycopg.connect(pg_url.replace(":s3cret-pw", "")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'h3_temp'"
                            ).fetchone() == (0,)
        kinds = conn.execute("SELECT location LIKE 'file:%', dropped_at IS NOT NULL FROM "
                             "h3pipe.intermediates ORDER BY created_at").fetchall()
        assert kinds == [(False, True), (True, True)]  # a table, then Parquet files
    assert not (proj / ".h3pipe" / "runs").exists() or not any(
        (proj / ".h3pipe" / "runs").iterdir())
