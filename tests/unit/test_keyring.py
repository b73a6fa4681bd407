"""The keys service over the in-memory bus: the ring every request checks follows the bucket, never goes back to an
older version of a key, and refuses every scoped key while its watch is down."""

from __future__ import annotations

import json

from gyoza.bus.memory import MemoryBus
from gyoza.schema import ApiKeyIn, Role
from gyoza.services.keys import KeyRing, KeyService
from gyoza.supervision import TaskFailures
from tests.waiting import until


def key(role: str, **scope: object) -> ApiKeyIn:
    return ApiKeyIn.model_validate_json(json.dumps({"name": "k", "role": role, **scope}))


async def test_a_created_key_is_known_at_once_and_a_revoked_one_refused_at_once() -> None:
    service = KeyService(MemoryBus(), KeyRing())
    created = await service.create(key("worker", worker_id="w1"))
    principal = service.ring.principal(created.token.encode())
    assert principal is not None and (principal.role, principal.scope.worker_id) == (Role.WORKER, "w1")
    assert service.ring.principal(created.token[:-1].encode() + b"x") is None  # wrong secret
    assert service.ring.principal(b"gyz_" + created.id.encode() + b"_short") is None
    await service.revoke(created.id)
    assert service.ring.principal(created.token.encode()) is None
    assert (await service.get(created.id)).revoked_at is not None


async def test_another_process_learns_keys_and_revocations_through_its_watch() -> None:
    bus = MemoryBus()
    writer, reader = KeyService(bus, KeyRing()), KeyService(bus, KeyRing())
    before = await writer.create(key("read"))
    await reader.follow(TaskFailures())
    try:
        assert reader.ring.principal(before.token.encode()) is not None  # replayed before serving
        await writer.revoke(before.id)
        after = await writer.create(key("submit", definitions=["alpha"]))
        # The watch delivers in order: once the newer key is in, so is the revocation before it.
        await until(lambda: reader.ring.principal(after.token.encode()), what="the reader learns the new key")
        assert reader.ring.principal(before.token.encode()) is None
    finally:
        await reader.stop()
    assert reader.ring.principal(after.token.encode()) is None, "no watch: every scoped key is refused"


async def test_the_ring_never_goes_back_to_an_older_version() -> None:
    service = KeyService(MemoryBus(), KeyRing())
    created = await service.create(key("read"))
    record, first = await service.store.get(created.id)
    await service.revoke(created.id)
    service.ring.apply(record, first)  # the watch delivering the creation late
    assert service.ring.principal(created.token.encode()) is None
