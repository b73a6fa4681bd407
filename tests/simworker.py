"""A simulated worker for scheduler tests: speaks the worker REST protocol (heartbeat, claim, events) but runs nothing.

It heartbeats on its own task, like the real worker, reporting its resources, tags and the attempts it holds.
Cancel commands from heartbeat replies are recorded so tests can assert on them. Stopping the heartbeats
simulates a worker that died or lost the network; ``forget`` simulates a restart that lost its containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from gyoza.bus.embedded import EmbeddedNats
from tests.processes import API_KEY, GyozaServer
from tests.waiting import until

TERMINAL_EVENTS = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


def gpu(index: int, vram_mb: int) -> dict[str, Any]:
    return {"index": index, "uuid": f"GPU-sim-{index}", "name": "SimGPU", "vram_mb": vram_mb}


class SimWorker:
    def __init__(
        self,
        base_url: str,
        worker_id: str,
        cpu: float = 4,
        ram_mb: int = 8192,
        gpus: list[dict[str, Any]] | None = None,
        tags: list[str] | None = None,
        interval: float = 0.3,
        images: list[str] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.images = images or []
        self.resources = {"cpu": cpu, "ram_mb": ram_mb, "gpus": gpus or []}
        self.tags = tags or []
        self.interval = interval
        self.http = httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=30)
        self.held: set[tuple[str, int]] = set()
        self.cancels: list[dict[str, Any]] = []
        self.claimed: set[tuple[str, int]] = set()
        self.heartbeats_ok = 0
        self.last_heartbeat_at = 0.0  # monotonic time of the last heartbeat the server answered
        self._task: asyncio.Task[None] | None = None

    # --- heartbeats --------------------------------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        running = [{"run_id": run_id, "attempt": attempt} for run_id, attempt in sorted(self.held)]
        return {"resources": self.resources, "tags": self.tags, "running": running, "version": "sim",
                "images": self.images}  # fmt: skip

    async def heartbeat(self) -> httpx.Response:
        """Send one heartbeat; on 200 record the commands of the reply."""
        response = await self.http.post(f"/workers/{self.worker_id}/heartbeat", json=self.body())
        if response.status_code == 200:
            self.heartbeats_ok += 1
            self.last_heartbeat_at = time.monotonic()
            self.cancels.extend(c for c in response.json()["commands"] if c["type"] == "cancel")
        return response

    async def start(self) -> SimWorker:
        """Register with a first answered heartbeat (retrying while there is no leader), then beat in the background."""
        deadline = time.monotonic() + 15
        while (await self.heartbeat()).status_code != 200:
            assert time.monotonic() < deadline, f"worker {self.worker_id} could not register"
            await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._beat(), name=f"simworker-{self.worker_id}")
        return self

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            # A 503 (no leader during fail-over) or a refused connection is retried at the next beat, as a worker does.
            with contextlib.suppress(httpx.HTTPError):
                await self.heartbeat()

    async def stop_heartbeats(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def beats_after(self, count: int) -> None:
        """Wait until ``count`` more heartbeats have been answered."""
        target = self.heartbeats_ok + count
        deadline = time.monotonic() + 10 + count * self.interval * 3
        while self.heartbeats_ok < target:
            assert time.monotonic() < deadline, f"worker {self.worker_id}: heartbeats stalled"
            await asyncio.sleep(self.interval / 4)

    async def close(self) -> None:
        await self.stop_heartbeats()
        await self.http.aclose()

    # --- work --------------------------------------------------------------------------------------------------

    async def claim(self, wait: float = 0, hold: bool = True) -> list[dict[str, Any]]:
        """Claim the runs assigned to this worker; ``hold`` adds them to what the heartbeats report."""
        response = await self.http.post(f"/workers/{self.worker_id}/claim", params={"wait": wait})
        assert response.status_code == 200, response.text
        assignments: list[dict[str, Any]] = response.json()["data"]
        for item in assignments:
            self.claimed.add((item["run_id"], item["attempt"]))
            if hold:
                self.held.add((item["run_id"], item["attempt"]))
        return assignments

    async def report(
        self, run_id: str, attempt: int, type: str, msg: str | int = "", payload: dict[str, Any] | None = None
    ) -> httpx.Response:
        """POST a worker event. From STARTED on the worker holds the attempt (its heartbeats report it); after a
        terminal event, accepted or not, it no longer does."""
        if type == "STARTED":
            self.held.add((run_id, attempt))
        body = {"attempt": attempt, "worker_id": self.worker_id, "type": type, "msg": msg, "payload": payload or {}}
        response = await self.http.post(f"/runs/{run_id}/events", json=body)
        if type in TERMINAL_EVENTS:
            self.held.discard((run_id, attempt))
        return response

    def forget(self) -> None:
        """Drop every held attempt from the reports, as a worker restarted without its containers would."""
        self.held.clear()

    async def view(self) -> dict[str, Any]:
        response = await self.http.get(f"/workers/{self.worker_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


# --- a private cluster per test module -----------------------------------------------------------------------------

# Short enough to keep the suite fast, long enough that a loaded CI box does not evict a live worker by accident.
FAST_SETTINGS = {"GYOZA_WORKER_TIMEOUT": "2", "GYOZA_HEARTBEAT_INTERVAL": "0.3", "GYOZA_LEASE_TTL": "2"}


class Cluster:
    """Its own nats-server and Gyoza server(s), so no other test's runs or workers meet these simulated workers."""

    def __init__(self, root: Path, servers: int = 1, **env: str) -> None:
        self.root = root
        self.nats = EmbeddedNats(root / "nats")
        self.env = {**FAST_SETTINGS, **env}
        self.servers: list[GyozaServer] = []
        self.count = servers
        self.nats_url = ""

    async def start(self) -> Cluster:
        self.nats_url = await self.nats.start()
        for n in range(self.count):
            self.servers.append(GyozaServer(self.root / f"gyoza-{n}", self.nats_url, **self.env).start())
        return self

    @property
    def url(self) -> str:
        return self.servers[0].url

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.nats.stop()

    def client(self, url: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url or self.url, headers={"X-API-Key": API_KEY}, timeout=30)


