"""Typed records in a JetStream KV bucket, changed only by compare-and-set.

``mutate(key, change)`` is the one way to change a record: read (value, revision), apply a pure ``change``, write
with ``last=revision``; when another writer got there first, read again and re-apply. No writer ever loses another's
update (SPEC §3, invariant 2). NATS errors are translated here into Gyoza's, so no layer above imports ``nats``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import BaseModel

from gyoza.errors import Conflict, Unavailable

M = TypeVar("M", bound=BaseModel)

# Each retry re-reads the record, so this only bounds a pathological livelock, never a normal burst.
MAX_CAS_ATTEMPTS = 1000


class RecordMissing(KeyError):
    """No record under this key (never written, or deleted)."""


class RecordExists(Exception):
    """``create`` found a record already under this key."""


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """NATS timeouts and lost connections become ``Unavailable`` (503): the caller was told nothing durable."""
    try:
        yield
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
        raise Unavailable(f"NATS JetStream did not answer: {type(exc).__name__}") from exc
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
        raise Unavailable("not connected to NATS") from exc


class RecordStore(Generic[M]):
    """Records of one pydantic model in one KV bucket."""

    def __init__(self, kv: KeyValue, model: type[M]) -> None:
        self.kv = kv
        self.model = model

    async def get_raw(self, key: str) -> tuple[bytes, int]:
        with translate_errors():
            try:
                entry = await self.kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                raise RecordMissing(key) from None
        if entry.value is None:
            raise RecordMissing(key)
        return entry.value, int(entry.revision or 0)

    async def get(self, key: str) -> tuple[M, int]:
        raw, revision = await self.get_raw(key)
        return self.model.model_validate_json(raw), revision

    async def create(self, key: str, record: M) -> int:
        """Store a new record; ``RecordExists`` when the key holds one already."""
        with translate_errors():
            try:
                return int(await self.kv.create(key, record.model_dump_json().encode()))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise RecordExists(key) from None

    async def write(self, key: str, record: M, revision: int) -> int:
        """One compare-and-set write; ``Conflict`` when the revision is no longer the latest."""
        with translate_errors():
            try:
                return int(await self.kv.update(key, record.model_dump_json().encode(), last=revision))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise Conflict(f"{key} changed concurrently") from None

    async def mutate(self, key: str, change: Callable[[M], M | None]) -> tuple[M, int, bool]:
        """Apply ``change`` to the latest record by CAS, retrying on conflict.

        ``change`` gets a fresh copy each time and returns the new record, or None for "nothing to write".
        Exceptions it raises propagate and nothing is written. Returns (record, revision, changed).
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            record, revision = await self.get(key)
            updated = change(record)
            if updated is None:
                return record, revision, False
            try:
                return updated, await self.write(key, updated, revision), True
            except Conflict:
                continue
        raise Unavailable(f"{key} is changing too fast to update")

    async def values(self) -> AsyncIterator[M]:
        """The latest record of every key (a full read: for small buckets or start-up only)."""
        async for change in watch_bucket(self.kv):
            if change is INITIAL_VALUES_DONE:
                return
            if change.value is not None:
                yield self.model.model_validate_json(change.value)

    async def delete(self, key: str) -> None:
        with translate_errors(), contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await self.kv.delete(key)


@dataclass(frozen=True)
class KeyChange:
    """One entry of a KV watch: ``value`` is None when the key was deleted or purged."""

    key: str
    value: bytes | None
    revision: int


INITIAL_VALUES_DONE = None


async def watch_bucket(kv: KeyValue) -> AsyncIterator[KeyChange | None]:
    """Every key's latest value, then ``INITIAL_VALUES_DONE`` (None), then each change as it happens."""
    with translate_errors():
        watcher = await kv.watchall()
    try:
        async for entry in watcher:
            if entry is None:
                yield INITIAL_VALUES_DONE
                continue
            deleted = entry.operation in ("DEL", "PURGE")
            yield KeyChange(entry.key, None if deleted else entry.value, int(entry.revision or 0))
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
