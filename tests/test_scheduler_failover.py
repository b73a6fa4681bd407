"""Leader fail-over (SPEC §3 invariant 5): two servers on one NATS, the scheduler leader is killed with SIGKILL, the
standby takes over within the lease TTL, and no run is ever assigned twice.

Simulated workers heartbeat against the surviving server and run whatever they claim to completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import nats
import pytest

from tests.processes import GyozaServer
from tests.simworker import FAST_SETTINGS, Cluster, Fleet, SimWorker, all_events, create_run, unique_tag, wait_run
from tests.waiting import until

LEASE_TTL = float(FAST_SETTINGS["GYOZA_LEASE_TTL"])
RUNS_BEFORE, RUNS_AFTER = 12, 12


@pytest.fixture
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    started = await Cluster(tmp_path_factory.mktemp("failover"), servers=2).start()
    yield started
    started.stop()


async def leader_of(cluster: Cluster) -> GyozaServer:
    """The server whose node id holds the lease in KV ``gyoza_leases`` (node ids carry the server's port)."""
    nc = await nats.connect(cluster.nats_url)
    try:
        leases = await nc.jetstream().key_value("gyoza_leases")

        async def holder() -> GyozaServer | None:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                lease = json.loads((await leases.get("scheduler")).value or b"{}")
                return next((s for s in cluster.servers if f"-{s.port}-" in lease["holder"]), None)
            return None

        return await until(holder, what="a scheduler leader")
    finally:
        await nc.close()


async def work(worker: SimWorker) -> None:
    """Run every claimed assignment to completion, forever (cancelled at the end of the test)."""
    while True:
        with contextlib.suppress(httpx.HTTPError):
            for item in await worker.claim(wait=1):
                await worker.report(item["run_id"], item["attempt"], "STARTED")
                await worker.report(item["run_id"], item["attempt"], "COMPLETED", payload={"outputs": {}})


async def test_standby_takes_over_and_nothing_is_assigned_twice(cluster: Cluster) -> None:
    leader = await leader_of(cluster)
    [survivor] = [s for s in cluster.servers if s is not leader]
    tag = unique_tag()
    fleet = Fleet(survivor.url)
    async with cluster.client(survivor.url) as http:
        # Two one-core workers for many one-core runs: a queue is still waiting when the leader dies.
        workers = [await fleet.add(f"fo{n}", cpu=1, tags=[tag]) for n in range(2)]
        loops = [asyncio.create_task(work(w)) for w in workers]
        try:
            before = [(await create_run(http, [tag], cpu=1))["id"] for _ in range(RUNS_BEFORE)]
            await until(lambda: sum(len(w.claimed) for w in workers) >= 2, what="work under way")

            leader.kill9()
            killed_at = time.time()  # wall clock, to compare with the servers' event timestamps
            # The old leader answered heartbeats; until the standby holds the lease nobody does.
            orphaned = await workers[0].http.post(f"/workers/{workers[0].worker_id}/heartbeat", json=workers[0].body())
            assert orphaned.status_code == 503 and orphaned.json()["error"]["code"] == "UNAVAILABLE"

            after = [(await create_run(http, [tag], cpu=1))["id"] for _ in range(RUNS_AFTER)]
            for run_id in before + after:
                await wait_run(http, run_id, timeout=20, state="COMPLETED")
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await fleet.close()

        assert (await leader_of(cluster)) is survivor
        events = {run_id: await all_events(http, run_id) for run_id in before + after}
        # Runs were waiting when the leader died, so the first assignment after the kill is the new leader's first.
        assignments = [e for timeline in events.values() for e in timeline if e["type"] == "ASSIGNED"]
        takeover = min(t for e in assignments if (t := datetime.fromisoformat(e["t"]).timestamp()) > killed_at)
        takeover -= killed_at
        print(f"first assignment by the new leader {takeover:.2f} s after SIGKILL (lease TTL {LEASE_TTL:g} s)")
        assert takeover < LEASE_TTL + 3, "the standby must take over within the lease TTL (+1 s, + CI margin)"

        # No run was assigned twice: one ASSIGNED event per attempt, and no attempt reached both workers.
        for run_id, timeline in events.items():
            assigned = Counter(e["attempt"] for e in timeline if e["type"] == "ASSIGNED")
            assert assigned and set(assigned.values()) == {1}, f"run {run_id}: ASSIGNED per attempt {assigned}"
        assert not workers[0].claimed & workers[1].claimed
        assert len(workers[0].claimed | workers[1].claimed) == RUNS_BEFORE + RUNS_AFTER
