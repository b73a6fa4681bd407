"""NATS mode (``--mode nats``): assignments and cancels reach the worker on ``gyoza.workers.<id>.assignments``.

Heartbeats here are 5 s apart, so a run that starts and a cancel that lands well within one interval prove the
subject delivered them (REST mode would wait for the next claim or heartbeat reply).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gyoza.bus.embedded import EmbeddedNats
from tests.dockerimages import require_images
from tests.processes import API_KEY, GyozaServer
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, unique_worker_name

PYOP = "gyoza-test/pyop:latest"
HEARTBEAT_S = 5.0


@pytest.fixture(scope="module")
async def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, Path]]:
    require_images(PYOP)
    root = tmp_path_factory.mktemp("nats-mode")
    nats = EmbeddedNats(root / "nats")
    url = await nats.start()
    yield url, root
    nats.stop()


@pytest.fixture(scope="module")
def gyoza(nats_cluster: tuple[str, Path]) -> Iterator[GyozaServer]:
    url, root = nats_cluster
    server = GyozaServer(root / "server", url, GYOZA_HEARTBEAT_INTERVAL=str(HEARTBEAT_S)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def http(gyoza: GyozaServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gyoza.url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
        yield client


async def test_assignments_and_cancels_arrive_over_nats(
    nats_cluster: tuple[str, Path], gyoza: GyozaServer, http: httpx.AsyncClient
) -> None:
    url, root = nats_cluster
    name = unique_worker_name("nats")
    worker = WorkerProcess(name, root / "work", gyoza.url, env={"GYOZA_NATS_URL": url}, mode="nats")
    await worker.start(http)
    try:
        body = {"image": PYOP, "command": ["ops:sleep"], "inputs": {"seconds": 60}}
        run_id = (await http.post("/runs", json=body)).json()["id"]

        await until(lambda: _in_state(http, run_id, "RUNNING"), 20, interval=0.05, what="run RUNNING")
        asked = time.monotonic()
        assert (await http.post(f"/runs/{run_id}/cancel")).status_code == 200
        await until(lambda: _in_state(http, run_id, "CANCELLED"), 20, interval=0.05, what="run CANCELLED")
        took = time.monotonic() - asked
        assert took < HEARTBEAT_S / 2, f"cancel took {took:.2f} s: it waited for a heartbeat, not the subject"
    finally:
        worker.stop()
        leftovers = remove_leftover_containers(name)
    assert not leftovers, f"containers left behind: {leftovers}"


async def _in_state(http: httpx.AsyncClient, run_id: str, wanted: str) -> bool:
    return bool((await http.get(f"/runs/{run_id}")).json()["state"] == wanted)
