"""One delivery attempt at a time, over the in-memory bus, against a receiver on loopback: the outcome goes to the
log, a failure queues its retry, a retry before its time goes back, a superseded round is dropped, a receiver that
does not answer in time is a failed attempt."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from gyoza.bus.memory import MemoryBus
from gyoza.errors import Unavailable
from gyoza.schema import AdHocRunIn, DeliveryState, RunRecord, WebhookJob
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService
from gyoza.services.webhook_delivery import WebhookDeliverer
from gyoza.services.webhooks import QUEUE_STREAM, QUEUE_SUBJECT, WebhookQueue
from gyoza.settings import Settings
from gyoza.supervision import TaskFailures
from tests.webhook_receiver import Receiver

SETTINGS = Settings(nats_url="memory://", webhook_backoff=30, webhook_timeout=0.3)


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    memory = MemoryBus()
    yield memory
    await memory.close()


async def setup(bus: MemoryBus, url: str) -> tuple[WebhookQueue, WebhookDeliverer, RunRecord, WebhookJob]:
    runs = RunService(bus, DefinitionService(bus))
    body = {"image": "busybox", "webhooks": [{"url": url, "events": ["CREATED"], "secret": "s"}]}
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate_json(json.dumps(body)), None)
    queue = WebhookQueue(bus, max_attempts=3)
    await queue.publish(record, record.events[0])
    [(_, data)] = await bus.read_subject(QUEUE_STREAM, QUEUE_SUBJECT, 0, 10)
    deliverer = WebhookDeliverer(queue, runs, SETTINGS, TaskFailures())  # not started: the test hands it messages
    return queue, deliverer, record, WebhookJob.model_validate_json(data)


async def test_a_failure_is_logged_and_its_retry_queued_after_the_backoff(bus: MemoryBus) -> None:
    receiver = await Receiver(fail_first=1, fail_status=503).start()
    queue, deliverer, record, job = await setup(bus, receiver.url)
    try:
        await deliverer.handle(job.model_dump_json().encode())
        [delivery] = (await queue.deliveries(record.id)).data
        assert delivery.state is DeliveryState.RETRYING and delivery.attempts[0].status_code == 503
        assert delivery.next_attempt_at is not None
        retry = WebhookJob.model_validate_json((await bus.read_subject(QUEUE_STREAM, QUEUE_SUBJECT, 0, 10))[-1][1])
        assert retry.attempt == 2 and retry.not_before - time.time() > 29  # the 30 s first back-off
        with pytest.raises(Unavailable):  # fetched early: handed back to the queue, nothing sent
            await deliverer.handle(retry.model_dump_json().encode())
        assert len(receiver.received) == 1
    finally:
        await deliverer.stop()
        await receiver.close()


async def test_a_superseded_round_sends_nothing(bus: MemoryBus) -> None:
    receiver = await Receiver().start()
    queue, deliverer, record, job = await setup(bus, receiver.url)
    try:
        await queue.redeliver(record, job.delivery_id)  # round 1 has no attempt yet: the same round, once
        assert len(await bus.read_subject(QUEUE_STREAM, QUEUE_SUBJECT, 0, 10)) == 1
        await deliverer.handle(job.model_dump_json().encode())
        await queue.redeliver(record, job.delivery_id)  # round 2, from attempt 2
        await deliverer.handle(job.model_copy(update={"attempt": 2}).model_dump_json().encode())  # round 1's retry
        assert len(receiver.received) == 1
        [delivery] = (await queue.deliveries(record.id)).data
        assert delivery.state is DeliveryState.PENDING and [a.number for a in delivery.attempts] == [1]
    finally:
        await deliverer.stop()
        await receiver.close()


async def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(bus: MemoryBus) -> None:
    receiver = await Receiver(answer_after_s=5).start()
    queue, deliverer, record, job = await setup(bus, receiver.url)
    try:
        await deliverer.handle(job.model_dump_json().encode())
        [delivery] = (await queue.deliveries(record.id)).data
        assert delivery.state is DeliveryState.RETRYING
        assert delivery.attempts[0].error == "no answer within 0.3 s" and delivery.attempts[0].status_code is None
    finally:
        await deliverer.stop()
        await receiver.close()
