"""What a running server holds: the bus, the services, the scheduler and the local index."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass

from quart import current_app

from gyoza.bus.connection import open_bus
from gyoza.bus.port import Bus
from gyoza.scheduler.leader import Scheduler
from gyoza.server.index import QueryIndex
from gyoza.server.indexfile import BucketState, IndexFile
from gyoza.server.watch import BucketFollower, IndexedRuns
from gyoza.services.definitions import DefinitionService
from gyoza.services.expiry import ExpiredRunCleaner
from gyoza.services.feed import RunFeed
from gyoza.services.fleet import FleetService, WorkerReports
from gyoza.services.keys import KeyRing, KeyService
from gyoza.services.livelogs import LiveLogs, LogReports
from gyoza.services.livestreams import RunStream
from gyoza.services.runs import RunService
from gyoza.services.secrets import SecretService
from gyoza.services.streams import StreamHub
from gyoza.services.topics import TopicFeed
from gyoza.services.webhook_delivery import WebhookDeliverer
from gyoza.services.webhooks import WebhookQueue
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
    # Live streams (issue 11): the fan-out hub (a run feed listener), the live log lines and the run streams.
    stream_hub: StreamHub
    live_logs: LiveLogs
    run_streams: RunStream
    webhooks: WebhookQueue
    webhook_deliverer: WebhookDeliverer
    keys: KeyService  # scoped API keys (docs/keys.md) and the watch that feeds the auth's cache of them
    expired_runs: ExpiredRunCleaner
    secrets: SecretService
    reports: WorkerReports | None = None
    log_reports: LogReports | None = None

    async def close(self) -> None:
        await self.keys.stop()
        await self.webhook_deliverer.stop()
        await self.expired_runs.stop()
        await self.secrets.stop()
        if self.log_reports is not None:
            await self.log_reports.stop()
        if self.reports is not None:
            await self.reports.stop()
        with contextlib.suppress(Exception):
            await self.scheduler.stop()
        await self.feed.stop()
        await self.follower.stop()
        await self.definitions.stop()
        await self.bus.close()
        self.index.close()


async def open_index(settings: Settings, bus: Bus) -> QueryIndex:
    """This process's query index: a kept one when it matches the runs bucket as it is now."""
    bucket = BucketState(await bus.runs.origin(), await bus.runs.last_revision())
    return QueryIndex(IndexFile.claim(settings.data_dir / "index"), bucket)


def node_id(settings: Settings) -> str:
    """A name for this server process in the leader lease: host, port and a random suffix."""
    return f"{socket.gethostname()}-{settings.port}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def build_context(settings: Settings, ring: KeyRing | None = None) -> ServerContext:
    """Connect, replay KV into the index and the scheduler's model, then start competing for the leader lease.
    ``ring``: the cache of scoped API keys the app's auth reads, filled here before the first request is served."""
    bus = await open_bus(settings)
    try:
        index = await open_index(settings, bus)
        failures = TaskFailures()
        # The logs of runs whose retention ended go on the scheduler's leader (``scheduler`` is bound below).
        cleaner = ExpiredRunCleaner(bus, failures, leading=lambda: scheduler.is_leader)
        listener = IndexedRuns(index, bus.runs, on_expired=cleaner.expired)
        definitions = DefinitionService(bus, observer=listener)
        secrets = SecretService(bus)
        await secrets.follow(failures)  # the cache a release reads: assignments carry the values
        runs = RunService(bus, definitions, observer=listener, retention=settings.retention_default, secrets=secrets)
        workers = WorkerService(bus)
        webhooks = WebhookQueue(bus, settings.webhook_max_attempts)
        topics = TopicFeed(bus, sinks=[webhooks])  # the run-event outbox: topic feeds and webhook queueing
        keys = KeyService(bus, ring or KeyRing())
        await keys.follow(failures)
        scheduler = Scheduler(
            bus,
            runs,
            workers,
            settings,
            node_id(settings),
            failures,
            outbox=topics,
            catch_up=listener.catch_up,
            quota_of=keys.ring.quota_of,
        )
        feed = RunFeed(bus, failures, runs.store, keeper=listener)
        stream_hub = StreamHub(bus)
        for subscriber in (listener, topics, scheduler, stream_hub):
            feed.subscribe(subscriber)
        follower = BucketFollower(bus, index, failures)
        await follower.start()
        await definitions.follow(failures)  # the pointer cache: a run creation reads no KV for its definition
        # From the older of where the index got to and where the topic outbox got to: the outbox (if this process
        # comes to lead it) must see every version past its cursor. Unfinished runs come from the index first.
        await feed.start(after=min(index.applied, await scheduler.lease.outbox_through()), seed=index.live_records())
        listener.sweep_expired(time.time())
        await scheduler.start()
        cleaner.start()
        reports = WorkerReports(bus, runs)  # NATS-mode workers' events, on every replica
        await reports.start()
        live_logs = LiveLogs(bus, runs)
        log_reports = LogReports(bus, live_logs)  # NATS-mode workers' live log lines, on every replica
        await log_reports.start()
        deliverer = WebhookDeliverer(webhooks, runs, settings, failures)  # on every replica: the queue's consumers
        await deliverer.start()
    except BaseException:
        await bus.close()
        raise
    return ServerContext(
        settings, bus, index, listener, definitions, runs, topics, FleetService(bus, workers), feed, follower,
        scheduler, failures, stream_hub, live_logs, RunStream(runs, live_logs, stream_hub), webhooks,
        deliverer, keys, cleaner, secrets, reports, log_reports,
    )  # fmt: skip


def ctx() -> ServerContext:
    context: ServerContext = current_app.extensions["gyoza"]
    return context
