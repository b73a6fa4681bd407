"""Typed records in a bucket, changed only by compare-and-set.

``mutate(key, change)`` is the one way to change a record: read (value, revision), apply a pure ``change``, write
with ``last=revision``; when another writer got there first, read again and re-apply. No writer ever loses another's
update (SPEC §3, invariant 2). Written once over the ``Bucket`` port, so the NATS bucket and the in-memory twin
behave alike.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Generic, TypeVar

from pydantic import BaseModel

from gyoza.bus.port import INITIAL_VALUES_DONE, Bucket, KeyChange, RecordExists, RecordMissing
from gyoza.errors import Conflict, Unavailable

__all__ = ["INITIAL_VALUES_DONE", "KeyChange", "RecordExists", "RecordMissing", "RecordStore"]

M = TypeVar("M", bound=BaseModel)

# Each retry re-reads the record, so this only bounds a pathological livelock, never a normal burst.
MAX_CAS_ATTEMPTS = 1000
# Records this process is writing, kept until a watch of this process hands their bytes back (see ``decode``).
# Entries live for a round trip; the bound only matters for a process that writes without watching.
SENT_LIMIT = 8192


class RecordStore(Generic[M]):
    """Records of one pydantic model in one bucket.

    With ``remember=N`` the store keeps the value and revision it last read or wrote for up to N keys, and
    ``mutate`` first tries its write against that revision instead of reading the record again. The write is still a
    compare-and-set: it only lands if that revision is still the latest, so the change was computed on the latest
    record. When it is not (another writer, another server), or when the change refuses or declines on the
    remembered version, ``mutate`` reads the record and decides again, as without the memory.

    ``decode`` turns a value a watch delivers into a record. For a value this process wrote itself it returns the
    very record it wrote instead of parsing the bytes again (every process follows the runs bucket, so each write
    came back to its writer as a full parse). The records are the same only if the bytes are, and nobody changes a
    record once written: a change is always made on a fresh decode, inside ``mutate``.

    ``ttl_of`` gives each written version its TTL in seconds (None: kept until written again), so that the store
    removes, say, a finished run when its retention is over (``gyoza.core.retention``).
    """

    def __init__(
        self, bucket: Bucket, model: type[M], remember: int = 0, ttl_of: Callable[[M], int | None] | None = None
    ) -> None:
        self.bucket = bucket
        self.model = model
        self._ttl_of = ttl_of
        self._remember = remember
        self._recent: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._sent: OrderedDict[str, tuple[bytes, M]] = OrderedDict()

    def _note(self, key: str, raw: bytes, revision: int) -> None:
        if self._remember:
            self._recent[key] = (raw, revision)
            self._recent.move_to_end(key)
            if len(self._recent) > self._remember:
                self._recent.popitem(last=False)

    def _sending(self, key: str, raw: bytes, record: M) -> None:
        self._sent[key] = (raw, record)
        self._sent.move_to_end(key)
        if len(self._sent) > SENT_LIMIT:
            self._sent.popitem(last=False)

    def decode(self, key: str, raw: bytes) -> M:
        """The record a watched value holds: the one this process wrote when it wrote exactly these bytes."""
        sent = self._sent.get(key)
        if sent is not None and sent[0] == raw:
            del self._sent[key]
            return sent[1]
        return self.model.model_validate_json(raw)

    async def get_raw(self, key: str) -> tuple[bytes, int]:
        raw, revision = await self.bucket.get(key)
        self._note(key, raw, revision)
        return raw, revision

    async def get(self, key: str) -> tuple[M, int]:
        raw, revision = await self.get_raw(key)
        return self.model.model_validate_json(raw), revision

    async def create(self, key: str, record: M) -> int:
        """Store a new record; ``RecordExists`` when the key holds one already."""
        raw = record.model_dump_json().encode()
        self._sending(key, raw, record)
        try:
            revision = await self.bucket.create(key, raw)
        except BaseException:
            self._sent.pop(key, None)
            raise
        self._note(key, raw, revision)
        return revision

    async def create_many(self, records: Sequence[tuple[str, M]]) -> list[int | RecordExists]:
        """``create`` of every (key, record), pipelined: per record its revision, or the ``RecordExists`` it met."""
        raws = [(key, record.model_dump_json().encode()) for key, record in records]
        for (key, raw), (_, record) in zip(raws, records, strict=True):
            self._sending(key, raw, record)
        try:
            results = await self.bucket.create_many(raws)
        except BaseException:
            for key, _ in raws:
                self._sent.pop(key, None)
            raise
        for (key, raw), result in zip(raws, results, strict=True):
            if isinstance(result, int):
                self._note(key, raw, result)
            else:
                self._sent.pop(key, None)
        return results

    async def write(self, key: str, record: M, revision: int) -> int:
        """One compare-and-set write; ``Conflict`` when the revision is no longer the latest."""
        raw = record.model_dump_json().encode()
        self._sending(key, raw, record)
        try:
            ttl_s = None if self._ttl_of is None else self._ttl_of(record)
            written = await self.bucket.update(key, raw, revision, ttl_s)
        except BaseException:
            self._recent.pop(key, None)
            self._sent.pop(key, None)
            raise
        self._note(key, raw, written)
        return written

    async def mutate(
        self, key: str, change: Callable[[M], M | None], known: tuple[bytes, int] | None = None
    ) -> tuple[M, int, bool]:
        """Apply ``change`` to the latest record by CAS, retrying on conflict.

        ``change`` gets a fresh copy each time and returns the new record, or None for "nothing to write".
        Exceptions it raises propagate and nothing is written. Returns (record, revision, changed). ``known`` is a
        version (value, revision) the caller holds: tried first like a remembered one, unless the memory is newer.
        """
        remembered = self._recent.get(key)
        if known is not None and (remembered is None or remembered[1] < known[1]):
            remembered = known
        if remembered is not None:
            raw, revision = remembered
            try:
                updated = change(self.model.model_validate_json(raw))
            except Exception:  # decided on a version that may be old: decide again on the latest below
                updated = None
            if updated is not None:
                with contextlib.suppress(Conflict):  # not the latest any more: read it and retry below
                    return updated, await self.write(key, updated, revision), True
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
        async for change in self.bucket.watch():
            if change is INITIAL_VALUES_DONE:
                return
            if change.value is not None:
                yield self.model.model_validate_json(change.value)

    async def delete(self, key: str, last: int | None = None) -> None:
        """Remove the record (absent is fine); with ``last``, only if that is its latest revision (else
        ``Conflict``)."""
        self._recent.pop(key, None)
        await self.bucket.delete(key, last)
