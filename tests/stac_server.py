"""A real, local STAC API for tests: the session fixture ``stac_api`` yields a :class:`StacApi`.

It runs the same stack h3pipe meets in production, offline: pgSTAC in a throwaway database on
the PostgreSQL at 127.0.0.1:5432, stac-fastapi-pgstac serving it, and a static file server that
answers HTTP Range requests (as blob storage does) for synthetic cop-dem-glo-30 COG tiles.
Both servers run as uvicorn subprocesses, so their event loops never meet the tests'.

Without PostgreSQL (or PostGIS) the fixture skips, except under ``CI=true``, where it fails so
that CI never passes by skipping.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from h3pipe.demo.copdem import generate_tiles
from h3pipe.demo.stac import COLLECTION_ID, collection_dict, item_dict

if TYPE_CHECKING:
    import psycopg

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
# Six 1-degree tiles (S02/S03 x E028..E030) at 360 px: a fraction of a second to generate.
TILE_BBOX = (28.9, -2.6, 30.4, -1.2)
TILE_SIZE = 360
STARTUP_TIMEOUT_S = 30.0

_UNREACHABLE = (
    f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}: start it "
    "('pg_ctlcluster 15 main start') to run the STAC API tests"
)
_NO_POSTGIS = (
    f"PostGIS is not installed for the PostgreSQL on {PG_HOST}:{PG_PORT}: "
    "'apt-get install -y postgresql-15-postgis-3' to run the STAC API tests"
)
_LOG_TAIL_LINES = 40

# The COG server: Starlette's StaticFiles answers Range with 206 and handles HEAD, unlike
# `python -m http.server`, which sends the whole file; GDAL's /vsicurl/ relies on ranges.
_COG_SERVER = """\
import sys
import uvicorn
from starlette.staticfiles import StaticFiles

uvicorn.run(StaticFiles(directory=sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning")
"""


@dataclass(frozen=True)
class StacApi:
    """A running STAC API with one collection of synthetic cop-dem-glo-30 items."""

    url: str  # STAC API root, no trailing slash
    collection: str
    items: list[str]  # item ids, in tiles_for_bbox order
    tiles: dict[str, Path]  # item id -> local copy of the tile its asset serves
    cog_url: str  # base URL of the COG server, no trailing slash; tile = cog_url/<name>.tif
    dsn: str  # the pgSTAC database


@pytest.fixture(scope="session")
def stac_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StacApi]:
    """pgSTAC + stac-fastapi-pgstac + a COG server, for the whole test session."""
    _require_postgres()
    work = tmp_path_factory.mktemp("stac_api")
    tiles_dir = work / "tiles"
    tile_paths = generate_tiles(tiles_dir, TILE_BBOX, size=TILE_SIZE)

    dbname = f"h3pipe_stac_{secrets.token_hex(6)}"
    dsn = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}?connect_timeout=5"
    cog_port, api_port = _free_port(), _free_port()
    cog_url = f"http://127.0.0.1:{cog_port}"
    api_url = f"http://127.0.0.1:{api_port}"

    servers: list[_Server] = []
    _admin(f'CREATE DATABASE "{dbname}"')
    try:
        items = [item_dict(p, f"{cog_url}/{p.name}") for p in tile_paths]
        _load(dsn, [collection_dict(items)], items, migrate=True)

        servers.append(
            _Server.start(
                "COG server",
                [sys.executable, "-c", _COG_SERVER, str(tiles_dir), str(cog_port)],
                work,
            )
        )
        servers.append(
            _Server.start(
                "stac-fastapi-pgstac",
                [
                    sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app",
                    "--factory", "--host", "127.0.0.1", "--port", str(api_port),
                    "--log-level", "warning",
                ],
                work,
                env={
                    "PGHOST": PG_HOST,
                    "PGPORT": str(PG_PORT),
                    "PGUSER": PG_USER,
                    "PGDATABASE": dbname,
                    # Required by stac-fastapi's settings even though trust auth ignores it.
                    "PGPASSWORD": "unused",
                },
            )
        )
        servers[0].wait_until(f"{cog_url}/{tile_paths[0].name}", method="HEAD")
        servers[1].wait_until(f"{api_url}/_mgmt/ping")

        with pytest.MonkeyPatch.context() as mp:
            # As h3pipe's raster module does, so a test's direct rasterio read over HTTP
            # does not probe the COG server for sidecar files either.
            mp.setenv(
                "GDAL_DISABLE_READDIR_ON_OPEN",
                os.environ.get("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR"),
            )
            yield StacApi(
                url=api_url,
                collection=COLLECTION_ID,
                items=[it["id"] for it in items],
                tiles={p.stem: p for p in tile_paths},
                cog_url=cog_url,
                dsn=dsn,
            )
    finally:
        for server in reversed(servers):
            server.stop()
        # FORCE: the API's pool may still hold connections if it died rather than shut down.
        _admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def empty_collection(stac_api: StacApi, collection_id: str) -> str:
    """Load a collection with no items into ``stac_api``'s database; return its id."""
    coll = collection_dict([], collection_id=collection_id, title=f"{collection_id} (empty)")
    _load(stac_api.dsn, [coll], [], migrate=False)
    return collection_id


# --- PostgreSQL ------------------------------------------------------------------------------


def _skip_or_fail(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _require_postgres() -> None:
    import psycopg

    try:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=2
        ) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'"
            ).fetchone()
    except psycopg.OperationalError:
        _skip_or_fail(_UNREACHABLE)
        return
    if not row or not row[0]:
        _skip_or_fail(_NO_POSTGIS)


def _admin_connect() -> psycopg.Connection:
    import psycopg

    # autocommit: CREATE/DROP DATABASE cannot run inside a transaction block.
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=2,
        autocommit=True,
    )


