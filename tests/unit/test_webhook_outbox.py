"""Webhook deliveries ride on the run-event outbox: one queued attempt per (event, webhook), even when the outbox
hands the same events over again (a new leader replaying from an older cursor)."""

from __future__ import annotations

import json

from gyoza.bus.memory import MemoryBus
from gyoza.schema import AdHocRunIn, DeliveryState, WebhookJob, WorkerEventIn
from gyoza.services.clock import ManualClock
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService
from gyoza.services.topics import TopicFeed
from gyoza.services.webhooks import QUEUE_STREAM, QUEUE_SUBJECT, WebhookQueue


async def queued(bus: MemoryBus) -> list[WebhookJob]:
    return [
        WebhookJob.model_validate_json(data) for _, data in await bus.read_subject(QUEUE_STREAM, QUEUE_SUBJECT, 0, 100)
    ]


async def test_each_event_is_queued_once_per_webhook_that_wants_it() -> None:
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    runs = RunService(bus, DefinitionService(bus, clock=clock.utcnow), clock=clock.utcnow)
    body = {
        "image": "busybox",
        "webhooks": [{"url": "https://a.example/h"}, {"url": "https://b.example/h", "events": ["CREATED", "STARTED"]}],
    }
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate_json(json.dumps(body)), None)
    await runs.assign(record.id, 1, "w1", [])
    for kind in ("STARTED", "COMPLETED"):
        event = WorkerEventIn.model_validate({"attempt": 1, "worker_id": "w1", "type": kind, "payload": {}})
        await runs.apply_worker_event(record.id, event)
    final, revision = await runs.get_with_revision(record.id)
    queue = WebhookQueue(bus, max_attempts=3, clock=clock)

    for _ in range(2):  # a second leader replays the same versions from cursor 0
        outbox = TopicFeed(bus, sinks=[queue])
        await outbox.take_over(0, None)
        await outbox.on_run(final, revision)

    jobs = await queued(bus)
    assert sorted((job.event_type.value, job.hook) for job in jobs) == [
        ("COMPLETED", 0),
        ("CREATED", 1),
        ("STARTED", 1),
    ]
    assert {(job.attempt, job.last_attempt) for job in jobs} == {(1, 3)}
    listed = (await queue.deliveries(record.id)).data
    assert sorted(d.id for d in listed) == sorted(job.delivery_id for job in jobs)
    assert {d.state for d in listed} == {DeliveryState.PENDING}
    assert (await runs.get_with_revision(record.id))[1] == revision  # queueing wrote nothing to the run
    await bus.close()


async def test_a_run_without_webhooks_queues_nothing() -> None:
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    runs = RunService(bus, DefinitionService(bus, clock=clock.utcnow), clock=clock.utcnow)
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate({"image": "busybox"}), None)
    stored, revision = await runs.get_with_revision(record.id)
    outbox = TopicFeed(bus, sinks=[WebhookQueue(bus, max_attempts=3, clock=clock)])
    await outbox.take_over(0, None)
    await outbox.on_run(stored, revision)
    assert await queued(bus) == [] and outbox.cursor() >= revision
    await bus.close()
