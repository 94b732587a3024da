"""Workers as other machines: each in a network namespace of its own (veth to this host,
no other route) with a host name of its own, reaching RabbitMQ and PostgreSQL only over
that link (through a relay on this host's end of it: both services listen on loopback).
The project's own flood and elevation examples run through them and equal local runs; a
worker that cannot reach a source fails the run naming its host and the source."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline
from tests.tileserver import TileServer
from tests.workers import REPO, Namespace, Relay, netns_available

FLOOD_BBOX = (29.9, -2.05, 30.2, -1.85)
DEM_BBOX = "29.3,-2.2,29.9,-1.6"


@pytest.fixture
def hosts(workers):
    """Two other hosts, 'worker-a' and 'worker-b', and the URLs they reach the services at."""
    netns_available()
    made, relays = [], []
    try:
        for name in ("a", "b"):
            index = 100 + secrets.randbelow(150)
            ns = Namespace(f"h3pipe-{name}-{secrets.token_hex(3)}", index)
            made.append(ns)
            relays += [Relay((ns.host_ip, 5672), ("127.0.0.1", 5672)),
                       Relay((ns.host_ip, 5432), ("127.0.0.1", 5432))]
        yield made, relays
    finally:
        workers.stop_all()
        for r in relays:
            r.close()
        for ns in made:
            ns.remove()


def _start_on(workers, ns, hostname, **env):
    db = workers.store.rsplit("/", 1)[1]
    return workers.start(concurrency=1, netns=ns.name, hostname=hostname,
                         broker=f"amqp://guest:guest@{ns.host_ip}:5672//",
                         store=f"postgresql://postgres@{ns.host_ip}:5432/{db}", **env)


def _h3pipe(workers, project, *args, env=None):
    return subprocess.run([sys.executable, "-m", "h3pipe", "--project", str(project), *args],
                          capture_output=True, text=True, timeout=300,
                          env=workers.env(**(env or {})))


def _export(workers, project, dataset, run_id, out, store=None):
    args = ["--store", store] if store else []
    r = _h3pipe(workers, project, *args, "export", dataset, "--run", run_id, "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(out).to_pylist()
    assert len({r["h3_index"] for r in rows}) == len(rows)
    return {r["h3_index"]: r for r in rows}


def _run_id(stdout):
    return stdout.split()[1]


def _both(workers, project, tmp_path, pipeline, dataset, args, env):
    """The pipeline locally (embedded store) and on the queue; both results."""
    local_store = str(tmp_path / f"local-{pipeline}")
    r = _h3pipe(workers, project, "--store", local_store, "run", pipeline, *args, env=env)
    assert r.returncode == 0, r.stderr
    local = _export(workers, project, dataset, _run_id(r.stdout),
                    tmp_path / f"{pipeline}-local.parquet", local_store)
    q = _h3pipe(workers, project, "run", pipeline, *args, "--queue",
                "amqp://guest:guest@127.0.0.1:5672//", env=env)
    assert q.returncode == 0, q.stderr + workers.log(0) + workers.log(1)
    queued = _export(workers, project, dataset, _run_id(q.stdout),
                     tmp_path / f"{pipeline}-queue.parquet")
    return local, queued


def test_the_examples_on_workers_in_other_namespaces_equal_local_runs(
        tmp_path, workers, hosts):
    from h3pipe.demo.copdem import generate_tiles
    from h3pipe.demo.flood import generate
    from h3pipe.demo.stac import write_static_catalog

    namespaces, relays = hosts
    project = workers.project
    for folder in ("sources", "pipelines"):
        shutil.copytree(REPO / folder, project / folder)
    flood = generate(tmp_path / "flood", FLOOD_BBOX, count=3000)
    tiles = generate_tiles(tmp_path / "dem", (29.3, -2.2, 29.9, -1.6), size=240)
    catalog = write_static_catalog(tmp_path / "stac", tiles)
    env = {"FLOOD_DEPTH_100Y": str(flood[0]), "WORLDPOP": str(flood[1]),
           "BUILDINGS": str(flood[2]), "H3PIPE_STAC_API": str(catalog),
           "H3PIPE_STAC_SIGNER": "none"}
    assert _h3pipe(workers, project, "db", "upgrade").returncode == 0
    a = _start_on(workers, namespaces[0], "worker-a")
    b = _start_on(workers, namespaces[1], "worker-b")
    workers.wait_ready(a)
    workers.wait_ready(b)
    bbox = ",".join(map(str, FLOOD_BBOX))
    for pipeline, dataset, args in (
            ("building_flood_exposure", "building_flood_exposure", ["--bbox", bbox]),
            ("flood_risk_weighted", "flood_risk_pop_weighted", ["--bbox", bbox]),
            ("elevation_terrain", "elevation_copdem30",
             ["--bbox", DEM_BBOX, "--batch-size", "20"])):
        local, queued = _both(workers, project, tmp_path, pipeline, dataset, args, env)
        assert queued == local and local, pipeline
    # Both machines computed batches, and only over their links.
    assert " cells -> " in workers.log(0) or " rows -> " in workers.log(0)
    assert " cells -> " in workers.log(1) or " rows -> " in workers.log(1)
    assert all(r.connections > 0 for r in relays)


def test_a_worker_that_cannot_reach_a_source_names_its_host_and_the_source(
        tmp_path, workers, hosts):
    namespaces, _ = hosts
    root = workers.project
    data = np.full((200, 200), 7.0, dtype="float32")
    (tmp_path / "tiles").mkdir()
    write_raster(tmp_path / "tiles" / "dem.tif", data, west=29.0, north=-1.9, res=0.001)
    with TileServer(tmp_path / "tiles") as server:  # on this host's loopback only
        url = server.url_of("dem.tif")
        # One batch, tried once, each read tried once: the failure itself is under test.
        write_project(root, sources={"dem": raster_source("dem", url)}, pipelines={
            "elev": zonal_pipeline("elev", "dem", ["mean"], resolution=8, batch_size=1000
                                   ).replace("batch_size: 1000}", "batch_size: 1000, "
                                             "retries: 0}")})
        assert _h3pipe(workers, root, "db", "upgrade").returncode == 0
        w = _start_on(workers, namespaces[1], "worker-b", GDAL_HTTP_MAX_RETRY="0",
                      H3PIPE_REMOTE_BACKOFF="0.1", GDAL_HTTP_CONNECTTIMEOUT="2")
        workers.wait_ready(w)
        r = _h3pipe(workers, root, "run", "elev", "--bbox", "29.0,-2.1,29.2,-1.9", "--queue",
                    "amqp://guest:guest@127.0.0.1:5672//", env={"GDAL_HTTP_MAX_RETRY": "0"})
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "worker-b" in last and "dem.tif" in last, last
    assert "Traceback" not in r.stderr
