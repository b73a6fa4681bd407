"""Never two schedulers (issue 15 item 1, SPEC §3 invariant 5): a server acts as scheduler only while it holds a lease
it renewed within the TTL, and any failure of its lease task ends its leadership at once.

Two Gyoza servers share one external nats-server. In the first test it is killed and brought back without JetStream
(the client reconnects, but KV requests find no stream, as on a node that lost its JetStream) and then with it; in the
second the leader process is frozen (SIGSTOP) past the TTL and resumed once the standby took over. Both servers'
``gyoza_scheduler_leader`` gauges are sampled all along: never both 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gyoza.bus.embedded import nats_server_binary
from tests.processes import API_KEY, GyozaServer, free_port
from tests.simworker import FAST_SETTINGS, Fleet, all_events, create_run, unique_tag, wait_run
from tests.waiting import until

LEASE_TTL = float(FAST_SETTINGS["GYOZA_LEASE_TTL"])
SAMPLE_EVERY_S = 0.05
SAMPLE_TIMEOUT_S = 0.5

NATS_CONF = """
max_payload: 8MB
max_pending: 64MB
write_deadline: "10s"
"""


class NatsProcess:
    """A nats-server on a fixed loopback port that can be killed and restarted, with or without JetStream."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, jetstream: bool = True) -> None:
        self._spawn(jetstream)

        async def listening() -> bool:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return True
            return False

        await until(listening, what="nats-server listening")

    def _spawn(self, jetstream: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "nats.conf"
        conf.write_text(NATS_CONF + ("jetstream {}\n" if jetstream else ""))
        args = [nats_server_binary(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(self.port)]
        if jetstream:
            args += ["-sd", str(self.root / "jetstream")]
        with (self.root / "nats-server.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


class LeaderSampler:
    """Reads every server's ``gyoza_scheduler_leader`` gauge every few tens of milliseconds."""

    def __init__(self, servers: list[GyozaServer]) -> None:
        self.servers = servers
        self.samples: list[tuple[float, list[bool | None]]] = []
        # A short timeout: a frozen server reads as unknown (None) at once instead of holding up the other's sample.
        self.clients = [
            httpx.AsyncClient(base_url=s.url, headers={"X-API-Key": API_KEY}, timeout=SAMPLE_TIMEOUT_S) for s in servers
        ]

    async def run(self) -> None:
        while True:
            values = await asyncio.gather(*(self._acting(http) for http in self.clients))
            self.samples.append((time.monotonic(), list(values)))
            await asyncio.sleep(SAMPLE_EVERY_S)

    @staticmethod
    async def _acting(http: httpx.AsyncClient) -> bool | None:
        try:
            text = (await http.get("/metrics")).text
        except httpx.HTTPError:
            return None
        line = next((x for x in text.splitlines() if x.startswith("gyoza_scheduler_leader ")), None)
        return None if line is None else float(line.split()[1]) == 1.0

    def latest(self) -> list[bool | None]:
        return self.samples[-1][1] if self.samples else [None] * len(self.servers)

    def leaders(self) -> list[GyozaServer]:
        return [s for s, acting in zip(self.servers, self.latest(), strict=True) if acting]

    async def close(self) -> None:
        for http in self.clients:
            await http.aclose()


@pytest.fixture
async def nats_process(tmp_path: Path) -> AsyncIterator[NatsProcess]:
    process = NatsProcess(tmp_path / "nats")
    await process.start()
    yield process
    process.kill()


@pytest.fixture
async def sampled(nats_process: NatsProcess, tmp_path: Path) -> AsyncIterator[LeaderSampler]:
    """Two servers on ``nats_process``, their leader gauges sampled until the end of the test; then never both 1."""
    servers = [GyozaServer(tmp_path / f"gyoza-{n}", nats_process.url, **FAST_SETTINGS).start() for n in range(2)]
    sampler = LeaderSampler(servers)
    sampling = asyncio.create_task(sampler.run())
    try:
        yield sampler
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        await sampler.close()
        for server in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGCONT)
            server.stop()
    both = [t for t, values in sampler.samples if values.count(True) > 1]
    assert not both, f"two servers acted as scheduler at once in {len(both)} of {len(sampler.samples)} samples"


async def one_leader(sampler: LeaderSampler, timeout: float = 10) -> GyozaServer:  # noqa: ASYNC109 - a deadline
    [leader] = await until(lambda: len(sampler.leaders()) == 1 and sampler.leaders(), timeout, what="one leader")
    return leader


async def schedules(server: GyozaServer) -> None:
    """The server's scheduler places a run on a worker, once."""
    tag = unique_tag()
    fleet = Fleet(server.url)
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        try:
            worker = await fleet.add("after-fault", tags=[tag])
            run = (await create_run(http, [tag], cpu=1))["id"]
            assigned = await wait_run(http, run, timeout=10, state="ASSIGNED")
            assert assigned["worker_id"] == worker.worker_id
            assert [e["type"] for e in await all_events(http, run)] == ["CREATED", "ASSIGNED"]
        finally:
            await fleet.close()


async def test_a_leader_that_cannot_renew_stops_and_one_successor_takes_over(
    nats_process: NatsProcess, sampled: LeaderSampler
) -> None:
    leader = await one_leader(sampled)

    # NATS comes back without JetStream: the lease cannot be renewed (no response from the stream).
    nats_process.kill()
    fault_at = time.monotonic()
    await nats_process.start(jetstream=False)
    await until(lambda: leader not in sampled.leaders(), timeout=LEASE_TTL + 3, what="the old leader stops")
    stopped_after = time.monotonic() - fault_at
    print(f"the leader stopped acting {stopped_after:.2f} s after NATS went away (lease TTL {LEASE_TTL:g} s)")
    assert stopped_after < LEASE_TTL + 0.5, "a leader must stop acting within the lease TTL"
    await asyncio.sleep(LEASE_TTL)  # the fault lasts longer than the TTL: the old lease has expired in KV
    assert not sampled.leaders(), "nobody can hold a lease while JetStream is away"

    nats_process.kill()
    await nats_process.start(jetstream=True)
    back_at = time.monotonic()
    successor = await one_leader(sampled, timeout=LEASE_TTL + 10)
    print(f"{'the standby' if successor is not leader else 'the old leader'} took over "
          f"{time.monotonic() - back_at:.2f} s after JetStream came back")  # fmt: skip
    await schedules(successor)
    await asyncio.sleep(LEASE_TTL)  # keep sampling: the other one must not come back beside it

    for server, http in zip(sampled.servers, sampled.clients, strict=True):
        text = (await http.get("/metrics", timeout=10)).text
        assert "# TYPE gyoza_background_task_failures_total counter" in text
        failures = [line for line in text.splitlines() if line.startswith("gyoza_background_task_failures_total")]
        print(f"server {server.port}: {failures or 'no background task failed'}")


async def test_a_frozen_leader_resumes_as_standby_beside_its_successor(sampled: LeaderSampler) -> None:
    leader = await one_leader(sampled)
    [standby] = [s for s in sampled.servers if s is not leader]

    os.kill(leader.pid, signal.SIGSTOP)  # frozen mid-lease: it can neither renew nor step down
    frozen_at = time.monotonic()
    await until(lambda: sampled.leaders() == [standby], timeout=LEASE_TTL + 5, what="the standby takes over")
    print(f"the standby took over {time.monotonic() - frozen_at:.2f} s after the leader froze (TTL {LEASE_TTL:g} s)")

    os.kill(leader.pid, signal.SIGCONT)  # it wakes up believing it leads: it must not act on its stale lease
    samples_before = len(sampled.samples)
    await until(lambda: len(sampled.samples) > samples_before + 2 * LEASE_TTL / SAMPLE_EVERY_S, timeout=30,
                what="samples across a lease TTL after the resume")  # fmt: skip
    assert sampled.leaders() == [standby]
    await schedules(standby)
