"""``h3pipe serve`` as a command: the token hash it prints, the one-line error for a port
already taken, which hosts count as loopback, and a clean stop on SIGTERM. The endpoints
themselves are tested in tests/server/."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys

import pytest

from h3pipe.server.serving import loopback
from tests.server.conftest import make_project, start_server


def test_hash_token_reads_the_token_on_stdin_and_prints_its_sha256(tmp_path):
    root = make_project(tmp_path)
    done = subprocess.run([sys.executable, "-m", "h3pipe", "-p", str(root), "serve",
                           "--hash-token"], input="s3cret-token\n", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hashlib.sha256(b"s3cret-token").hexdigest()
    assert "s3cret-token" not in done.stdout + done.stderr


def test_a_port_in_use_is_a_one_line_error(tmp_path):
    root = make_project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "h3pipe", "-p", str(root), "serve",
                               "--port", str(port)], capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "choose another --port or --host"]


@pytest.mark.parametrize(("host", "only_here"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.10", False), ("example.org", False)])
def test_only_loopback_addresses_count_as_loopback(host, only_here):
    assert loopback(host) is only_here


def test_sigterm_stops_the_server_cleanly(tmp_path):
    served = start_server(make_project(tmp_path))
    assert served.stop() == 0
    assert served.lines[-1] == "h3pipe serve stopped"


def test_a_malformed_queue_url_is_a_one_line_error_before_listening(tmp_path):
    root = make_project(tmp_path)
    done = subprocess.run([sys.executable, "-m", "h3pipe", "-p", str(root), "serve",
                           "--port", "0", "--queue", "redis://u:hunter2@127.0.0.1/0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: queue ")
    assert "amqp://" in lines[0] and "hunter2" not in done.stderr + done.stdout
    assert "serving" not in done.stdout