def _admin(statement: str) -> None:
    with _admin_connect() as conn:
        conn.execute(statement)


@contextmanager
def _migration_lock() -> Iterator[None]:
    """Serialise pgSTAC migrations across processes sharing the cluster.

    pgSTAC's migration creates and grants the cluster-wide roles pgstac_admin/_read/_ingest,
    so two test sessions migrating their own databases at once fail with "tuple concurrently
    updated". Advisory locks are per database, hence one taken in ``postgres``; closing the
    connection releases it.
    """
    with _admin_connect() as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('h3pipe tests: pgstac migrate'))")
        yield


def _load(dsn: str, collections: list[dict], items: list[dict], *, migrate: bool) -> None:
    """Migrate (optionally) and upsert into pgSTAC, in-process."""
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods
    from pypgstac.migrate import Migrate

    # An explicit DSN: without one pypgstac waits 30 s on the default socket before failing.
    db = PgstacDB(dsn=dsn)
    try:
        conn = db.connect()
        if migrate:
            with _migration_lock():
                Migrate(db).run_migration()
            # Without it pgSTAC omits numberMatched and pystac-client's matched() is None.
            conn.execute("UPDATE pgstac.pgstac_settings SET value = 'on' WHERE name = 'context'")
        loader = Loader(db)
        loader.load_collections(iter(collections), insert_mode=Methods.upsert)
        if items:
            loader.load_items(iter(items), insert_mode=Methods.upsert)
    finally:
        pool = db.pool
        db.disconnect()
        # disconnect() returns the connection but leaves the pool (and its sessions) open.
        if pool is not None:
            pool.close()


# --- servers -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], work: Path,
              env: dict[str, str] | None = None) -> _Server:
        log = work / f"{name.replace(' ', '_')}.log"
        full_env = {**os.environ, **(env or {})}
        # Local servers must never be reached through a proxy.
        full_env["NO_PROXY"] = full_env["no_proxy"] = "127.0.0.1,localhost"
        with open(log, "wb") as out:
            # cwd=work: stac-fastapi reads a .env file from its working directory.
            proc = subprocess.Popen(argv, cwd=work, env=full_env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return cls(name, proc, log)

    def wait_until(self, url: str, *, method: str = "GET") -> None:
        """Poll ``url`` until it answers 200; fail with the server's log tail otherwise."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last: object = None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with code {self.proc.returncode}")
            try:
                with opener.open(urllib.request.Request(url, method=method), timeout=2) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.1)
        self._fail(f"did not answer {url} within {STARTUP_TIMEOUT_S:.0f} s (last: {last})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def _fail(self, what: str) -> None:
        self.stop()
        lines = self.log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        tail = "\n".join(lines) or "(empty)"
        pytest.fail(f"{self.name} {what}; log {self.log} ends with:\n{tail}", pytrace=False)

