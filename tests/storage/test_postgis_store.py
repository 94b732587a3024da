"""The PostgreSQL/PostGIS store: migrations, the same numbers as the embedded store,
replacement without duplicates, the catalog commands, and credentials never shown."""

from __future__ import annotations

import math

import numpy as np
import psycopg
import pyarrow as pa
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


def assert_same_bits(a, b):
    """Same columns, types and nulls, and every double the same 64 bits (== would take -0.0
    for 0.0, and never NaN for NaN)."""
    assert a.schema.names == b.schema.names and a.schema.types == b.schema.types
    for name in a.schema.names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        assert x.is_null().equals(y.is_null()), name
        if pa.types.is_floating(x.type):
            xs = np.asarray(x.fill_null(0.0), dtype=np.float64).view(np.uint64)
            ys = np.asarray(y.fill_null(0.0), dtype=np.float64).view(np.uint64)
            assert np.array_equal(xs, ys), name
        else:
            assert x.equals(y), name


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
    assert_same_bits(pg, emb)

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
        watcher.join(timeout=30)
    assert not watcher.is_alive(), "the reader never came back from a count"
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


def test_task_outputs_come_back_exactly_as_written(tmp_path, pg_url):
    """Every kind of column a step may pass on, through binary COPY and back through CSV:
    awkward doubles, nulls, text with separators and quotes, bytes, booleans."""
    from h3pipe.storage import open_store
    from h3pipe.storage.catalog import Catalog

    Catalog(pg_url).close()  # creates the schema
    doubles = [0.0, -0.0, 5e-324, -1.7976931348623157e308, math.inf, -math.inf, math.nan,
               0.1, 1 / 3, None]
    n = len(doubles)
    first = pa.table({
        "h3_index": pa.array([f"89{i:013x}" for i in range(n)]),
        "value": pa.array(doubles, pa.float64()),
        "single": pa.array([1.5, None, -2.25, 3e38, 0, 1, 2, 3, 4, 5], pa.float32()),
        "n": pa.array([0, -1, 2**62, None, 4, 5, 6, 7, 8, -(2**63)], pa.int64()),
        "small": pa.array([1, 2, 3, 4, 5, 6, 7, 8, 9, None], pa.uint8()),
        "name": pa.array(["", None, 'a "quoted", comma', "line\nbreak", "é ü 中", "\\N",
                          "NULL", " ", "t", "x" * 5000]),
        "blob": pa.array([b"", None, b"\x00\xff", b"\\x41", b"abc", b"\n", b",", b'"', b"\\",
                          bytes(range(256))], pa.binary()),
        "flag": pa.array([True, False, None, True, False, True, False, True, False, True]),
        "nothing": pa.array([None] * n, pa.null()),
    })
    second = first.slice(2, 5)
    with open_store(pg_url, tmp_path) as store:
        refs = [store.write_task_output("r1", "step", 2, second),
                store.write_task_output("r1", "step", 1, first)]
        back = store.read_outputs(refs)
        again = store.write_task_output("r1", "step", 2, second)  # a retry replaces its rows
        assert again == refs[0]
        assert store.read_outputs([refs[1]]).num_rows == n
        assert store.read_outputs(refs).num_rows == n + 5
    expected = pa.concat_tables([second, first])
    # What PostgreSQL keeps: every integer as bigint, floats as double, nulls as text.
    kept = pa.schema([("h3_index", pa.string()), ("value", pa.float64()),
                      ("single", pa.float64()), ("n", pa.int64()), ("small", pa.int64()),
                      ("name", pa.string()), ("blob", pa.binary()), ("flag", pa.bool_()),
                      ("nothing", pa.string())])
    assert back.schema == kept
    assert_same_bits(back, expected.cast(kept))


# The long rows of h3.stats_<theme> as 0007 laid them out (the view has since gained
# 'scenario', last).
LONG = "dataset, resolution, scope_key, h3_index, stat, value, run_id"


