"""The ``Bucket`` port over a JetStream KV bucket (nats-py), with NATS errors translated into Gyoza's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from gyoza.bus.pipeline import AckPipeline
from gyoza.bus.port import INITIAL_VALUES_DONE, KeyChange, RecordExists, RecordMissing
from gyoza.bus.translate import translate_errors
from gyoza.errors import Conflict

# What JetStream answers a write whose expected last sequence is not the key's (nats-py's own test in kv.py).
_WRONG_LAST_SEQUENCE = (10071, 10164)


class NatsBucket:
    def __init__(self, kv: KeyValue, js: JetStreamContext, name: str, pipeline: AckPipeline, timeout_s: float) -> None:
        self._kv = kv
        self._js = js
        self._stream = f"KV_{name}"
        self._subject_prefix = f"$KV.{name}."  # the documented subject of each key (ADR-8)
        self._pipeline = pipeline
        self._timeout_s = timeout_s

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
                return await self._create_over_marker(key, value)

    async def _create_over_marker(self, key: str, value: bytes) -> int:
        """``kv.create`` writes over a client's delete but not over the marker the server leaves when a key's TTL is
        over (an empty message nats-py reads as a value of None): that is a missing key too."""
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # the marker itself expired meanwhile
            return int(await self._kv.create(key, value))
        if entry.value is not None:
            raise RecordExists(key)
        try:
            return await self.update(key, value, int(entry.revision or 0))
        except Conflict:
            raise RecordExists(key) from None

    async def create_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | RecordExists]:
        """Pipelined creates: a write expecting "no message yet" on each key's subject, as ``kv.create`` sends."""
        expect_none = {"Nats-Expected-Last-Subject-Sequence": "0"}
        acks = await self._pipeline.publish_all(
            [(self._subject_prefix + key, value, expect_none) for key, value in items], self._timeout_s
        )
        results: list[int | RecordExists] = []
        for (key, value), ack in zip(items, acks, strict=True):
            if isinstance(ack, int):
                results.append(ack)
            elif ack.err_code in _WRONG_LAST_SEQUENCE:
                results.append(await self._create_after_refusal(key, value))
            else:
                raise ack
        return results

    async def _create_after_refusal(self, key: str, value: bytes) -> int | RecordExists:
        """The key has a message: a live value (exists), or a delete marker, which ``kv.create`` writes over."""
        try:
            return await self.create(key, value)
        except RecordExists as exists:
            return exists

    async def update(self, key: str, value: bytes, last: int, ttl_s: int | None = None) -> int:
        if last <= 0:  # nats-py reads a falsy ``last`` as "no condition"; a real revision is always >= 1
            raise Conflict(f"{key}: no revision {last}")
        if ttl_s is not None:
            return await self._update_expiring(key, value, last, ttl_s)
        with translate_errors():
            try:
                return int(await self._kv.update(key, value, last=last))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise Conflict(f"{key} changed concurrently") from None

    async def _update_expiring(self, key: str, value: bytes, last: int, ttl_s: int) -> int:
        """``kv.update`` with a ``Nats-TTL``: the same conditional publish, which nats-py's KV offers only for a
        create."""
        expect = {"Nats-Expected-Last-Subject-Sequence": str(last)}
        with translate_errors():
            try:
                ack = await self._js.publish(self._subject_prefix + key, value, headers=expect, msg_ttl=max(1, ttl_s))
            except nats.js.errors.APIError as refused:
                if refused.err_code in _WRONG_LAST_SEQUENCE:
                    raise Conflict(f"{key} changed concurrently") from None
                raise
        return int(ack.seq)

    async def delete(self, key: str, last: int | None = None) -> None:
        if last is not None and last <= 0:  # as in ``update``: nats-py reads a falsy ``last`` as no condition
            raise Conflict(f"{key}: no revision {last}")
        with translate_errors(), contextlib.suppress(nats.js.errors.KeyNotFoundError):
            try:
                await self._kv.delete(key, last=last)
            except nats.js.errors.BadRequestError as refused:  # a delete's refusal comes as a bare 400
                if refused.err_code not in _WRONG_LAST_SEQUENCE:
                    raise
                raise Conflict(f"{key} changed concurrently") from None

    async def last_revision(self) -> int:
        with translate_errors():
            status = await self._kv.status()
        return int(status.stream_info.state.last_seq or 0)

    async def origin(self) -> str:
        with translate_errors():
            status = await self._kv.status()
        created = status.stream_info.created
        return created.isoformat() if created is not None else ""

    async def watch(self, after: int = 0) -> AsyncIterator[KeyChange | None]:
        """Every key's latest write (``after`` 0), or every message of the bucket's stream from revision ``after``
        + 1 on: with one message per key kept, that is each key's latest write since then, delete markers included.

        This is nats-py's ordered consumer, not its ``KeyValue.watch``: that one starts only at the first or last
        messages, and it ends the replay when its consumer info shows nothing pending and its callback has seen
        nothing yet, which is also true while the replayed messages are on their way (a full read then came back
        empty). Here the server's count of what it has sent decides."""
        changes: asyncio.Queue[KeyChange | None] = asyncio.Queue()
        replaying = True

        async def on_message(msg: Msg) -> None:
            nonlocal replaying
            changes.put_nowait(_key_change(self._subject_prefix, msg))
            if replaying and msg.metadata.num_pending == 0:
                replaying = False
                changes.put_nowait(INITIAL_VALUES_DONE)

        if after <= 0:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
        with translate_errors():
            subscription = await self._js.subscribe(
                self._subject_prefix + ">", stream=self._stream, cb=on_message, ordered_consumer=True, config=config
            )
        try:
            with translate_errors():
                info = await subscription.consumer_info()
            # Nothing to replay only if the server has sent nothing either: what it sent may still wait for the
            # callback, and its last message then ends the replay.
            sent = info.delivered.consumer_seq if info.delivered else 0
            if info.num_pending == 0 and not sent and replaying:
                replaying = False
                changes.put_nowait(INITIAL_VALUES_DONE)
            while True:
                yield await changes.get()
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


def _key_change(prefix: str, msg: Msg) -> KeyChange:
    """A stream message of a KV bucket as a change: a client's delete/purge (``KV-Operation``) or a server's
    marker (``Nats-Marker-Reason``, nats-server 2.11+) is a deletion."""
    headers = msg.headers or {}
    expired = headers.get("KV-Operation") == "PURGE" or headers.get("Nats-Marker-Reason") in ("MaxAge", "Purge")
    deleted = expired or headers.get("KV-Operation") == "DEL" or "Nats-Marker-Reason" in headers
    key, revision = msg.subject[len(prefix) :], int(msg.metadata.sequence.stream)
    return KeyChange(key, None if deleted else msg.data, revision, expired)
