"""The topic outbox runs in the scheduler leader only and writes nothing: one worker event is one run-record write.
A standby that takes over publishes what the old leader left, and nothing it had published already."""

from __future__ import annotations

import uuid
from collections import Counter
from contextlib import AsyncExitStack

from gyoza.bus import names
from gyoza.bus.memory import MemoryBus
from gyoza.schema import AdHocRunIn, RunRecord, WorkerEventIn
from gyoza.services.clock import ManualClock
from tests.unit.twin import Twin, node
from tests.waiting import until


def delivered_run(topic: str) -> AdHocRunIn:
    return AdHocRunIn.model_validate(
        {"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}, "event_delivery": {"topic": topic}}
    )


async def topic_events(bus: MemoryBus, topic: str) -> list[tuple[str, str]]:
    found = await bus.read_subject(names.TOPICS_STREAM, names.topic_subject(topic), 0, 1000)
    return [(data.split(b'"type":"')[1].split(b'"')[0].decode(), data.decode()) for _, data in found]


def counting_publishes(bus: MemoryBus) -> Counter[str]:
    """Count durable publishes by message id, to tell a repeat the stream dropped from none at all."""
    counts: Counter[str] = Counter()
    publish = bus.publish_durable

    async def counted(subject: str, payload: bytes, msg_id: str | None = None) -> int:
        if msg_id is not None and subject.startswith("gyoza.topics."):
            counts[msg_id] += 1
        return await publish(subject, payload, msg_id)

    bus.publish_durable = counted  # type: ignore[method-assign]
    return counts


async def drive(t: Twin, record: RunRecord, *kinds: str) -> int:
    """Report worker events; returns the run's revision after the last one."""
    for kind in kinds:
        payload = {"exit_code": 0} if kind == "COMPLETED" else {}
        event = WorkerEventIn.model_validate({"attempt": 1, "worker_id": "w1", "type": kind, "payload": payload})
        await t.runs.apply_worker_event(record.id, event)
    return (await t.runs.get_with_revision(record.id))[1]


async def test_the_leader_publishes_each_event_once_and_writes_nothing() -> None:
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    counts = counting_publishes(bus)
    topic = f"t-{uuid.uuid4().hex[:6]}"
    async with AsyncExitStack() as stack:
        leader = await stack.enter_async_context(node(bus, clock, "a"))
        standby = await stack.enter_async_context(node(bus, clock, "b"))
        assert leader.scheduler.is_leader and not standby.scheduler.is_leader
        record, _ = await leader.runs.create_adhoc(delivered_run(topic), None)
        await leader.runs.assign(record.id, 1, "w1", [])
        revision = await drive(leader, record, "STARTED", "INFO", "COMPLETED")
        stored = await leader.runs.get(record.id)
        await until(lambda: len(counts) == len(stored.events), 5, what="every event published")
        assert (await bus.runs.get(record.id))[1] == revision  # no outbox write followed the last event
        assert set(counts.values()) == {1}
        assert [kind for kind, _ in await topic_events(bus, topic)] == [e.type for e in stored.events]
        await leader.scheduler.lease.renew()  # carries the cursor
        await standby.scheduler.lease.acquire()  # a standby's attempt reads it
        assert standby.topics.cursor() >= revision and not standby.topics._backlog
    await bus.close()


async def test_a_new_leader_publishes_what_the_old_one_left_and_nothing_twice() -> None:
    clock = ManualClock()
    bus = MemoryBus(clock.time)
    counts = counting_publishes(bus)
    topic = f"t-{uuid.uuid4().hex[:6]}"
    async with AsyncExitStack() as stack:
        old = await stack.enter_async_context(node(bus, clock, "a"))
        new = await stack.enter_async_context(node(bus, clock, "b"))
        record, _ = await old.runs.create_adhoc(delivered_run(topic), None)
        await old.runs.assign(record.id, 1, "w1", [])
        await drive(old, record, "STARTED")
        await until(lambda: len(counts) == 3, 5, what="CREATED, ASSIGNED, STARTED published")
        old.topics.step_down()  # the old leader's outbox stops (it stalls, say) before the next events
        await drive(old, record, "INFO", "COMPLETED")
        await old.scheduler.stop()  # it gives up the lease, its cursor in it
        assert await new.scheduler.lease.acquire()
        await new.scheduler._lead()
        stored = await new.runs.get(record.id)
        await until(lambda: len(counts) == len(stored.events), 5, what="the rest published by the new leader")
        assert set(counts.values()) == {1}
        assert [kind for kind, _ in await topic_events(bus, topic)] == [e.type for e in stored.events]
    await bus.close()
