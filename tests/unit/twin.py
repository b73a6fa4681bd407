"""Whole server nodes over the in-memory bus with a manual clock: services, run feed, topic outbox and scheduler in
one process, no nats-server, no subprocess. Several nodes may share one bus, as replicas share NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gyoza.bus import names
from gyoza.bus.memory import MemoryBus
from gyoza.bus.port import Stoppable
from gyoza.scheduler.leader import Scheduler
from gyoza.schema import HeartbeatIn, HeartbeatReply, WorkerCommand
from gyoza.services.clock import ManualClock
from gyoza.services.definitions import DefinitionService
from gyoza.services.feed import RunFeed
from gyoza.services.fleet import FleetService
from gyoza.services.runs import RunService
from gyoza.services.topics import TopicFeed
from gyoza.services.workers import WorkerService
from gyoza.settings import Settings
from gyoza.supervision import TaskFailures

WORKER_TIMEOUT_S = 10.0
# Long enough that moving the manual clock past a worker's timeout leaves the leader's lease fresh.
LEASE_TTL_S = 3600.0


@dataclass
class Twin:
    clock: ManualClock
    bus: MemoryBus
    runs: RunService
    workers: WorkerService
    fleet: FleetService
    topics: TopicFeed
    scheduler: Scheduler

    async def heartbeat(
        self, worker_id: str, cpu: float = 4, ram_mb: int = 4096, running: list[tuple[str, int]] | None = None,
        warm: list[dict[str, Any]] | None = None,
    ) -> list[WorkerCommand]:  # fmt: skip
        held = [{"run_id": run_id, "attempt": attempt} for run_id, attempt in running or []]
        resources = {"cpu": cpu, "ram_mb": ram_mb}
        body = HeartbeatIn.model_validate({"resources": resources, "running": held, "warm": warm or []})
        reply = await self.scheduler.heartbeat(worker_id, body, self.clock.monotonic())
        return HeartbeatReply.model_validate_json(reply).commands

    async def messages_to(self, worker_id: str) -> tuple[asyncio.Queue[bytes], Stoppable]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        return queue, await self.bus.subscribe(names.assignments_subject(worker_id), queue.put)


@asynccontextmanager
async def node(bus: MemoryBus, clock: ManualClock, name: str, start: bool = True) -> AsyncIterator[Twin]:
    """One server replica on ``bus``; ``start``: compete for the lease right away (the first node wins it)."""
    failures = TaskFailures()
    definitions = DefinitionService(bus, clock=clock.utcnow)
    runs = RunService(bus, definitions, clock=clock.utcnow)
    workers = WorkerService(bus, clock=clock.utcnow)
    topics = TopicFeed(bus)
    settings = Settings(nats_url="memory://", worker_timeout=WORKER_TIMEOUT_S, lease_ttl=LEASE_TTL_S)
    scheduler = Scheduler(bus, runs, workers, settings, name, failures, clock, outbox=topics)
    feed = RunFeed(bus, failures, runs.store)
    feed.subscribe(topics)
    feed.subscribe(scheduler)
    await feed.start()
    if start:
        await scheduler.start()
    try:
        yield Twin(clock, bus, runs, workers, FleetService(bus, workers), topics, scheduler)
    finally:
        await scheduler.stop()
        await feed.stop()


@asynccontextmanager
async def twin(leader: bool = True) -> AsyncIterator[Twin]:
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(bus.close)
        yield await stack.enter_async_context(node(bus, clock, "unit-node", start=leader))
