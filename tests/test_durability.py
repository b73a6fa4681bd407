"""A 2xx means durable: runs survive a kill -9 of the server and its embedded NATS, and the index rebuilds from KV."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.processes import API_KEY, GyozaServer, child_pids, pid_alive
from tests.waiting import until

RUNS = 200
CONCURRENCY = 16


def nats_child(server: GyozaServer) -> int:
    assert server.process is not None
    found = [p for p in child_pids(server.process.pid) if Path(f"/proc/{p}/comm").read_text().strip() == "nats-server"]
    assert len(found) == 1, f"expected one nats-server child, found {found}"
    return found[0]


def http(server: GyozaServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30)


async def create_and_change_runs(server: GyozaServer) -> dict[str, dict[str, Any]]:
    """Create RUNS runs 16 at a time, cancel every 4th and retry every 8th; the last 2xx body of each run."""
    acknowledged: dict[str, dict[str, Any]] = {}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        async with gate:
            created = await client.post("/runs", json={"image": "busybox:1", "inputs": {"n": n}})
            assert created.status_code == 201, created.text
            run = created.json()
            acknowledged[run["id"]] = run
            if n % 4 == 0:
                cancelled = await client.post(f"/runs/{run['id']}/cancel")
                assert cancelled.status_code == 200, cancelled.text
                acknowledged[run["id"]] = cancelled.json()
            if n % 8 == 0:
                retried = await client.post(f"/runs/{run['id']}/retry")
                assert retried.status_code == 200, retried.text
                acknowledged[run["id"]] = retried.json()

    async with http(server) as client:
        await asyncio.gather(*(one(client, n) for n in range(RUNS)))
    return acknowledged


def summary(run: dict[str, Any]) -> tuple[Any, ...]:
    events = [(e["id"], e["attempt"], e["type"], e["state"]) for e in run["events"]]
    return run["state"], run["current_attempt"], run["inputs"], events


async def assert_every_run_is_back(server: GyozaServer, acknowledged: dict[str, dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def check(client: httpx.AsyncClient, run_id: str) -> None:
        async with gate:
            response = await client.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        assert summary(response.json()) == summary(acknowledged[run_id])

    async with http(server) as client:
        await asyncio.gather(*(check(client, run_id) for run_id in acknowledged))


async def listed_run_ids(server: GyozaServer) -> list[str]:
    """Every id GET /runs returns, paging 100 at a time with starting_after."""
    ids: list[str] = []
    params: dict[str, Any] = {"limit": 100}
    async with http(server) as client:
        while True:
            response = await client.get("/runs", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            ids += [run["id"] for run in page["data"]]
            if not page["has_more"]:
                return ids
            params["starting_after"] = ids[-1]


async def test_acknowledged_runs_survive_kill9_and_index_loss(data_dir: Path) -> None:
    first = GyozaServer(data_dir, None).start()
    try:
        acknowledged = await create_and_change_runs(first)
        nats_pid = nats_child(first)
        # A crash of everything at once: the store gets no chance to flush or shut down cleanly.
        os.kill(nats_pid, signal.SIGKILL)
        first.kill9()
        await until(lambda: not pid_alive(nats_pid), timeout=5, what="SIGKILLed nats-server gone")
    finally:
        first.stop()
    assert len(acknowledged) == RUNS
    assert {run["state"] for run in acknowledged.values()} == {"PENDING", "CANCELLED"}

    # Same port, so the restarted server finds (and must not trust blindly) the index the dead one left.
    second = GyozaServer(data_dir, None, port=first.port).start()
    try:
        await assert_every_run_is_back(second, acknowledged)
        listed = await listed_run_ids(second)
        assert sorted(listed) == sorted(acknowledged)
        nats_pid = nats_child(second)
        second.kill9()
        # PR_SET_PDEATHSIG: the kernel tells nats-server its parent died, even of a SIGKILL, so nothing is orphaned.
        await until(lambda: not pid_alive(nats_pid), timeout=10, what="nats-server exits after its parent's death")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(nats_pid, signal.SIGKILL)
        second.stop()

    shutil.rmtree(data_dir / "index")
    third = GyozaServer(data_dir, None, port=first.port).start()
    try:
        listed = await listed_run_ids(third)
        assert len(listed) == len(set(listed)) == RUNS, "GET /runs paging missed or repeated runs"
        assert set(listed) == set(acknowledged)
        await assert_every_run_is_back(third, acknowledged)
    finally:
        assert third.stop() == 0
