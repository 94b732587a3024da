"""Real queue workers for the tests: the RabbitMQ broker, ``h3pipe worker`` processes
(optionally in a network namespace of their own), and a TCP relay that lets a namespace
reach services that listen on this host's loopback only.

Skips when RabbitMQ is not reachable on 127.0.0.1:5672 (fails instead under CI=true).
Every test gets a queue name of its own, so no worker of one test takes another's batches.
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
REPO = Path(__file__).resolve().parents[1]


def broker_up() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as exc:
        message = (f"RabbitMQ not reachable on 127.0.0.1:5672 ({exc}): start it "
                   "('rabbitmq-server -detached') to run the queue tests")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


class Workers:
    """``h3pipe worker`` processes of one test, each in its own process group."""

    def __init__(self, store: str, project: Path, queue_name: str, logs: Path) -> None:
        self.store, self.project, self.queue_name, self.logs = store, project, queue_name, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("H3PIPE_")}
        env |= {"H3PIPE_STORE": self.store, "H3PIPE_QUEUE_NAME": self.queue_name,
                "PYTHONPATH": str(REPO)}
        return env | extra

    def start(self, *, concurrency: int = 1, broker: str = BROKER, store: str | None = None,
              netns: str | None = None, hostname: str | None = None, grace: float = 30,
              **env: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "h3pipe", "--project", str(self.project),
                   "--store", store or self.store, "worker", "--queue", broker,
                   "--concurrency", str(concurrency), "--grace", str(grace)]
        if hostname:  # a machine of its own name (a UTS namespace)
            command = ["unshare", "--uts", "sh", "-c",
                       f"hostname {hostname} && exec \"$@\"", "sh", *command]
        if netns:
            command = ["ip", "netns", "exec", netns, *command]
        log = (self.logs / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                env=self.env(**env), start_new_session=True)
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Until the worker consumes from its queue (its pool is up)."""
        log = self.logs / f"worker-{self.procs.index(proc)}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}: {log.read_text()}")
            if ": ready" in log.read_text():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout} s: {log.read_text()}")

    def log(self, n: int) -> str:
        return (self.logs / f"worker-{n}.log").read_text()

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and its pool: a machine lost."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)


def _consumers(queue_name: str) -> int:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "consumers"],
                         capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue_name:
            return int(parts[1])
    return 0


@pytest.fixture
def workers(tmp_path: Path, pg_url: str) -> Iterator[Workers]:
    broker_up()
    logs = tmp_path / "logs"
    logs.mkdir()
    w = Workers(pg_url, tmp_path / "proj", f"h3pipe-test-{secrets.token_hex(4)}", logs)
    yield w
    w.stop_all()
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", w.queue_name], capture_output=True,
                   timeout=30)


# -- another host: a network namespace --------------------------------------------------------

class Namespace:
    """A network namespace joined to this host by a veth pair: this host is ``host_ip``
    on the link, the namespace ``ns_ip``; the namespace has no other route."""

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.host_ip, self.ns_ip = f"10.231.{index}.1", f"10.231.{index}.2"
        self.veth = f"h3v{index}"
        sh = _sh
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", f"{self.veth}p")
        sh("ip", "link", "set", f"{self.veth}p", "netns", name)
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.veth)
        sh("ip", "link", "set", self.veth, "up")
        sh("ip", "netns", "exec", name, "ip", "addr", "add", f"{self.ns_ip}/24", "dev",
           f"{self.veth}p")
        sh("ip", "netns", "exec", name, "ip", "link", "set", f"{self.veth}p", "up")
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def netns_available() -> None:
    if os.geteuid() != 0 or subprocess.run(["ip", "netns", "list"],
                                           capture_output=True).returncode != 0:
        message = "network namespaces need root and iproute2"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


class Relay:
    """Accepts on ``listen`` and relays each connection to ``target``: RabbitMQ and
    PostgreSQL listen on loopback only, and a namespace reaches them through this."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.settimeout(0.2)
        self.stopped = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()

    def close(self) -> None:
        self.stopped.set()
        self.server.close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in sel.select():
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()
