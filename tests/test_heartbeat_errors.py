"""A refused heartbeat is the same 4xx however it travels (issue 9 item 4): over REST to the leader or to a standby,
over NATS straight to the leader, and from a standby's forward (``FleetService``) to the leader, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from gyoza.bus.connection import open_bus
from gyoza.errors import InvalidRequest
from gyoza.services.fleet import FleetService
from gyoza.services.workers import WorkerService
from gyoza.settings import Settings
from tests.processes import GyozaServer
from tests.simworker import Cluster
from tests.waiting import until

BAD = {"resources": {"cpu": -1}}


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    started = await Cluster(tmp_path_factory.mktemp("heartbeat-errors"), servers=2).start()
    yield started
    started.stop()


async def leader_and_standby(cluster: Cluster) -> tuple[GyozaServer, GyozaServer]:
    nc = await nats.connect(cluster.nats_url)
    try:
        leases = await nc.jetstream().key_value("gyoza_leases")

        async def holder() -> str:
            return json.loads((await leases.get("scheduler")).value or b"{}").get("holder", "")

        lease = await until(holder, what="a scheduler leader")
    finally:
        await nc.close()
    leader = next(s for s in cluster.servers if f"-{s.port}-" in lease)
    return leader, next(s for s in cluster.servers if s is not leader)


def fields(error: dict[str, object]) -> set[str]:
    return {str(d["field"]) for d in error["details"]}  # type: ignore[attr-defined]


async def test_a_bad_heartbeat_is_a_400_over_rest_and_nats_from_leader_and_standby(cluster: Cluster) -> None:
    leader, standby = await leader_and_standby(cluster)
    nc = await nats.connect(cluster.nats_url)
    try:
        reply = await nc.request("gyoza.workers.hb-bad.heartbeat", json.dumps(BAD).encode(), timeout=5)
    finally:
        await nc.close()
    over_nats = json.loads(reply.data)["error"]
    assert reply.headers is not None and reply.headers.get("Gyoza-Error") == "400"
    for server in (leader, standby):
        async with cluster.client(server.url) as http:
            response = await http.post("/workers/hb-bad/heartbeat", json=BAD)
        assert response.status_code == 400, (server.port, response.text)
        over_rest = response.json()["error"]
        assert over_rest["code"] == over_nats["code"] == "INVALID_REQUEST"
        assert fields(over_rest) == fields(over_nats) >= {"resources.cpu", "resources.ram_mb"}


async def test_the_leaders_refusal_reaches_a_standby_as_the_same_error(cluster: Cluster, tmp_path: Path) -> None:
    """What a standby's REST route does with a heartbeat: forward it with ``FleetService``. A body the leader refuses
    (here a field it does not know, as an older leader would in a rolling upgrade) raises the leader's 400 there."""
    await leader_and_standby(cluster)
    bus = await open_bus(Settings(nats_url=cluster.nats_url, data_dir=tmp_path / "standby"))
    try:
        fleet = FleetService(bus, WorkerService(bus))
        body = {"resources": {"cpu": 1, "ram_mb": 64}, "from_a_newer_version": True}
        with pytest.raises(InvalidRequest) as refused:
            await fleet.heartbeat("hb-newer", json.dumps(body).encode())
        assert refused.value.status == 400
        assert fields(refused.value.to_body()["error"]) == {"from_a_newer_version"}
        body.pop("from_a_newer_version")
        assert json.loads(await fleet.heartbeat("hb-newer", json.dumps(body).encode()))["heartbeat_interval_s"] > 0
    finally:
        await bus.close()
