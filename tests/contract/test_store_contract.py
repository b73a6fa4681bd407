"""One contract for both implementations of the bus port: ``NatsBus`` on a real nats-server and the in-memory
``MemoryBus``. Compare-and-set (no lost update under concurrent writers), fencing (a stale attempt is refused),
idempotency (one key, one run), watches, and the messaging the services and the scheduler rely on."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from gyoza.bus import names
from gyoza.bus.port import INITIAL_VALUES_DONE, Bus, KeyChange, RecordExists, RecordMissing, RequestHandler
from gyoza.bus.records import RecordStore
from gyoza.core import statemachine as sm
from gyoza.errors import Conflict, GyozaError, InvalidRequest, StaleAttempt, Unavailable
from gyoza.schema import AdHocRunIn, RunState, WorkerEventIn
from gyoza.services.clock import utcnow
from gyoza.services.definitions import DefinitionService
from gyoza.services.runs import RunService

RUN = {"image": "busybox", "constraints": {"cpu": 1, "ram_mb": 64}}


class Counter(BaseModel):
    count: int = 0


def bump(record: Counter) -> Counter:
    record.count += 1
    return record


def key() -> str:
    return f"k-{uuid.uuid4().hex[:10]}"


async def test_revisions_and_compare_and_set(bus: Bus) -> None:
    k = key()
    first = await bus.workers.create(k, b"1")
    with pytest.raises(RecordExists):
        await bus.workers.create(k, b"again")
    second = await bus.workers.update(k, b"2", first)
    assert second > first
    assert await bus.workers.get(k) == (b"2", second)
    with pytest.raises(Conflict):
        await bus.workers.update(k, b"stale", first)
    with pytest.raises(Conflict):
        await bus.workers.update(k, b"no revision", 0)
    await bus.workers.delete(k)
    with pytest.raises(RecordMissing):
        await bus.workers.get(k)
    assert await bus.workers.create(k, b"back") > second  # a deleted key can be created again


async def test_pipelined_creates_answer_per_item(bus: Bus) -> None:
    held, deleted, fresh = key(), key(), [key() for _ in range(300)]
    await bus.workers.create(held, b"held")
    await bus.workers.create(deleted, b"gone soon")
    await bus.workers.delete(deleted)
    items = [(held, b"again"), (deleted, b"back"), *((k, k.encode()) for k in fresh)]
    results = await bus.workers.create_many(items)
    assert isinstance(results[0], RecordExists)  # in its slot; the others are written all the same
    revisions = results[1:]
    assert all(isinstance(r, int) for r in revisions) and len(set(revisions)) == len(revisions)
    assert await bus.workers.get(held) == (b"held", await _revision(bus, held))
    assert (await bus.workers.get(deleted))[0] == b"back"  # a deleted key is created again, as by create
    for k, revision in zip(fresh, revisions[1:], strict=True):
        assert await bus.workers.get(k) == (k.encode(), revision)


async def _revision(bus: Bus, k: str) -> int:
    return (await bus.workers.get(k))[1]


async def test_pipelined_durable_publishes_keep_order_and_drop_repeats(bus: Bus) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    subject = names.topic_subject(topic)
    messages = [(subject, f"m{i}".encode(), f"{topic}.{i}") for i in range(200)]
    sequences = await bus.publish_durable_many([*messages, (subject, b"repeat", f"{topic}.0")])
    assert sequences[:-1] == sorted(sequences[:-1]) and sequences[-1] == sequences[0]
    stored = await bus.read_subject(names.TOPICS_STREAM, subject, 0, 500)
    assert stored == [(seq, payload) for seq, (_, payload, _) in zip(sequences, messages, strict=False)]


async def test_a_pipelined_publish_no_stream_takes_is_unavailable(bus: Bus) -> None:
    with pytest.raises(Unavailable):
        await bus.publish_durable_many([("gyoza.nowhere.near", b"x", None)])


async def test_no_update_is_lost_under_concurrent_mutates(bus: Bus) -> None:
    """Two stores stand for two servers (each remembering its last write); 40 concurrent increments all land."""
    k = key()
    first, second = RecordStore(bus.workers, Counter, remember=8), RecordStore(bus.workers, Counter, remember=8)
    await first.create(k, Counter())
    await asyncio.gather(*(store.mutate(k, bump) for _ in range(20) for store in (first, second)))
    assert (await first.get(k))[0].count == 40


async def test_a_watch_replays_then_marks_then_follows(bus: Bus) -> None:
    k, gone = key(), key()
    await bus.definitions.create(k, b"before")
    await bus.definitions.create(gone, b"soon deleted")
    watch = bus.definitions.watch()
    seen: dict[str, bytes | None] = {}
    while (change := await anext(watch)) is not INITIAL_VALUES_DONE:
        assert isinstance(change, KeyChange)
        seen[change.key] = change.value
    assert seen[k] == b"before"
    revision = await bus.definitions.update(k, b"after", (await bus.definitions.get(k))[1])
    await bus.definitions.delete(gone)
    assert await asyncio.wait_for(anext(watch), 5) == KeyChange(k, b"after", revision)
    deleted = await asyncio.wait_for(anext(watch), 5)
    assert deleted is not None and (deleted.key, deleted.value) == (gone, None)
    await watch.aclose()  # type: ignore[attr-defined]


async def replay(watch: Any) -> list[KeyChange]:
    changes = []
    while (change := await asyncio.wait_for(anext(watch), 5)) is not INITIAL_VALUES_DONE:
        assert isinstance(change, KeyChange)
        changes.append(change)
    return changes


async def test_a_full_replay_right_after_a_write_holds_it(bus: Bus) -> None:
    """The replay's end marker comes after what the server sent, never before it has arrived (nats-py's own KV
    watch can mark the end while the replayed messages are still on their way: a full read then comes back empty;
    one try in CI listed no API keys right after creating one)."""
    written: set[str] = set()
    for _ in range(200):
        written.add(k := key())
        await bus.keys.create(k, b"x")
        watch = bus.keys.watch()
        seen = {c.key for c in await replay(watch)}
        await watch.aclose()  # type: ignore[attr-defined]
        assert written <= seen


async def test_a_watch_after_a_revision_replays_only_what_changed_since(bus: Bus) -> None:
    kept, changed, gone, new = key(), key(), key(), key()
    await bus.definitions.create(kept, b"kept")
    changed_at = await bus.definitions.create(changed, b"v1")
    await bus.definitions.create(gone, b"soon deleted")
    after = await bus.definitions.last_revision()
    changed_to = await bus.definitions.update(changed, b"v2", changed_at)
    await bus.definitions.delete(gone)
    created = await bus.definitions.create(new, b"new")
    watch = bus.definitions.watch(after=after)
    mine = [c for c in await replay(watch) if c.key in {kept, changed, gone, new}]
    assert [(c.key, c.value) for c in mine] == [(changed, b"v2"), (gone, None), (new, b"new")]
    assert (mine[0].revision, mine[-1].revision) == (changed_to, created)
    live = await bus.definitions.update(kept, b"live", (await bus.definitions.get(kept))[1])
    assert await asyncio.wait_for(anext(watch), 5) == KeyChange(kept, b"live", live)
    await watch.aclose()


async def test_a_watch_after_the_last_revision_marks_at_once_then_follows(bus: Bus) -> None:
    k = key()
    await bus.definitions.create(k, b"old")
    watch = bus.definitions.watch(after=await bus.definitions.last_revision())
    assert await replay(watch) == []
    revision = await bus.definitions.update(k, b"new", (await bus.definitions.get(k))[1])
    assert await asyncio.wait_for(anext(watch), 5) == KeyChange(k, b"new", revision)
    await watch.aclose()


async def test_a_bucket_origin_is_stable_for_one_incarnation(bus: Bus) -> None:
    origin = await bus.runs.origin()
    await bus.runs.create(key(), b"x")
    assert origin and await bus.runs.origin() == origin


async def test_a_stale_attempt_is_fenced_off(bus: Bus) -> None:
    runs = RunService(bus, DefinitionService(bus))
    record, _ = await runs.create_adhoc(AdHocRunIn.model_validate(RUN), None)
    await runs.assign(record.id, 1, "w1", [])
    with pytest.raises(StaleAttempt):  # not the worker holding the attempt
        await runs.apply_worker_event(record.id, WorkerEventIn(attempt=1, worker_id="w2", type="STARTED"))
    await runs.unassign(record.id, 1, "evicted")
    await runs.change(record.id, lambda r: sm.assign(r, 1, "w2", [], utcnow()))
    with pytest.raises(StaleAttempt):  # w1 lost the attempt to w2 meanwhile
        await runs.apply_worker_event(record.id, WorkerEventIn(attempt=1, worker_id="w1", type="STARTED"))
    with pytest.raises(StaleAttempt):  # an attempt number that is not the current one
        await runs.apply_worker_event(record.id, WorkerEventIn(attempt=2, worker_id="w2", type="STARTED"))
    started = await runs.apply_worker_event(record.id, WorkerEventIn(attempt=1, worker_id="w2", type="STARTED"))
    assert started.state == RunState.RUNNING


async def test_one_idempotency_key_gives_one_run(bus: Bus) -> None:
    runs = RunService(bus, DefinitionService(bus))
    body = AdHocRunIn.model_validate(RUN)
    idempotency_key = f"order-{uuid.uuid4().hex}"
    results = await asyncio.gather(*(runs.create_adhoc(body, idempotency_key) for _ in range(10)))
    assert len({record.id for record, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    again, created = await runs.create_adhoc(body, idempotency_key)
    assert (again.id, created) == (results[0][0].id, False)


async def test_a_refusal_crosses_a_request_as_the_same_error(bus: Bus) -> None:
    subject = f"contract.{uuid.uuid4().hex[:8]}"

    async def handler(subject: str, data: bytes) -> bytes:
        if data == b"bad":
            raise InvalidRequest("invalid heartbeat", details=[{"field": "resources.cpu", "problem": "too small"}])
        return data.upper()

    with pytest.raises(Unavailable):  # nobody serves it yet
        await bus.request(subject + ".x", b"hi", 1)
    served = await bus.serve(subject + ".*", handler)
    try:
        assert await bus.request(subject + ".x", b"hi", 5) == b"HI"
        with pytest.raises(InvalidRequest) as refused:
            await bus.request(subject + ".x", b"bad", 5)
    finally:
        await served.stop()
    error: GyozaError = refused.value
    assert (error.status, error.code, error.message) == (400, "INVALID_REQUEST", "invalid heartbeat")
    assert error.details == [{"field": "resources.cpu", "problem": "too small"}]


async def test_servers_in_one_queue_group_handle_each_request_once(bus: Bus) -> None:
    subject = f"contract.{uuid.uuid4().hex[:8]}"
    handled: list[str] = []

    def server(name: str) -> RequestHandler:
        async def handler(subject: str, data: bytes) -> bytes:
            handled.append(name)
            return name.encode()

        return handler

    served = [await bus.serve(subject, server(name), queue="replicas") for name in ("a", "b")]
    try:
        replies = [await bus.request(subject, b"", 5) for _ in range(20)]
    finally:
        for subscription in served:
            await subscription.stop()
    assert len(handled) == 20 and sorted(replies) == sorted(name.encode() for name in handled)


async def test_durable_publish_drops_a_repeated_message_id(bus: Bus) -> None:
    topic = f"contract-{uuid.uuid4().hex[:8]}"
    subject = names.topic_subject(topic)
    first = await bus.publish_durable(subject, b"one", msg_id=f"{topic}.1")
    assert await bus.publish_durable(subject, b"one again", msg_id=f"{topic}.1") == first
    second = await bus.publish_durable(subject, b"two", msg_id=f"{topic}.2")
    assert await bus.read_subject(names.TOPICS_STREAM, subject, 0, 10) == [(first, b"one"), (second, b"two")]
    assert await bus.read_subject(names.TOPICS_STREAM, subject, first, 10) == [(second, b"two")]


async def test_core_publish_reaches_subscribers(bus: Bus) -> None:
    subject = names.assignments_subject(f"w-{uuid.uuid4().hex[:8]}")
    got: asyncio.Queue[bytes] = asyncio.Queue()
    subscription = await bus.subscribe(subject, got.put)
    try:
        await bus.publish(subject, b"hello")
        assert await asyncio.wait_for(got.get(), 5) == b"hello"
    finally:
        await subscription.stop()


async def test_the_work_queue_consumer_acks_and_redelivers(bus: Bus) -> None:
    """A message whose handler raised comes again; one acked is gone for good (the next consumer sees it no more).
    Run requests of the tests above are in the stream too: they are acked and left out."""
    tag = uuid.uuid4().hex[:8].encode()
    fails, ok, after = tag + b" fails once", tag + b" ok", tag + b" after"
    seen: list[bytes] = []
    done = asyncio.Event()

    async def handler(data: bytes) -> None:
        if not data.startswith(tag):
            return
        seen.append(data)
        if data == fails and seen.count(fails) == 1:
            raise Unavailable("not now")
        if ok in seen and seen.count(fails) == 2:
            done.set()

    await bus.publish_durable(names.RUN_REQUESTED_SUBJECT, fails)
    await bus.publish_durable(names.RUN_REQUESTED_SUBJECT, ok)
    consumer = await bus.consume(names.RUN_REQUESTS_STREAM, names.SCHEDULER_CONSUMER, handler)
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await consumer.stop()
    assert sorted(seen) == [fails, fails, ok]
    seen.clear()
    arrived = asyncio.Event()

    async def record(data: bytes) -> None:
        await handler(data)
        if data == after:
            arrived.set()

    await bus.publish_durable(names.RUN_REQUESTED_SUBJECT, after)
    consumer = await bus.consume(names.RUN_REQUESTS_STREAM, names.SCHEDULER_CONSUMER, record)
    try:
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await consumer.stop()
    assert seen == [after]


async def test_last_revision_is_the_newest_write_over_every_key(bus: Bus) -> None:
    before = await bus.workers.last_revision()
    first = await bus.workers.create(key(), b"1")
    second = await bus.workers.create(key(), b"2")
    assert before < first < second == await bus.workers.last_revision()


async def test_a_delete_with_a_revision_is_compare_and_set(bus: Bus) -> None:
    k = key()
    first = await bus.workers.create(k, b"1")
    second = await bus.workers.update(k, b"2", first)
    with pytest.raises(Conflict):
        await bus.workers.delete(k, last=first)
    assert await bus.workers.get(k) == (b"2", second)  # a refused delete changes nothing
    await bus.workers.delete(k, last=second)
    with pytest.raises(RecordMissing):
        await bus.workers.get(k)


async def test_objects_and_subject_messages_can_be_removed(bus: Bus) -> None:
    run_id = uuid.uuid4().hex
    await bus.write_object(f"{run_id}/1", b"log of attempt 1")
    await bus.delete_object(f"{run_id}/1")
    await bus.delete_object(f"{run_id}/1")  # absent is fine
    assert await bus.read_object(f"{run_id}/1") is None
    other = uuid.uuid4().hex
    for subject in (names.log_subject(run_id, 1), names.log_subject(run_id, 2), names.log_subject(other, 1)):
        await bus.publish_durable(subject, b"a line")
    await bus.purge_subject(names.LOGS_STREAM, names.run_log_subjects(run_id))
    assert await bus.read_subject(names.LOGS_STREAM, names.log_subject(run_id, 1), 0, 10) == []
    assert await bus.read_subject(names.LOGS_STREAM, names.log_subject(run_id, 2), 0, 10) == []
    assert [data for _, data in await bus.read_subject(names.LOGS_STREAM, names.log_subject(other, 1), 0, 10)] == [
        b"a line"
    ]
