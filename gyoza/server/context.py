"""What a running server holds: the bus, the services, the scheduler and the local index."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from quart import current_app

from gyoza.bus.connection import open_bus
from gyoza.bus.port import Bus
from gyoza.scheduler.leader import Scheduler
from gyoza.server.index import QueryIndex
from gyoza.server.watch import BucketFollower, IndexedRuns
from gyoza.services.definitions import DefinitionService
from gyoza.services.feed import RunFeed
from gyoza.services.fleet import FleetService, WorkerReports
from gyoza.services.runs import RunService
from gyoza.services.topics import TopicFeed
from gyoza.services.workers import WorkerService
from gyoza.settings import Settings
from gyoza.supervision import TaskFailures

# The app config key naming the NATS mode ``/health`` reports when the bus cannot tell: a ``--workers`` pool's
# processes reach the embedded nats-server their parent runs by its URL.
NATS_MODE_CONFIG = "GYOZA_NATS_MODE"


@dataclass
class ServerContext:
    settings: Settings
    bus: Bus
    index: QueryIndex
    runs_listener: IndexedRuns
    definitions: DefinitionService
    runs: RunService
    topics: TopicFeed
    fleet: FleetService
    feed: RunFeed
    follower: BucketFollower
    scheduler: Scheduler
    failures: TaskFailures
    reports: WorkerReports | None = None

    async def close(self) -> None:
        if self.reports is not None:
            await self.reports.stop()
        with contextlib.suppress(Exception):
            await self.scheduler.stop()
        await self.feed.stop()
        await self.follower.stop()
        await self.definitions.stop()
        await self.bus.close()
        self.index.close()


def index_path(settings: Settings, pid: int) -> Path:
    """Each server process's own index file: the processes of a ``--workers`` pool share the port."""
    return settings.data_dir / "index" / f"server-{settings.port}-{pid}.sqlite"


def node_id(settings: Settings) -> str:
    """A name for this server process in the leader lease: host, port and a random suffix."""
    return f"{socket.gethostname()}-{settings.port}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def build_context(settings: Settings) -> ServerContext:
    """Connect, replay KV into the index and the scheduler's model, then start competing for the leader lease."""
    bus = await open_bus(settings)
    try:
        index = QueryIndex(index_path(settings, os.getpid()))
        listener = IndexedRuns(index, bus.runs)
        definitions = DefinitionService(bus, observer=listener)
        runs = RunService(bus, definitions, observer=listener)
        workers = WorkerService(bus)
        topics = TopicFeed(bus)
        failures = TaskFailures()
        scheduler = Scheduler(bus, runs, workers, settings, node_id(settings), failures, outbox=topics)
        feed = RunFeed(bus, failures, runs.store)
        for subscriber in (listener, topics, scheduler):
            feed.subscribe(subscriber)
        follower = BucketFollower(bus, index, failures)
        await follower.start()
        await definitions.follow(failures)  # the pointer cache: a run creation reads no KV for its definition
        await feed.start()
        await scheduler.start()
        reports = WorkerReports(bus, runs)  # NATS-mode workers' events, on every replica
        await reports.start()
    except BaseException:
        await bus.close()
        raise
    return ServerContext(
        settings, bus, index, listener, definitions, runs, topics, FleetService(bus, workers), feed, follower,
        scheduler, failures, reports,
    )  # fmt: skip


def ctx() -> ServerContext:
    context: ServerContext = current_app.extensions["gyoza"]
    return context
