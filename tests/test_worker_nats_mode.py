"""NATS mode (``--mode nats``): assignments and cancels reach the worker on ``gyoza.workers.<id>.assignments``;
its events (``gyoza.workers.<id>.events``) and heartbeats (``gyoza.workers.<id>.heartbeat``) go as NATS requests,
with the same fencing and the same errors as over REST, and no HTTP request per event or heartbeat.

Heartbeats here are 5 s apart, so a run that starts and a cancel that lands well within one interval prove the
subject delivered them (REST mode would wait for the next claim or heartbeat reply).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gyoza.bus import names
from gyoza.bus.embedded import EmbeddedNats
from gyoza.bus.messaging import WorkerLink
from gyoza.errors import InvalidRequest, StaleAttempt
from tests.dockerimages import require_images
from tests.processes import API_KEY, GyozaServer
from tests.waiting import until
from tests.workerproc import WorkerProcess, remove_leftover_containers, run_containers, unique_worker_name

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


@pytest.fixture
async def nats_worker(
    nats_cluster: tuple[str, Path], gyoza: GyozaServer, http: httpx.AsyncClient
) -> AsyncIterator[WorkerProcess]:
    url, root = nats_cluster
    name = unique_worker_name("nats")
    worker = WorkerProcess(name, root / "work", gyoza.url, env={"GYOZA_NATS_URL": url}, mode="nats", tags=(name,))
    await worker.start(http)
    yield worker
    worker.stop()
    leftovers = remove_leftover_containers(name)
    assert not leftovers, f"containers left behind: {leftovers}"


@pytest.fixture
async def link(nats_cluster: tuple[str, Path]) -> AsyncIterator[WorkerLink]:
    """The test's own NATS connection, to report as a worker would."""
    connection = await WorkerLink.open(nats_cluster[0], None, "test-reporter")
    yield connection
    await connection.close()


async def test_runs_complete_with_no_event_or_heartbeat_over_http(
    http: httpx.AsyncClient, nats_worker: WorkerProcess
) -> None:
    before = await _worker_posts(http)
    body = {"image": PYOP, "command": ["ops:progress"], "inputs": {"steps": 2}, "tags": [nats_worker.name]}
    run_ids = [(await http.post("/runs", json=body)).json()["id"] for _ in range(3)]
    for run_id in run_ids:
        await until(lambda r=run_id: _in_state(http, r, "COMPLETED"), 60, interval=0.1, what=f"run {run_id} done")
        run = (await http.get(f"/runs/{run_id}")).json()
        assert run["outputs"] == {"steps": 2}
        assert {"STARTED", "PROGRESS", "INFO", "COMPLETED"} <= {e["type"] for e in run["events"]}
    assert await _worker_posts(http) == before, "a NATS-mode worker posted events or heartbeats over HTTP"
    # The count would have shown an event POST: one over HTTP (refused, no such run) is counted.
    event = {"attempt": 1, "worker_id": nats_worker.name, "type": "INFO"}
    await http.post(f"/runs/{uuid.uuid4()}/events", json=event)
    assert (await _worker_posts(http))["/runs/<run_id>/events"] == before["/runs/<run_id>/events"] + 1


async def test_a_stale_attempt_report_is_refused_and_its_container_stopped(
    http: httpx.AsyncClient, nats_worker: WorkerProcess, link: WorkerLink
) -> None:
    # An INFO every 0.2 s for a minute; attempt 2 waits out a long back-off, so no second container starts.
    body = {
        "image": PYOP, "command": ["ops:progress"], "inputs": {"steps": 300, "delay": 0.2}, "tags": [nats_worker.name],
        "retry_policy": {"max_attempts": 2, "backoff_seconds": 600, "retry_on": ["WORKER_LOST"]},
    }  # fmt: skip
    run_id = (await http.post("/runs", json=body)).json()["id"]
    await until(lambda: _in_state(http, run_id, "RUNNING"), 30, interval=0.05, what="run RUNNING")
    lost = {"attempt": 1, "type": "FAILED", "payload": {"reason": "WORKER_LOST", "error": "lost"}}
    await _report(link, nats_worker.name, run_id, lost)  # the server moves the run on to attempt 2
    assert (await http.get(f"/runs/{run_id}")).json()["current_attempt"] == 2

    with pytest.raises(StaleAttempt) as refused:
        await _report(link, nats_worker.name, run_id, {"attempt": 1, "type": "INFO", "msg": "late"})
    assert refused.value.to_body()["error"]["code"] == "STALE_ATTEMPT"
    # The worker's own next report is refused the same way, and it stops the container long before the op's end.
    await until(lambda: not run_containers(run_id, attempt=1), 20, interval=0.1, what="attempt 1's container gone")
    assert "refused" in nats_worker.log()
    assert (await http.post(f"/runs/{run_id}/cancel")).status_code == 200


async def test_a_report_from_another_worker_is_refused(
    http: httpx.AsyncClient, nats_worker: WorkerProcess, link: WorkerLink
) -> None:
    body = {"image": PYOP, "command": ["ops:sleep"], "inputs": {"seconds": 60}, "tags": [nats_worker.name]}
    run_id = (await http.post("/runs", json=body)).json()["id"]
    await until(lambda: _in_state(http, run_id, "RUNNING"), 30, interval=0.05, what="run RUNNING")
    forged = {"attempt": 1, "type": "COMPLETED", "payload": {"outputs": {"slept": 0}}}

    with pytest.raises(StaleAttempt) as refused:
        await _report(link, "w-forger", run_id, forged)
    error = refused.value.to_body()["error"]
    assert error["code"] == "STALE_ATTEMPT" and nats_worker.name in error["message"]
    assert [d["field"] for d in error["details"]] == ["worker_id"]
    # A body naming another worker than its subject does.
    with pytest.raises(InvalidRequest) as confused:
        await _report(link, nats_worker.name, run_id, forged, worker_id="w-forger")
    assert [d["field"] for d in confused.value.details] == ["worker_id"]
    with pytest.raises(InvalidRequest):
        await link.request(names.events_subject(nats_worker.name), b'{"run_id": "nope"}', 10)

    assert (await http.get(f"/runs/{run_id}")).json()["state"] == "RUNNING"
    assert (await http.post(f"/runs/{run_id}/cancel")).status_code == 200
    await until(lambda: _in_state(http, run_id, "CANCELLED"), 20, interval=0.05, what="run CANCELLED")


async def _report(
    link: WorkerLink, worker: str, run_id: str, event: dict[str, Any], worker_id: str | None = None
) -> bytes:
    body = {"run_id": run_id, "worker_id": worker_id or worker, **event}
    return await link.request(names.events_subject(worker), json.dumps(body).encode(), 10)


async def _worker_posts(http: httpx.AsyncClient) -> dict[str, float]:
    """HTTP requests counted by /metrics for the two worker report routes."""
    counts = {"/runs/<run_id>/events": 0.0, "/workers/<worker_id>/heartbeat": 0.0}
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("gyoza_http_requests_total{") and 'method="POST"' in line:
            for route in counts:
                if f'route="{route}"' in line:
                    counts[route] += float(line.rsplit(" ", 1)[1])
    return counts


async def _in_state(http: httpx.AsyncClient, run_id: str, wanted: str) -> bool:
    return bool((await http.get(f"/runs/{run_id}")).json()["state"] == wanted)