class Fleet:
    """The simulated workers of one test, with ids unique to it; ``close`` silences them all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.workers: list[SimWorker] = []

    async def add(self, name: str, url: str | None = None, **kwargs: Any) -> SimWorker:
        worker = SimWorker(url or self.url, f"{name}-{uuid.uuid4().hex[:6]}", **kwargs)
        self.workers.append(worker)
        return await worker.start()

    async def close(self) -> None:
        for worker in self.workers:
            await worker.close()


def unique_tag() -> str:
    """A tag only this test's workers carry, so the shared scheduler never mixes tests."""
    return "t-" + uuid.uuid4().hex[:10]


# --- runs ----------------------------------------------------------------------------------------------------------


async def create_run(http: httpx.AsyncClient, tags: list[str], priority: int = 5, **constraints: Any) -> dict[str, Any]:
    body = {"image": "sim/op:1", "tags": tags, "priority": priority, "constraints": constraints}
    response = await http.post("/runs", json=body)
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


async def get_run(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await http.get(f"/runs/{run_id}")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


async def wait_run(
    http: httpx.AsyncClient,
    run_id: str,
    timeout: float = 10.0,  # noqa: ASYNC109 - a polling deadline
    state: str | None = None,
    reason: str | tuple[str, ...] | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """Poll the run until it is in ``state`` (with ``reason`` code, or one of them, and ``attempt``, when given)."""
    reasons = (reason,) if isinstance(reason, str) else reason

    last: dict[str, Any] = {}

    async def matches() -> dict[str, Any] | None:
        run = last["run"] = await get_run(http, run_id)
        wanted = (
            (state is None or run["state"] == state)
            and (reasons is None or run["state_reason"]["code"] in reasons)
            and (attempt is None or run["current_attempt"] == attempt)
        )
        return run if wanted else None

    try:
        return await until(matches, timeout, interval=0.05)
    except TimeoutError:
        seen = last.get("run", {})
        raise AssertionError(
            f"run {run_id} not in state={state} reason={reason} attempt={attempt} within {timeout} s; last seen: "
            f"{seen.get('state')} {seen.get('state_reason')} attempt {seen.get('current_attempt')} "
            f"on {seen.get('worker_id')}"
        ) from None


async def all_events(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/runs/{run_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events