def test_upgrade_turns_long_results_into_wide_tables(tmp_path, cli, pg_url):
    """A store published before 0008 (one long table per theme, a partition per dataset)
    reads back the same after 'db upgrade', and its next run replaces the scope's rows."""
    proj = _project(tmp_path)
    args = ["--store", pg_url, "--project", proj]
    assert cli(*args, "db", "upgrade").exit_code == 0
    assert cli(*args, "run", "p", "--bbox", BBOX, "--workers", "2").exit_code == 0
    before = tmp_path / "before.parquet"
    assert cli(*args, "export", "elev", "-o", before).exit_code == 0
    url = pg_url.replace(":s3cret-pw", "")
    with psycopg.connect(url) as conn:  # the layout 0007 left, as the old publish wrote it
        rows = conn.execute(f"SELECT {LONG} FROM h3.stats_terrain").fetchall()
        assert len(rows) == pq.read_metadata(before).num_rows * len(STATS)
        conn.execute('DROP VIEW h3.stats_terrain')
        conn.execute('DROP TABLE h3."stats_terrain__elev"')
        conn.execute('CREATE TABLE h3."stats_terrain" (dataset text NOT NULL, resolution '
                     'smallint NOT NULL, scope_key text NOT NULL, h3_index text NOT NULL, '
                     'stat text NOT NULL, value double precision, run_id text NOT NULL) '
                     'PARTITION BY LIST (dataset)')
        conn.execute('CREATE TABLE h3."stats_terrain__elev" PARTITION OF h3."stats_terrain" '
                     "FOR VALUES IN ('elev')")
        conn.execute('CREATE INDEX "stats_terrain__elev_cell" ON h3."stats_terrain__elev" '
                     '(resolution, scope_key, h3_index)')
        with conn.cursor().copy("COPY h3.stats_terrain FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        conn.execute('UPDATE h3pipe.results SET path = \'h3."stats_terrain"\'')
        conn.execute("DELETE FROM h3pipe.schema_migrations WHERE version = '0009_wide_results'")
    r = cli(*args, "run", "p", "--bbox", BBOX)
    assert r.exit_code == 2 and "0009_wide_results" in r.stderr
    r = cli(*args, "db", "upgrade")
    assert r.exit_code == 0 and "0009_wide_results" in r.stdout
    after = tmp_path / "after.parquet"
    assert cli(*args, "export", "elev", "-o", after).exit_code == 0
    assert_same_bits(pq.read_table(after), pq.read_table(before))
    with psycopg.connect(url) as conn:
        assert sorted(conn.execute(f"SELECT {LONG} FROM h3.stats_terrain").fetchall(),
                      key=repr) == sorted(rows, key=repr)
    assert cli(*args, "run", "p", "--bbox", BBOX, "--workers", "2", "--force").exit_code == 0
    again = tmp_path / "again.parquet"
    assert cli(*args, "export", "elev", "-o", again).exit_code == 0
    assert_same_bits(pq.read_table(again), pq.read_table(before))


def test_an_output_table_dropped_meanwhile_is_made_again(tmp_path, pg_url):
    """A store makes a step's table once; a cleanup in another process may drop it (a
    worker serving runs one after the other), and the next write makes it again. A table
    another store made gets its rows replaced, never added twice."""
    from h3pipe.storage import open_store
    from h3pipe.storage.catalog import Catalog

    Catalog(pg_url).close()
    rows = pa.table({"h3_index": pa.array(["89283082803ffff", "89283082807ffff"]),
                     "value": pa.array([1.5, -2.0])})
    url = pg_url.replace(":s3cret-pw", "")
    with open_store(pg_url, tmp_path) as store, open_store(pg_url, tmp_path) as other:
        first = store.write_task_output("r1", "step", 1, rows)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {first.partition('#')[0]}")
        second = store.write_task_output("r1", "step", 2, rows)
        assert store.read_outputs([second]).equals(rows)
        assert not store.output_exists(first)
        # Another store (a resumed run's process) writes task 2 again: replaced.
        assert other.write_task_output("r1", "step", 2, rows.slice(1)) == second
        assert other.read_outputs([second]).equals(rows.slice(1))


def _cells_indexes(url):
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(
            "SELECT pg_get_indexdef(indexrelid), indisprimary FROM pg_index "
            "WHERE indrelid = 'h3.cells'::regclass").fetchall())


def test_cell_outlines_loaded_in_bulk_keep_the_tables_indexes(tmp_path, cli, pg_url):
    """A first publication at a resolution loads h3.cells with its indexes dropped and
    built again after; a later one over partly the same cells adds the others one by one.
    Either way every cell is there once, with its outline, and the indexes are those the
    migrations made."""
    import h3
    import shapely

    proj = _project(tmp_path)
    url = pg_url.replace(":s3cret-pw", "")
    assert cli("--store", pg_url, "--project", proj, "db", "upgrade").exit_code == 0
    made = _cells_indexes(url)
    assert len(made) == 3 and sum(primary for _, primary in made) == 1
    seen = set()
    for n, bbox in enumerate((BBOX, "29.10,-2.18,29.26,-2.02"), 1):  # overlapping halves
        r = cli("--store", pg_url, "--project", proj, "run", "p", "--bbox", bbox,
                "--workers", "1")
        assert r.exit_code == 0, r.stderr
        out = tmp_path / f"{n}.parquet"
        assert cli("--store", pg_url, "--project", proj, "export", "elev", "--bbox", bbox,
                   "-o", out).exit_code == 0
        seen |= set(pq.read_table(out).column("h3_index").to_pylist())
        assert _cells_indexes(url) == made
    with psycopg.connect(url) as conn:
        cells = dict(conn.execute("SELECT h3_index, ST_AsBinary(geom) FROM h3.cells"
                                  ).fetchall())
        assert conn.execute("SELECT count(*) FROM h3.cells").fetchone()[0] == len(seen)
        srid = conn.execute("SELECT DISTINCT ST_SRID(geom) FROM h3.cells").fetchall()
    assert set(cells) == seen and srid == [(4326,)]
    some = sorted(seen)[:: max(1, len(seen) // 50)]
    for cell in some:  # H3's own boundary, (lat, lng) pairs, as the outline's ring
        ring = shapely.get_coordinates(shapely.from_wkb(bytes(cells[cell])))
        assert np.array_equal(ring[:-1, ::-1], np.array(h3.cell_to_boundary(cell)))
