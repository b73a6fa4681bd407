"""RecordStore's remembered revisions (a write tried without reading first) never lose or misjudge an update.

Two stores on one bucket stand for two servers: each remembers what it last wrote, so after the other one writes,
its memory is stale. Every change must still be decided on the latest record, as compare-and-set promises.
"""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client
from pydantic import BaseModel

from gyoza.bus.natskv import NatsBucket
from gyoza.bus.pipeline import AckPipeline
from gyoza.bus.records import RecordStore
from gyoza.errors import Conflict


class Counter(BaseModel):
    count: int = 0


def bump(record: Counter) -> Counter:
    record.count += 1
    return record


async def two_stores(nc: Client) -> tuple[RecordStore[Counter], RecordStore[Counter], str]:
    name = f"memory_{uuid.uuid4().hex[:8]}"
    kv = NatsBucket(
        await nc.jetstream().create_key_value(bucket=name, history=1), nc.jetstream(), name, AckPipeline(nc), 5.0
    )
    key = "k"
    first = RecordStore(kv, Counter, remember=16)
    await first.create(key, Counter())
    return first, RecordStore(kv, Counter, remember=16), key


async def test_a_stale_memory_loses_no_update(nc: Client) -> None:
    first, second, key = await two_stores(nc)
    await second.mutate(key, bump)  # the first store's memory (count 0) is now stale
    record, revision, changed = await first.mutate(key, bump)
    assert (record.count, changed) == (2, True)
    assert (await second.get(key)) == (Counter(count=2), revision)


async def test_a_change_declined_on_a_stale_memory_is_decided_on_the_latest(nc: Client) -> None:
    first, second, key = await two_stores(nc)
    await second.mutate(key, lambda r: Counter(count=5))

    def set_once(record: Counter) -> Counter | None:
        return None if record.count else Counter(count=1)

    record, _, changed = await first.mutate(key, set_once)
    assert (record.count, changed) == (5, False)


async def test_a_change_refused_on_a_stale_memory_is_decided_on_the_latest(nc: Client) -> None:
    first, second, key = await two_stores(nc)
    await second.mutate(key, lambda r: Counter(count=5))

    def only_after_five(record: Counter) -> Counter:
        if record.count < 5:
            raise Conflict("not yet")
        return Counter(count=record.count + 1)

    record, _, changed = await first.mutate(key, only_after_five)
    assert (record.count, changed) == (6, True)


async def test_a_refusal_on_the_latest_record_still_reaches_the_caller(nc: Client) -> None:
    first, _, key = await two_stores(nc)

    def refuse(record: Counter) -> Counter:
        raise Conflict("never")

    with pytest.raises(Conflict):
        await first.mutate(key, refuse)
