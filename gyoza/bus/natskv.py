"""The ``Bucket`` port over a JetStream KV bucket (nats-py), with NATS errors translated into Gyoza's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats.js.errors
from nats.js.kv import KeyValue

from gyoza.bus.port import INITIAL_VALUES_DONE, KeyChange, RecordExists, RecordMissing
from gyoza.bus.translate import translate_errors
from gyoza.errors import Conflict


class NatsBucket:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, key: str) -> tuple[bytes, int]:
        with translate_errors():
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                raise RecordMissing(key) from None
        if entry.value is None:
            raise RecordMissing(key)
        return entry.value, int(entry.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        with translate_errors():
            try:
                return int(await self._kv.create(key, value))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise RecordExists(key) from None

    async def update(self, key: str, value: bytes, last: int) -> int:
        if last <= 0:  # nats-py reads a falsy ``last`` as "no condition"; a real revision is always >= 1
            raise Conflict(f"{key}: no revision {last}")
        with translate_errors():
            try:
                return int(await self._kv.update(key, value, last=last))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise Conflict(f"{key} changed concurrently") from None

    async def delete(self, key: str) -> None:
        with translate_errors(), contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await self._kv.delete(key)

    async def last_revision(self) -> int:
        with translate_errors():
            status = await self._kv.status()
        return int(status.stream_info.state.last_seq or 0)

    async def watch(self) -> AsyncIterator[KeyChange | None]:
        with translate_errors():
            watcher = await self._kv.watchall()
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
