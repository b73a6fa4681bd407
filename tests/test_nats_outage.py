"""An external NATS outage (issue 15 items 2, 3 and 7): the nats-server is killed for 12 s under two Gyoza servers.

While it is down every write is refused with a bounded 503 ``UNAVAILABLE`` with ``Retry-After`` (never a 500, never
a hang), ``/health`` says NATS is down, and no refused request is applied later, when the connection comes back
(nats-py used to buffer publishes across a reconnect and flush them then). Once the same node is back, both servers
reconnect by themselves: ``/health`` is 200 again, a run created on one server shows up on the other (its KV watch
resumed) and the scheduler places it on a simulated worker.

The outage runs once per module (``outage``); each test checks one property of what was seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from tests.cluster import NatsNode
from tests.processes import API_KEY, GyozaServer
from tests.simworker import FAST_SETTINGS, Cluster, Fleet, create_run, unique_tag, wait_run
from tests.test_api_runs import run_keys
from tests.waiting import until

OUTAGE_S = 12.0
REFUSED_IMAGE = "outage/refused:1"
# The longest a request may take while NATS is away: one JetStream timeout (gyoza.bus.connection) and some slack.
BOUNDED_S = 8.0


@dataclass
class Answer:
    what: str
    status: int
    seconds: float
    body: dict[str, Any]
    retry_after: str | None


@dataclass
class Outage:
    servers: list[GyozaServer]
    keys_before: int = 0
    keys_after: int = 0
    health_down: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    reconnected_after_s: float = 0.0
    cancelled_during_outage: str = ""
    run_after: dict[str, Any] = field(default_factory=dict)
    run_after_on_other_server: dict[str, Any] = field(default_factory=dict)
    refused_listed: list[dict[str, Any]] = field(default_factory=list)
    cancelled_run_after: dict[str, Any] = field(default_factory=dict)


def api(server: GyozaServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30)


async def keys_in_runs_bucket(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return await run_keys(nc)
    finally:
        await nc.close()


async def timed(what: str, call: Any) -> Answer:
    started = time.monotonic()
    response: httpx.Response = await call
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    return Answer(what, response.status_code, time.monotonic() - started, body, response.headers.get("Retry-After"))


async def refused_requests(
    clients: list[httpx.AsyncClient], worker_id: str, run_id: str, until_t: float
) -> list[Answer]:
    """Creates on both servers, plus a cancel and a heartbeat, in waves until ``until_t`` (monotonic)."""
    answers: list[Answer] = []
    wave = 0
    while time.monotonic() < until_t:
        calls = [
            timed("create", http.post("/runs", json={"image": REFUSED_IMAGE, "inputs": {"wave": wave, "n": n}}))
            for n, http in enumerate(clients)
        ]
        if wave % 4 == 0:
            heartbeat = {"resources": {"cpu": 1, "ram_mb": 512, "gpus": []}, "tags": [], "running": [], "version": "t"}
            calls.append(timed("cancel", clients[0].post(f"/runs/{run_id}/cancel")))
            calls.append(timed("heartbeat", clients[1].post(f"/workers/{worker_id}/heartbeat", json=heartbeat)))
            calls.append(timed("get", clients[0].get(f"/runs/{run_id}")))
        answers += await asyncio.gather(*calls)
        wave += 1
        await asyncio.sleep(0.5)  # pacing the load, not synchronisation
    return answers


@pytest.fixture(scope="module")
async def outage(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Outage]:
    root: Path = tmp_path_factory.mktemp("outage")
    node = NatsNode(root / "nats", "outage").start()
    servers = [GyozaServer(root / f"gyoza-{n}", node.url, **FAST_SETTINGS).start() for n in range(2)]
    seen = Outage(servers)
    fleet = Fleet(servers[0].url)
    clients = [api(server) for server in servers]
    try:
        tag = unique_tag()
        worker = await fleet.add("outage", tags=[tag])
        placed = await create_run(clients[0], [tag])
        await wait_run(clients[0], placed["id"], state="ASSIGNED")
        seen.cancelled_during_outage = placed["id"]
        seen.keys_before = await keys_in_runs_bucket(node.url)

        node.kill9()
        killed_at = time.monotonic()
        for http in clients:
            seen.health_down.append(await _health_within(http, 503, within=5))
        seen.answers = await refused_requests(clients, worker.worker_id, placed["id"], killed_at + OUTAGE_S)
        await asyncio.sleep(max(0.0, killed_at + OUTAGE_S - time.monotonic()))  # the outage lasts its 12 s

        node.start()
        back_at = time.monotonic()
        for http in clients:
            await until(lambda http=http: _health_if(http, 200), timeout=20, what="/health ok after the outage")
        seen.reconnected_after_s = time.monotonic() - back_at

        after = await create_run(clients[1], [tag])
        seen.run_after = await wait_run(clients[0], after["id"], timeout=30, state="ASSIGNED")
        seen.run_after_on_other_server = await until(
            lambda: _listed(clients[0], after["id"]), timeout=20, what="server 0's index shows server 1's run"
        )
        seen.keys_after = await keys_in_runs_bucket(node.url)
        for http in clients:
            listed = await http.get("/runs", params={"image": REFUSED_IMAGE, "limit": 100})
            seen.refused_listed += listed.json()["data"]
        seen.cancelled_run_after = (await clients[0].get(f"/runs/{placed['id']}")).json()
        yield seen
    finally:
        await fleet.close()
        for http in clients:
            await http.aclose()
        for server in servers:
            server.stop()
        node.stop()


async def _health_if(http: httpx.AsyncClient, status: int) -> httpx.Response | None:
    try:
        response = await http.get("/health", timeout=2)
    except httpx.HTTPError:
        return None
    return response if response.status_code == status else None


async def _health_within(http: httpx.AsyncClient, status: int, within: float) -> tuple[int, dict[str, Any]]:
    """The first /health answer with ``status``, else the last one seen when ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        response = await http.get("/health", timeout=2)
        if response.status_code == status or time.monotonic() > deadline:
            return response.status_code, response.json()
        await asyncio.sleep(0.05)


