"""A restarted server keeps its query index: it lists exactly what KV holds, including what other servers changed
while it was down, replays only those changes (not every run ever stored), and its scheduler still places the runs
that were waiting."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gyoza.bus.embedded import EmbeddedNats
from tests.processes import API_KEY, GyozaServer
from tests.simworker import SimWorker, create_run, unique_tag, wait_run

REPLAYED = re.compile(r"run feed replayed (\d+) run versions from revision (\d+)")


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[str]:
    """A nats-server of this test's own: the replay counts only this test's runs."""
    server = EmbeddedNats(tmp_path / "nats")
    yield await server.start()
    server.stop()


def client(server: GyozaServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30)


async def states(server: GyozaServer) -> dict[str, str]:
    """Every run the server lists, by id (all pages)."""
    found: dict[str, str] = {}
    params: dict[str, Any] = {"limit": 100}
    async with client(server) as http:
        while True:
            page = (await http.get("/runs", params=params)).json()
            found.update({run["id"]: run["state"] for run in page["data"]})
            if not page["has_more"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]


def replays(server: GyozaServer) -> list[tuple[int, int]]:
    """(versions replayed, from revision) of each start logged so far."""
    return [(int(n), int(rev)) for n, rev in REPLAYED.findall(server.log_path.read_text())]


async def test_a_restart_replays_only_what_changed_and_keeps_scheduling(own_nats: str, tmp_path: Path) -> None:
    tag = unique_tag()
    server = GyozaServer(tmp_path / "a", own_nats, GYOZA_LOG_LEVEL="info").start()
    try:
        async with client(server) as http:
            runs = [(await create_run(http, [tag], cpu=1, ram_mb=64))["id"] for _ in range(40)]
            for run_id in runs[:30]:
                assert (await http.post(f"/runs/{run_id}/cancel")).status_code == 200
        before = await states(server)
    finally:
        assert server.stop() == 0
    assert replays(server) == [(0, 0)]  # a new bucket: nothing to replay

    # Another server on the same NATS changes runs while the first one is down.
    other = GyozaServer(tmp_path / "b", own_nats).start()
    try:
        async with client(other) as http:
            for run_id in runs[30:33]:
                assert (await http.post(f"/runs/{run_id}/cancel")).status_code == 200
            added = [(await create_run(http, [tag], cpu=1, ram_mb=64))["id"] for _ in range(2)]
        expected = await states(other)
    finally:
        assert other.stop() == 0
    assert len(expected) == len(before) + 2

    restarted = GyozaServer(tmp_path / "a", own_nats, port=server.port, GYOZA_LOG_LEVEL="info").start()
    try:
        assert await states(restarted) == expected
        replayed, after = replays(restarted)[-1]
        # The 10 runs that were waiting come from the index; then the 5 changes (3 cancels, 2 new runs), plus the
        # few writes the other server's scheduler made to them. A full replay would be all 42 runs.
        assert after > 0
        assert 15 <= replayed < 30, replayed
        async with client(restarted) as http:
            worker = await SimWorker(restarted.url, "w-" + tag, cpu=16, tags=[tag]).start()
            try:
                for run_id in [*runs[33:], *added]:
                    await wait_run(http, run_id, state="ASSIGNED", timeout=15)
            finally:
                await worker.close()
    finally:
        assert restarted.stop() == 0
