"""Real nats-server nodes for fault tests, each on its own fixed loopback ports and store dir, so a node can be killed
(``kill -9``) and started again as the same node: one standalone node, or three forming one JetStream cluster.

Every node reads the repository's ``nats.conf``; what differs per node (name, ports, store dir, cluster name and
routes) is on its command line, exactly as in ``docker-compose.yml``. ``GyozaCluster`` puts Gyoza servers (with
``GYOZA_NATS_REPLICAS=3``) on such a cluster.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client

from gyoza.bus.embedded import nats_server_binary
from gyoza.bus.topology import nats_conf_path
from gyoza.processes import die_with_parent
from tests.processes import API_KEY, GyozaServer, free_port, terminate

READY_TIMEOUT_S = 30.0
CLUSTER_NAME = "gyoza"  # as in docker-compose.yml


class NatsNode:
    """One nats-server; ``routes`` (set by ``NatsCluster``) make it a member of a JetStream cluster."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = free_port()
        self.routes: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats://127.0.0.1:{self.cluster_port}"

    def _args(self) -> list[str]:
        args = [
            nats_server_binary(), "-c", str(nats_conf_path()), "-n", self.name,
            "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
            "-js", "-sd", str(self.root / "jetstream"),
        ]  # fmt: skip
        if self.routes:
            args += ["--cluster_name", CLUSTER_NAME, "--cluster", self.route_url, "--routes", ",".join(self.routes)]
        return args

    def spawn(self) -> None:
        """Start the process (same ports, same store as any previous life) without waiting for it."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "nats-server.log").open("ab") as log:
            # A test that crashes must not leave a node behind holding its ports.
            self.process = subprocess.Popen(self._args(), stdout=log, stderr=log, preexec_fn=die_with_parent)

    def start(self) -> NatsNode:
        self.spawn()
        self.wait_ready()
        return self

    def healthz(self, **params: str) -> int | None:
        """The status of the node's ``/healthz`` (None when it does not answer)."""
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{self.monitor_port}/healthz", params=params, timeout=1).status_code
        return None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, **params: str) -> None:
        """Until ``/healthz`` says 200: JetStream enabled (``js-enabled-only``), or fully current (no params: for a
        clustered node, the meta group has a leader and every replica this node holds has caught up)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.healthz(**params) != 200:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not healthy within {timeout} s: {self.log_tail()}")
            time.sleep(0.05)

    def connection_names(self) -> list[str]:
        """The names of the clients connected to this node (from ``/connz``); [] when it does not answer."""
        with contextlib.suppress(httpx.HTTPError):
            reply = httpx.get(f"http://127.0.0.1:{self.monitor_port}/connz", params={"limit": "1024"}, timeout=1)
            return [c.get("name", "") for c in reply.json().get("connections") or []]
        return []

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        terminate(self.process, 10)

    def log_tail(self, lines: int = 30) -> str:
        path = self.root / "nats-server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class NatsCluster:
    """``size`` nodes routed to each other: one JetStream cluster, ready once every node is fully healthy."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.nodes = [NatsNode(root / f"n{n}", f"n{n}") for n in range(1, size + 1)]
        routes = [node.route_url for node in self.nodes]
        for node in self.nodes:
            node.routes = routes

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated, as ``GYOZA_NATS_URL`` takes them."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> NatsCluster:
        for node in self.nodes:  # all at once: a clustered node is not healthy before the meta group has a leader
            node.spawn()
        for node in self.nodes:
            node.wait_ready()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node_serving(self, is_client: Callable[[str], bool]) -> NatsNode | None:
        """The node that holds a client connection whose name ``is_client`` accepts, right now."""
        return next((n for n in self.nodes if n.running and any(map(is_client, n.connection_names()))), None)

    async def connect(self) -> Client:
        return await nats.connect(self.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)


def is_connection_of(server: GyozaServer) -> Callable[[str], bool]:
    """Whether a NATS connection name is this Gyoza server's (gyoza.bus.connection names it ``gyoza-server
    <host>:<API port>``)."""
    return lambda name: name.startswith("gyoza-server ") and name.endswith(f":{server.port}")


class GyozaCluster:
    """A 3-node JetStream cluster with ``servers`` Gyoza servers on it, every stream and bucket at R3."""

    def __init__(self, root: Path, servers: int = 2, replicas: int = 3, **env: str) -> None:
        self.root = root
        self.nats = NatsCluster(root / "nats")
        self.env = {"GYOZA_NATS_REPLICAS": str(replicas), **env}
        self.count = servers
        self.servers: list[GyozaServer] = []

    def start(self) -> GyozaCluster:
        self.nats.start()
        for n in range(self.count):
            self.servers.append(GyozaServer(self.root / f"gyoza-{n}", self.nats.url, **self.env).start())
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.nats.stop()

    def node_of(self, server: GyozaServer) -> NatsNode | None:
        return self.nats.node_serving(is_connection_of(server))

    @staticmethod
    def client(server: GyozaServer, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, **kwargs)