async def _listed(http: httpx.AsyncClient, run_id: str) -> dict[str, Any] | None:
    response = await http.get("/runs", params={"limit": 100})
    return next((run for run in response.json()["data"] if run["id"] == run_id), None)


def test_health_says_nats_is_down(outage: Outage) -> None:
    for status, body in outage.health_down:
        assert status == 503
        assert body["status"] == "unavailable"
        assert body["nats"]["connected"] is False
        assert body["nats"]["mode"] == "external"


def test_every_request_during_the_outage_gets_a_bounded_503(outage: Outage) -> None:
    creates = [a for a in outage.answers if a.what == "create"]
    assert len(creates) >= 20, "requests kept coming for the whole outage"
    slowest = max(a.seconds for a in outage.answers)
    print(f"\n{len(outage.answers)} requests during a {OUTAGE_S:g} s outage, slowest answer {slowest:.2f} s")
    for answer in outage.answers:
        assert answer.status == 503, f"{answer.what}: {answer.status} {answer.body}"
        assert answer.body["error"]["code"] == "UNAVAILABLE", answer.body
        assert answer.retry_after is not None and int(answer.retry_after) >= 1
        assert answer.seconds < BOUNDED_S, f"{answer.what} took {answer.seconds:.1f} s"


def test_refused_requests_never_land(outage: Outage) -> None:
    # The outage test's own runs are the two created before and after it; nothing refused was stored.
    assert outage.keys_after == outage.keys_before + 1, (outage.keys_before, outage.keys_after)
    assert outage.refused_listed == []
    assert outage.cancelled_run_after["state"] == "ASSIGNED", "the refused cancel was applied later"


def test_servers_reconnect_and_resume_by_themselves(outage: Outage) -> None:
    print(f"\nboth servers healthy {outage.reconnected_after_s:.2f} s after NATS came back")
    assert outage.run_after["state"] == "ASSIGNED"
    assert outage.run_after_on_other_server["id"] == outage.run_after["id"]


async def test_a_stored_run_is_acknowledged_when_only_the_scheduler_nudge_fails(tmp_path: Path) -> None:
    """The run record is written first, then the scheduler is nudged on ``gyoza.runs.requested``. When that stream
    cannot take the nudge (no leader for a moment; here: gone), the run is stored all the same and the scheduler
    learns of it from the runs bucket: the answer is 201, not a 503 for a run that then runs anyway."""
    cluster = await Cluster(tmp_path).start()
    fleet = Fleet(cluster.url)
    nc = await nats.connect(cluster.nats_url)
    try:
        await nc.jetstream().delete_stream("GYOZA_RUN_REQUESTS")
        tag = unique_tag()
        await fleet.add("nudge", tags=[tag])
        async with cluster.client() as http:
            run = await create_run(http, [tag])
            await wait_run(http, run["id"], state="ASSIGNED")
    finally:
        await nc.close()
        await fleet.close()
        cluster.stop()
