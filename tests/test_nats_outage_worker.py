"""A NATS outage under a real worker (issue 12 item 2): kill -9 the external nats-server while a run is RUNNING on a
REST worker (``process`` runtime, and Docker with a test image), then start it again on the same port.

While NATS is away ``/health`` is 503 and says NATS is disconnected, and API calls answer a bounded 503
``UNAVAILABLE`` with ``Retry-After`` (no 500, no hang). The worker keeps its running op. Once NATS is back the server
reconnects by itself: ``/health`` is 200, the run that was running (its op ended during the outage) is COMPLETED as
its first attempt (the worker reported it once the server could hear it again), and a run submitted afterwards is
scheduled and completes (the scheduler, the watches and the index resumed without a restart).

Two ways NATS comes back: with its store (a restart), and empty (a new node in its place, new store dir): then the
server applies the topology of ``broker/`` again (it does so after every reconnect), serves again, and logs that it
should be restarted to rebuild its watches and index from the new store.

Each test prints what it measured: kill → ``/health`` 503, the slowest 503 during the outage, restart → ``/health``
200 and restart → the first new run completed.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import NatsNode
from tests.dockerimages import BUSYBOX, require_images
from tests.processes import API_KEY, GyozaServer
from tests.simworker import wait_run
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, run_containers, unique_worker_name

# Heartbeats twice a second; eviction only after 20 s without one, longer than an outage here lasts, so a worker that
# NATS could not hear for a few seconds is not taken for lost.
SETTINGS = {"GYOZA_HEARTBEAT_INTERVAL": "0.5", "GYOZA_WORKER_TIMEOUT": "20", "GYOZA_LEASE_TTL": "2"}
# The longest a request may take while NATS is away: one JetStream timeout (gyoza.bus.connection) and some slack.
BOUNDED_S = 8.0
# The op waits for a gate file in its IO directory (the test opens it while NATS is away). Same command for the
# process runtime and in the busybox test image.
GATED = ["sh", "-c", 'while [ ! -e "$GYOZA_IO_DIR/gate" ]; do sleep 0.05; done']


@dataclass
class Setup:
    node: NatsNode
    server: GyozaServer
    worker: WorkerProcess
    http: httpx.AsyncClient
    tag: str
    root: Path

    def image(self) -> str:
        return BUSYBOX if self.worker.runtime == "docker" else "local/process"

    def op_alive(self, run_id: str) -> bool:
        """Whether the run's op still runs: its container, or (process runtime) a process of its attempt."""
        if self.worker.runtime == "docker":
            return any(c.status == "running" for c in run_containers(run_id))
        return any(f"GYOZA_RUN_ID={run_id}".encode() in environ.split(b"\0") for environ in process_environments())


def process_environments() -> list[bytes]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            found.append(environ.read_bytes())
    return found


@pytest.fixture
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    runtime: str = getattr(request, "param", "process")
    if runtime == "docker":
        require_images(BUSYBOX)
    node = NatsNode(tmp_path / "nats", "outage-worker").start()
    server = GyozaServer(tmp_path / "gyoza", node.url, **SETTINGS).start()
    tag = "outage-" + uuid.uuid4().hex[:8]
    worker = WorkerProcess(unique_worker_name("out"), tmp_path / "work", server.url, runtime=runtime, tags=(tag,))
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        try:
            await worker.start(http)
            yield Setup(node, server, worker, http, tag, tmp_path)
        finally:
            worker.stop()
            server.stop()
            node.stop()
            remove_leftover_containers(worker.name)


