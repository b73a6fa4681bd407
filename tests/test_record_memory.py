"""RecordStore's remembered revisions (a write tried without reading first) never lose or misjudge an update.

Two stores on one bucket stand for two servers: each remembers what it last wrote, so after the other one writes,
its memory is stale. Every change must still be decided on the latest record, as compare-and-set promises.
"""

from __future__ import annotations

import uuid

import pytest
from nats.js import JetStreamContext
from pydantic import BaseModel

from gyoza.bus.natskv import NatsBucket
from gyoza.bus.records import RecordStore
from gyoza.errors import Conflict


class Counter(BaseModel):
    count: int = 0


def bump(record: Counter) -> Counter:
    record.count += 1
    return record


async def two_stores(js: JetStreamContext) -> tuple[RecordStore[Counter], RecordStore[Counter], str]:
    kv = NatsBucket(await js.create_key_value(bucket=f"memory_{uuid.uuid4().hex[:8]}", history=1))
    key = "k"
    first = RecordStore(kv, Counter, remember=16)
    await first.create(key, Counter())
    return first, RecordStore(kv, Counter, remember=16), key


async def test_a_stale_memory_loses_no_update(js: JetStreamContext) -> None:
    first, second, key = await two_stores(js)
    await second.mutate(key, bump)  # the first store's memory (count 0) is now stale
    record, revision, changed = await first.mutate(key, bump)
    assert (record.count, changed) == (2, True)
    assert (await second.get(key)) == (Counter(count=2), revision)


async def test_a_change_declined_on_a_stale_memory_is_decided_on_the_latest(js: JetStreamContext) -> None:
    first, second, key = await two_stores(js)
    await second.mutate(key, lambda r: Counter(count=5))

    def set_once(record: Counter) -> Counter | None:
        return None if record.count else Counter(count=1)

    record, _, changed = await first.mutate(key, set_once)
    assert (record.count, changed) == (5, False)


async def test_a_change_refused_on_a_stale_memory_is_decided_on_the_latest(js: JetStreamContext) -> None:
    first, second, key = await two_stores(js)
    await second.mutate(key, lambda r: Counter(count=5))

    def only_after_five(record: Counter) -> Counter:
        if record.count < 5:
            raise Conflict("not yet")
        return Counter(count=record.count + 1)

    record, _, changed = await first.mutate(key, only_after_five)
    assert (record.count, changed) == (6, True)


async def test_a_refusal_on_the_latest_record_still_reaches_the_caller(js: JetStreamContext) -> None:
    first, _, key = await two_stores(js)

    def refuse(record: Counter) -> Counter:
        raise Conflict("never")

    with pytest.raises(Conflict):
        await first.mutate(key, refuse)
