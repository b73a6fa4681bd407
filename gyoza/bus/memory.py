"""The in-memory twin of ``NatsBus``: the same port with the same semantics, no server, one process.

For fast tests (``tests/unit``) and tools. What it keeps from JetStream, read from the same ``broker/`` files:
a revision per write from one sequence per bucket, compare-and-set conflicts raising the same errors, the buckets'
max age (idempotency keys expire), watches that replay every key's latest value, then ``INITIAL_VALUES_DONE``, then
each change; streams chosen by subject with message-id de-duplication within their duplicate window; work-queue
consumers that remove a message on ack and deliver it again after a nak; request/reply that raises a handler's
``GyozaError`` on the requester's side. Time comes from ``clock`` (epoch seconds), so a test can move it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gyoza.bus import names
from gyoza.bus.broker import load_consumers, load_topology
from gyoza.bus.port import (
    INITIAL_VALUES_DONE,
    KeyChange,
    MessageHandler,
    NatsState,
    RecordExists,
    RecordMissing,
    RequestHandler,
)
from gyoza.errors import Conflict, GyozaError, Unavailable, error_from_body
from gyoza.supervision import stop_task, stop_tasks

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_NS = 1e9
NAK_DELAY_S = 1.0


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    wanted, given = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(given) > i
        if i >= len(given) or (token != "*" and token != given[i]):
            return False
    return len(wanted) == len(given)


async def _round_trip() -> None:
    """Yield to the event loop as a call to NATS would, so concurrent writers interleave (and conflict) here too."""
    await asyncio.sleep(0)


@dataclass
class _Entry:
    value: bytes | None
    revision: int
    written_at: float
    expires_at: float | None = None  # a write's TTL (``update(..., ttl_s=)``), on the bucket's clock


class MemoryBucket:
    """A KV bucket: per key the latest entry, revisions from one sequence, entries older than ``max_age_s`` gone."""

    def __init__(self, name: str, clock: Clock, max_age_s: float = 0.0) -> None:
        self.name = name
        self._clock = clock
        self._max_age_s = max_age_s
        self._entries: dict[str, _Entry] = {}
        self._sequence = 0
        self._watchers: set[asyncio.Queue[KeyChange]] = set()
        self._origin = uuid.uuid4().hex

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and self._max_age_s and self._clock() - entry.written_at >= self._max_age_s:
            del self._entries[key]
            return None
        if entry is not None and entry.expires_at is not None and self._clock() >= entry.expires_at:
            self._put(key, None, expired=True)  # JetStream's delete marker for an expired message
            return None
        return entry

    def _put(self, key: str, value: bytes | None, ttl_s: int | None = None, expired: bool = False) -> int:
        self._sequence += 1
        now = self._clock()
        self._entries[key] = _Entry(value, self._sequence, now, None if ttl_s is None else now + ttl_s)
        if ttl_s is not None:  # watchers hear of the expiry when it is due, as from the server's marker
            asyncio.get_running_loop().call_later(ttl_s, self._expire_when_due, key, self._sequence)
        change = KeyChange(key, value, self._sequence, expired)
        for queue in self._watchers:
            queue.put_nowait(change)
        return self._sequence

    def _expire_when_due(self, key: str, revision: int) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.revision != revision or entry.expires_at is None:
            return  # written again since: that write decides
        if self._live(key) is not None:  # not due yet on the bucket's clock: look again when it should be
            delay = max(entry.expires_at - self._clock(), 0.01)
            asyncio.get_running_loop().call_later(delay, self._expire_when_due, key, revision)

    async def get(self, key: str) -> tuple[bytes, int]:
        await _round_trip()
        entry = self._live(key)
        if entry is None or entry.value is None:
            raise RecordMissing(key)
        return entry.value, entry.revision

    async def create(self, key: str, value: bytes) -> int:
        await _round_trip()
        entry = self._live(key)
        if entry is not None and entry.value is not None:
            raise RecordExists(key)
        return self._put(key, value)

    async def create_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | RecordExists]:
        await _round_trip()
        results: list[int | RecordExists] = []
        for key, value in items:
            entry = self._live(key)
            exists = entry is not None and entry.value is not None
            results.append(RecordExists(key) if exists else self._put(key, value))
        return results

    async def update(self, key: str, value: bytes, last: int, ttl_s: int | None = None) -> int:
        await _round_trip()
        entry = self._live(key)
        if last <= 0 or entry is None or entry.revision != last:
            raise Conflict(f"{key} changed concurrently")
        return self._put(key, value, None if ttl_s is None else max(1, ttl_s))

    async def delete(self, key: str, last: int | None = None) -> None:
        await _round_trip()
        entry = self._live(key)
        if last is not None and (entry is None or entry.revision != last):
            raise Conflict(f"{key} changed concurrently")
        if entry is not None:
            self._put(key, None)

    async def last_revision(self) -> int:
        await _round_trip()
        return self._sequence

    async def origin(self) -> str:
        await _round_trip()
        return self._origin

    async def watch(self, after: int = 0) -> AsyncIterator[KeyChange | None]:
        queue: asyncio.Queue[KeyChange] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            replay = [(key, self._live(key)) for key in list(self._entries)]
            # From the start, deleted keys are left out; after a revision, they are news.
            kept = [
                (k, e) for k, e in replay if e is not None and e.revision > after and (after or e.value is not None)
            ]
            for key, entry in sorted(kept, key=lambda item: item[1].revision):
                yield KeyChange(key, entry.value, entry.revision)
            yield INITIAL_VALUES_DONE
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)


@dataclass
class _Message:
    seq: int
    subject: str
    data: bytes
    msg_id: str | None
    at: float


@dataclass
class _Stream:
    name: str
    subjects: list[str]
    work_queue: bool
    duplicate_window_s: float
    messages: dict[int, _Message] = field(default_factory=dict)
    sequence: int = 0
    seen_ids: dict[str, tuple[int, float]] = field(default_factory=dict)


class _Consumer:
    """A durable pull consumer: every message of its stream (and filter) in order; ack removes, nak redelivers."""

    def __init__(self, stream: _Stream, filter_subject: str) -> None:
        self.stream = stream
        self.filter_subject = filter_subject
        self.ready: list[int] = []
        self.arrived = asyncio.Event()

    def offer(self, message: _Message) -> None:
        if subject_matches(self.filter_subject, message.subject):
            self.ready.append(message.seq)
            self.arrived.set()

    def redeliver(self, seq: int) -> None:
        if seq in self.stream.messages:
            self.ready.append(seq)
            self.arrived.set()


class _Subscription:
    def __init__(self, stop: Callable[[], Awaitable[Any]]) -> None:
        self._stop = stop

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._stop()


class MemoryBus:
    """The ``Bus`` port in memory. ``clock`` (epoch seconds) drives bucket max age and duplicate windows."""

    mode = "memory"

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._buckets: dict[str, MemoryBucket] = {}
        for stream in load_topology():
            config = stream.config
            name = str(config["name"])
            if name.startswith("KV_"):
                bucket = name.removeprefix("KV_")
                self._buckets[bucket] = MemoryBucket(bucket, clock, int(config.get("max_age", 0)) / _NS)
            elif not name.startswith("OBJ_"):
                self._streams[name] = _Stream(
                    name, list(config["subjects"]), config.get("retention") == "workqueue",
                    int(config.get("duplicate_window", 0)) / _NS,
                )  # fmt: skip
        self._consumers = {
            (c["stream_name"], c["config"]["durable_name"]): _Consumer(
                self._streams[c["stream_name"]], c["config"].get("filter_subject", ">")
            )
            for c in load_consumers()
        }
        self.definitions = self._buckets[names.DEFINITIONS_BUCKET]
        self.runs = self._buckets[names.RUNS_BUCKET]
        self.workers = self._buckets[names.WORKERS_BUCKET]
        self.leases = self._buckets[names.LEASES_BUCKET]
        self.idempotency = self._buckets[names.IDEMPOTENCY_BUCKET]
        self.keys = self._buckets[names.KEYS_BUCKET]
        self.secrets = self._buckets[names.SECRETS_BUCKET]
        self._subscribers: list[tuple[str, MessageHandler]] = []
        self._servers: list[tuple[str, RequestHandler]] = []
        self._objects: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def state(self) -> NatsState:
        return NatsState(connected=True, jetstream=True, reconnects=0)

    # --- streams -----------------------------------------------------------------------------------------------

    async def publish_durable(self, subject: str, payload: bytes, msg_id: str | None = None) -> int:
        stream = next((s for s in self._streams.values() if any(subject_matches(p, subject) for p in s.subjects)), None)
        if stream is None:
            raise Unavailable(f"no stream takes {subject}; retry shortly")
        now = self._clock()
        if msg_id is not None:
            seen = stream.seen_ids.get(msg_id)
            if seen is not None and now - seen[1] < stream.duplicate_window_s:
                return seen[0]
        stream.sequence += 1
        message = _Message(stream.sequence, subject, payload, msg_id, now)
        stream.messages[message.seq] = message
        if msg_id is not None:
            stream.seen_ids[msg_id] = (message.seq, now)
        for (name, _), consumer in self._consumers.items():
            if name == stream.name:
                consumer.offer(message)
        return message.seq

    async def publish_durable_many(self, messages: Sequence[tuple[str, bytes, str | None]]) -> list[int]:
        return [await self.publish_durable(subject, payload, msg_id) for subject, payload, msg_id in messages]

    async def consume(self, stream: str, durable: str, handler: MessageHandler) -> _Subscription:
        consumer = self._consumers.get((stream, durable))
        if consumer is None:
            raise Unavailable(f"no consumer {durable} on {stream}")

        async def loop() -> None:
            while True:
                await consumer.arrived.wait()
                consumer.arrived.clear()
                while consumer.ready:
                    await self._deliver(consumer, consumer.ready.pop(0), handler)

        task = asyncio.create_task(loop(), name=f"memory-consume-{stream}")

        async def stop() -> None:
            await stop_task(task)

        return _Subscription(stop)

    async def _deliver(self, consumer: _Consumer, seq: int, handler: MessageHandler) -> None:
        message = consumer.stream.messages.get(seq)
        if message is None:
            return
        try:
            await handler(message.data)
        except Exception as exc:
            log.warning("handling a %s message failed: %s", consumer.stream.name, exc)
            asyncio.get_running_loop().call_later(NAK_DELAY_S, consumer.redeliver, seq)
            return
        if consumer.stream.work_queue:
            del consumer.stream.messages[seq]

    async def read_subject(self, stream: str, subject: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        messages = self._streams[stream].messages
        found = [(seq, m.data) for seq, m in sorted(messages.items()) if seq > after and m.subject == subject]
        return found[:limit]

    # --- core messaging ----------------------------------------------------------------------------------------

    async def publish(self, subject: str, payload: bytes) -> None:
        for pattern, handler in list(self._subscribers):
            if subject_matches(pattern, subject):
                self._spawn(self._quietly(handler, payload, subject))

    @staticmethod
    async def _quietly(handler: MessageHandler, payload: bytes, subject: str) -> None:
        try:
            await handler(payload)
        except Exception:
            log.exception("handling a message on %s failed", subject)

    async def subscribe(self, subject: str, handler: MessageHandler) -> _Subscription:
        entry = (subject, handler)
        self._subscribers.append(entry)

        async def stop() -> None:
            self._subscribers.remove(entry)

        return _Subscription(stop)

    async def serve(self, subject: str, handler: RequestHandler, queue: str = "") -> _Subscription:
        # One handler answers each request (``request`` takes the first), as a queue group would.
        entry = (subject, handler)
        self._servers.append(entry)

        async def stop() -> None:
            self._servers.remove(entry)

        return _Subscription(stop)

    async def request(self, subject: str, payload: bytes, wait_s: float) -> bytes:
        handler = next((h for pattern, h in self._servers if subject_matches(pattern, subject)), None)
        if handler is None:
            raise Unavailable(f"nothing answers on {subject} (no leader or server yet); retry shortly")
        try:
            async with asyncio.timeout(wait_s):
                return await handler(subject, payload)
        except GyozaError as exc:  # as over NATS: rebuilt from its body on the requester's side
            raise error_from_body(exc.status, exc.to_body()) from None
        except Exception as exc:  # over NATS the handler would not answer: the requester times out
            log.warning("handling %s failed: %r", subject, exc)
            raise Unavailable(f"no answer on {subject} within {wait_s:g} s; retry shortly") from None

    # --- objects -----------------------------------------------------------------------------------------------

    async def read_object(self, name: str) -> bytes | None:
        return self._objects.get(name)

    async def write_object(self, name: str, data: bytes) -> None:
        self._objects[name] = bytes(data)

    async def delete_object(self, name: str) -> None:
        self._objects.pop(name, None)

    async def purge_subject(self, stream: str, subject: str) -> None:
        messages = self._streams[stream].messages
        for seq in [seq for seq, m in messages.items() if subject_matches(subject, m.subject)]:
            del messages[seq]

    async def close(self) -> None:
        await stop_tasks(list(self._tasks))