async def submit(setup: Setup, command: list[str]) -> str:
    body = {"image": setup.image(), "command": command, "tags": [setup.tag], "inputs": {}}
    response = await setup.http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def health(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    try:
        response = await http.get("/health", timeout=2)
    except httpx.HTTPError:
        return 0, {}
    return response.status_code, response.json()


async def health_is(http: httpx.AsyncClient, status: int) -> dict[str, Any] | None:
    got, body = await health(http)
    return body if got == status else None


async def refused_during_outage(http: httpx.AsyncClient, tag: str, run_id: str) -> float:
    """A create, a read and a cancel while NATS is away: each a bounded 503 UNAVAILABLE; the slowest answer's time."""
    calls = [
        ("POST", "/runs", {"image": "local/refused", "tags": [tag], "inputs": {}}),
        ("GET", f"/runs/{run_id}", None),
        ("POST", f"/runs/{run_id}/cancel", None),
    ]
    slowest = 0.0
    for method, path, body in calls:
        started = time.monotonic()
        response = await http.request(method, path, json=body)
        took = time.monotonic() - started
        assert response.status_code == 503, f"{method} {path}: {response.status_code} {response.text}"
        assert response.json()["error"]["code"] == "UNAVAILABLE", response.text
        assert int(response.headers["Retry-After"]) >= 1
        assert took < BOUNDED_S, f"{method} {path} took {took:.1f} s"
        slowest = max(slowest, took)
    return slowest


async def outage(setup: Setup, empty_store: bool) -> tuple[str, str]:
    """Kill NATS under a RUNNING run, check the outage, bring NATS back; returns the ids of the run that was
    running and of the run submitted afterwards (completed)."""
    running = await submit(setup, GATED)
    await wait_run(setup.http, running, 60, state="RUNNING")
    assert setup.op_alive(running)

    setup.node.kill9()
    killed = time.monotonic()
    down = await until(lambda: health_is(setup.http, 503), 20, interval=0.05, what="/health 503")
    to_503 = time.monotonic() - killed
    assert down["status"] == "unavailable"
    assert down["nats"]["connected"] is False
    slowest = await refused_during_outage(setup.http, setup.tag, running)
    assert setup.op_alive(running), "the worker kept its running op through the outage"
    # The op ends while NATS is away: the worker must hold its report until the server hears it again.
    (setup.worker.work_dir / f"{running}-1" / "gate").touch()
    await until(lambda: not setup.op_alive(running), 20, what="the op ended during the outage")
    assert setup.worker.process is not None and setup.worker.process.poll() is None

    if empty_store:
        setup.node.root = setup.root / "nats-empty"  # same ports, a store with nothing in it
    setup.node.start()
    back = time.monotonic()
    await until(lambda: health_is(setup.http, 200), 30, interval=0.05, what="/health 200 after the outage")
    to_200 = time.monotonic() - back
    fresh = await submit(setup, ["true"])
    await wait_run(setup.http, fresh, 60, state="COMPLETED")
    to_run = time.monotonic() - back
    print(
        f"\nkill -> /health 503 {to_503:.2f} s; slowest 503 {slowest:.2f} s; restart -> /health 200 {to_200:.2f} s;"
        f" restart -> new run COMPLETED {to_run:.2f} s"
    )
    return running, fresh


@pytest.mark.parametrize("setup", ["process", "docker"], indirect=True)
async def test_an_outage_loses_nothing_and_everything_resumes(setup: Setup) -> None:
    running, _ = await outage(setup, empty_store=False)
    run = await wait_run(setup.http, running, 30, state="COMPLETED")
    assert run["current_attempt"] == 1, "the run kept its attempt: its op was never lost"
    assert run["execution_summary"]["worker_id"] == setup.worker.name
    assert "NATS came back without" not in setup.server.log_path.read_text(), "a kept store is left as it was"


async def test_nats_back_empty_gets_the_topology_again(setup: Setup) -> None:
    _, fresh = await outage(setup, empty_store=True)
    # What JetStream held went with the old store; the server serves again on the new one.
    listed = (await setup.http.get("/runs", params={"limit": 100})).json()["data"]
    assert fresh in [run["id"] for run in listed]
    # Its watches resumed at the old store's sequences, so the operator is told to restart it (the index and the
    # watches then start over from the new store).
    assert "NATS came back without" in setup.server.log_path.read_text()
