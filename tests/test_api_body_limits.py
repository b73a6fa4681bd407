"""Request bodies are bounded while they stream in (issue 15.6, SPEC §4: 1 MiB bodies, 10 MiB logs).

The key is checked before the body is read, and a body over its route's limit is dropped as it arrives, so neither
keyless nor oversized requests grow the server's memory; and their senders get the 401 or 413 with the error
body, not a reset.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.api_checks import NoTrace, error_of
from tests.processes import API_KEY, GyozaServer
from tests.test_api_worker_events import running_run

MIB = 1024 * 1024
BIG = b"x" * (15 * MIB)  # one buffer shared by every request: the test process stays small


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """Samples the process's resident memory every few milliseconds; yields [baseline, peak] (peak once done)."""
    sampled = [rss_bytes(pid), 0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            sampled[1] = max(sampled[1], rss_bytes(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield sampled
    finally:
        done.set()
        sampler.join()


async def test_keyless_and_oversized_bodies_do_not_grow_memory(server: GyozaServer, nothing_written: NoTrace) -> None:
    async def post(headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
            return await http.post("/runs", content=BIG, headers={"Content-Type": "application/json"})

    keyless = [{}, {"X-API-Key": "wrong"}] * 6
    keyed = [{"X-API-Key": API_KEY}] * 12
    async with nothing_written():
        with peak_rss(server.pid) as sampled:
            responses = await asyncio.gather(*(post(headers) for headers in keyless + keyed))
    baseline, peak = sampled
    for response in responses[: len(keyless)]:
        error_of(response, 401, "UNAUTHORIZED")
        assert response.headers["connection"] == "close"
    for response in responses[len(keyless) :]:
        assert "1 MiB" in error_of(response, 413, "PAYLOAD_TOO_LARGE")["message"]
    # 24 bodies of 15 MiB: reading them into memory would take 360 MiB (the server grew by ~512 MB before).
    grown = peak - baseline
    assert grown < 64 * MIB, f"server memory grew by {grown / MIB:.0f} MiB (baseline {baseline / MIB:.0f} MiB)"


async def test_oversized_body_gets_413_and_the_connection_stays_usable(
    server: GyozaServer, nothing_written: NoTrace
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"y" * MIB

    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits) as http, nothing_written():
        declared = await http.post("/runs", content=b" " * (MIB + 1))
        assert "1 MiB" in error_of(declared, 413, "PAYLOAD_TOO_LARGE")["message"]
        chunked = await http.post("/runs", content=chunks())  # no Content-Length: judged as it streams in
        assert "1 MiB" in error_of(chunked, 413, "PAYLOAD_TOO_LARGE")["message"]
        heartbeat = await http.post("/workers/w-big/heartbeat", content=BIG)
        error_of(heartbeat, 413, "PAYLOAD_TOO_LARGE")
        assert "connection" not in declared.headers  # the body was read in full: keep-alive goes on
        assert (await http.get("/health")).status_code == 200


async def test_logs_may_be_up_to_ten_mib(client: httpx.AsyncClient, nats_url: str) -> None:
    run = await running_run(client, nats_url)
    logs = f"/runs/{run['id']}/logs"
    params = {"attempt": 1, "worker_id": "w1"}
    fits = b"l" * (10 * MIB)
    assert (await client.put(logs, params=params, content=fits)).status_code == 204
    over = await client.put(logs, params=params, content=fits + b"!")
    assert "10 MiB" in error_of(over, 413, "PAYLOAD_TOO_LARGE")["message"]
    assert len((await client.get(logs)).content) == 10 * MIB
