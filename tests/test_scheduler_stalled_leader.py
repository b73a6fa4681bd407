"""Eviction tolerates a leader that is behind on its own processing (issue 15 item 10, SPEC §5.5).

The scheduler server is frozen (SIGSTOP) for longer than the worker timeout while its workers keep heartbeating:
their heartbeats wait in the server's sockets, unprocessed. Once it runs again, time the leader itself could not
process heartbeats does not count as the workers' silence: the live worker keeps its run. A worker that really went
silent is still evicted, a timeout after the stall.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.simworker import FAST_SETTINGS, Cluster, Fleet, all_events, create_run, wait_run

WORKER_TIMEOUT = float(FAST_SETTINGS["GYOZA_WORKER_TIMEOUT"])
STALL_S = WORKER_TIMEOUT + 1.5


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    # A long lease, so that the stall tests eviction alone (a leader whose lease lapsed starts afresh).
    started = await Cluster(tmp_path_factory.mktemp("stalled"), GYOZA_LEASE_TTL="60").start()
    yield started
    started.stop()


async def test_a_stalled_leader_evicts_no_live_worker(
    cluster: Cluster, http: httpx.AsyncClient, fleet: Fleet, tag: str
) -> None:
    live = await fleet.add("live", cpu=1, tags=[tag])
    dead = await fleet.add("dead", cpu=1, tags=[tag])
    runs = [(await create_run(http, [tag], cpu=1))["id"] for _ in range(2)]
    placed = {run: (await wait_run(http, run, state="ASSIGNED"))["worker_id"] for run in runs}
    [on_live] = [run for run, worker in placed.items() if worker == live.worker_id]
    [on_dead] = [run for run, worker in placed.items() if worker == dead.worker_id]
    for worker, run in ((live, on_live), (dead, on_dead)):
        assert [a["run_id"] for a in await worker.claim()] == [run]
        assert (await worker.report(run, 1, "STARTED")).status_code == 200
    await live.beats_after(2)
    await dead.stop_heartbeats()

    server = cluster.servers[0]
    os.kill(server.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(STALL_S)  # the fault: frozen for longer than the worker timeout, workers beating on
    finally:
        os.kill(server.pid, signal.SIGCONT)
    resumed = time.monotonic()

    await wait_run(http, on_dead, timeout=WORKER_TIMEOUT + 5, attempt=2)
    print(f"the silent worker was evicted {time.monotonic() - resumed:.2f} s after the leader resumed")
    assert (await dead.view())["status"] == "OFFLINE"

    await live.beats_after(3)
    assert (await live.view())["status"] == "ONLINE"
    running = await http.get(f"/runs/{on_live}")
    assert (running.json()["state"], running.json()["current_attempt"]) == ("RUNNING", 1)
    assert [e["type"] for e in await all_events(http, on_live)] == ["CREATED", "ASSIGNED", "STARTED"]
