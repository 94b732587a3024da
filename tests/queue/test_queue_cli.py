"""What 'h3pipe run --queue' and 'h3pipe worker' refuse, in one line each, before any
work: the embedded store, a broker that is down, options that mean nothing on a queue."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from h3pipe.errors import ConfigError, UsageError
from h3pipe.queue.settings import QueueSettings
from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.0,-2.1,29.2,-1.9"


@pytest.fixture
def project(tmp_path):
    data = np.ones((200, 200), dtype="float32")
    write_raster(tmp_path / "dem.tif", data, west=29.0, north=-1.9, res=0.001)
    return write_project(tmp_path / "proj", sources={"dem": raster_source(
        "dem", str(tmp_path / "dem.tif"))}, pipelines={"elev": zonal_pipeline("elev", "dem",
                                                                            ["mean"])})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_embedded_store_is_refused_saying_why(cli, project):
    r = cli("--project", project, "run", "elev", "--bbox", BBOX, "--queue",
            "amqp://guest:guest@127.0.0.1:5672//")
    assert r.exit_code == 2
    assert "needs the PostgreSQL store" in r.stderr and "one transaction" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # the error and its hint


def test_a_broker_that_is_down_is_named_with_exit_69(cli, project, pg_url):
    port = _free_port()
    assert cli("--project", project, "--store", pg_url, "db", "upgrade").exit_code == 0
    r = cli("--project", project, "--store", pg_url, "run", "elev", "--bbox", BBOX,
            "--queue", f"amqp://guest:secret@127.0.0.1:{port}//")
    assert r.exit_code == 69, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "secret" not in r.stderr
    # Nothing was claimed or recorded: the broker is checked first.
    assert "no runs yet" in cli("--project", project, "--store", pg_url, "runs", "list").stdout
    w = cli("--project", project, "--store", pg_url, "worker", "--queue",
            f"amqp://guest:secret@127.0.0.1:{port}//")
    assert w.exit_code == 69 and "secret" not in w.stderr


def test_options_that_mean_nothing_on_a_queue_are_usage_errors(cli, project, pg_url):
    r = cli("--project", project, "run", "elev", "--bbox", BBOX, "--detach")
    assert r.exit_code == 2 and "--detach needs a queue" in r.stderr
    r = cli("--project", project, "--store", pg_url, "run", "elev", "--bbox", BBOX,
            "--workers", "2", "--queue", "amqp://guest@127.0.0.1:5672//")
    assert r.exit_code == 2 and "h3pipe worker" in r.stderr
    r = cli("--project", project, "run", "elev", "--bbox", BBOX, "--queue", "redis://x")
    assert r.exit_code == 2 and "not an amqp:// URL" in r.stderr
    w = cli("--project", project, "worker", "--queue", "amqp://guest@127.0.0.1:5672//")
    assert w.exit_code == 2 and "needs the PostgreSQL store" in w.stderr


def test_settings_from_the_flag_the_environment_or_the_project(monkeypatch):
    monkeypatch.delenv("H3PIPE_QUEUE", raising=False)
    monkeypatch.delenv("H3PIPE_QUEUE_NAME", raising=False)
    assert QueueSettings.find(None, {}) is None
    declared = {"queue": {"url": "amqp://u:pw@mq:5672//", "name": "nightly",
                          "max_deliveries": 5, "task_seconds": 600}}
    s = QueueSettings.find(None, declared)
    assert (s.url, s.name, s.max_deliveries, s.task_seconds) == (
        "amqp://u:pw@mq:5672//", "nightly", 5, 600)
    assert s.shown == "amqp://u:***@mq:5672//" and s.host == "mq:5672"
    monkeypatch.setenv("H3PIPE_QUEUE", "amqp://env@mq2//")
    monkeypatch.setenv("H3PIPE_QUEUE_NAME", "other")
    s = QueueSettings.find(None, declared)
    assert (s.url, s.name) == ("amqp://env@mq2//", "other")
    assert QueueSettings.find("amqp://flag@mq3//", declared).url == "amqp://flag@mq3//"
    with pytest.raises(ConfigError, match="consumer_timeout"):
        QueueSettings("amqp://mq//", task_seconds=1800)
    with pytest.raises(UsageError):
        QueueSettings("http://mq//")


def test_h3pipe_yaml_queue_is_validated(cli, project):
    (project / "h3pipe.yaml").write_text("queue: {url: 'amqp://mq//', max_deliveries: 0}\n")
    r = cli("--project", project, "validate")
    assert r.exit_code == 1 and "max_deliveries" in r.stdout + r.stderr
