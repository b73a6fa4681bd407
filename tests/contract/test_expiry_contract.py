"""The store's own expiry of a write (``Bucket.update(..., ttl_s=)``, issue 12.5), for ``NatsBus`` and
``MemoryBus`` alike: the key is gone when the TTL is over, every watcher hears of it as ``expired``, a write without
TTL before then keeps the key, and an expired key can be created again (an idempotency key sent again after its run
expired)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from gyoza.bus.port import INITIAL_VALUES_DONE, Bus, KeyChange, RecordMissing
from gyoza.errors import Conflict


def key() -> str:
    return f"e-{uuid.uuid4().hex[:10]}"


async def next_change(watch: Any, keys: set[str]) -> KeyChange:
    """The next change of one of ``keys`` (the bucket is shared with the other tests' keys)."""
    while True:
        change = await asyncio.wait_for(anext(watch), 10)
        if isinstance(change, KeyChange) and change.key in keys:
            return change


async def followed(bus: Bus) -> Any:
    watch = bus.runs.watch(after=await bus.runs.last_revision())
    assert await asyncio.wait_for(anext(watch), 5) is INITIAL_VALUES_DONE
    return watch


async def test_a_write_with_a_ttl_expires_and_every_watcher_hears_it(bus: Bus) -> None:
    k = key()
    watch = await followed(bus)
    written = await bus.runs.update(k, b"finished", await bus.runs.create(k, b"running"), ttl_s=1)
    # A bucket keeps one write per key, so a watcher that falls behind hears only the latest: "running" may be gone.
    while (change := await next_change(watch, {k})).value == b"running":
        pass
    assert change == KeyChange(k, b"finished", written)
    assert await bus.runs.get(k) == (b"finished", written)  # kept until the TTL is over
    gone = await next_change(watch, {k})
    assert (gone.key, gone.value, gone.expired) == (k, None, True)
    assert gone.revision > written
    with pytest.raises(RecordMissing):
        await bus.runs.get(k)
    assert await bus.runs.create(k, b"again") > gone.revision
    await watch.aclose()


async def test_a_write_without_ttl_before_the_expiry_keeps_the_key(bus: Bus) -> None:
    retried, probe = key(), key()
    watch = await followed(bus)
    finished = await bus.runs.update(retried, b"failed", await bus.runs.create(retried, b"running"), ttl_s=1)
    await bus.runs.update(probe, b"finished", await bus.runs.create(probe, b"running"), ttl_s=1)
    again = await bus.runs.update(retried, b"retried", finished)  # a retry: unfinished again, kept
    # The probe, written after the first write of ``retried`` with the same TTL, expires after it would have.
    while (change := await next_change(watch, {retried, probe})).key != probe or change.value is not None:
        assert change.value is not None, f"{change.key} deleted"
    assert change.expired
    assert await bus.runs.get(retried) == (b"retried", again)
    await watch.aclose()


async def test_a_client_delete_is_not_an_expiry(bus: Bus) -> None:
    k = key()
    watch = await followed(bus)
    await bus.runs.delete(k, last=await bus.runs.create(k, b"x"))
    assert (await next_change(watch, {k})).value == b"x"
    deleted = await next_change(watch, {k})
    assert (deleted.value, deleted.expired) == (None, False)
    await watch.aclose()


async def test_a_stale_write_with_a_ttl_is_refused(bus: Bus) -> None:
    k = key()
    first = await bus.runs.create(k, b"1")
    await bus.runs.update(k, b"2", first)
    with pytest.raises(Conflict):
        await bus.runs.update(k, b"stale", first, ttl_s=60)
    with pytest.raises(Conflict):
        await bus.runs.update(key(), b"never created", 5, ttl_s=60)
