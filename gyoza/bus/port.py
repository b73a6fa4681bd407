"""The storage and messaging port: what services, the scheduler and the server need from NATS, and nothing more.

Two implementations keep the same semantics: ``gyoza.bus.connection.NatsBus`` over nats-py and
``gyoza.bus.memory.MemoryBus`` in memory (for fast tests and tools with no server). Neither exposes a NATS type, so
no layer above ``gyoza.bus`` knows which one it holds. Typed records live on top of a ``Bucket``
(``gyoza.bus.records.RecordStore``), so compare-and-set is written once for both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
MessageHandler = Callable[[bytes], Awaitable[None]]


class RecordMissing(KeyError):
    """No record under this key (never written, deleted, or expired)."""


class RecordExists(Exception):
    """``create`` found a record already under this key."""


@dataclass(frozen=True)
class KeyChange:
    """One entry of a bucket watch: ``value`` is None when the key was deleted or purged; ``expired`` when the
    store removed it itself (a write's TTL, the bucket's max age), not a client's delete."""

    key: str
    value: bytes | None
    revision: int
    expired: bool = False


@dataclass(frozen=True)
class NatsState:
    """Whether the bus can serve right now (``GET /health``)."""

    connected: bool
    jetstream: bool
    reconnects: int

    @property
    def ok(self) -> bool:
        return self.connected and self.jetstream


# The watch's marker between the replay of every key's latest value and the live changes.
INITIAL_VALUES_DONE = None


class Stoppable(Protocol):
    """A running subscription or consumer loop."""

    async def stop(self) -> None: ...


class Bucket(Protocol):
    """A key-value bucket with a revision per write (JetStream KV semantics)."""

    async def get(self, key: str) -> tuple[bytes, int]:
        """(value, revision); ``RecordMissing`` when there is none."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Write only if absent; ``RecordExists`` otherwise. Returns the revision."""
        ...

    async def create_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | RecordExists]:
        """``create`` of every (key, value), all sent at once and awaited together: per item its revision, or the
        ``RecordExists`` it met. ``Unavailable`` as for ``create`` (some items may have been written then)."""
        ...

    async def update(self, key: str, value: bytes, last: int, ttl_s: int | None = None) -> int:
        """Write only if ``last`` is the key's latest revision; ``gyoza.errors.Conflict`` otherwise. With
        ``ttl_s``, the store removes the key that many seconds later unless it was written again meanwhile (a
        watch then sees it deleted, with ``expired`` set); the bucket must allow per-message TTLs."""
        ...

    async def delete(self, key: str, last: int | None = None) -> None:
        """Remove the key (absent is fine). With ``last``: only if that is the key's latest revision,
        ``gyoza.errors.Conflict`` otherwise (a compare-and-set delete)."""
        ...

    def watch(self, after: int = 0) -> AsyncIterator[KeyChange | None]:
        """Every key's latest value, then ``INITIAL_VALUES_DONE``, then each change as it happens.

        With ``after`` > 0, the replay holds only the keys whose latest write has a revision past ``after``, deleted
        keys included (value None): what a reader that had applied every revision up to ``after`` is missing."""
        ...

    async def origin(self) -> str:
        """An id of this bucket's incarnation: it changes when the bucket is deleted and created again, so that a
        reader holding revisions of the old one knows they mean nothing in the new one."""
        ...

    async def last_revision(self) -> int:
        """The bucket's latest revision over every key (0 when nothing was ever written): a watch that has delivered
        it has seen every write acknowledged before this call."""
        ...


class Bus(Protocol):
    """The buckets and the messaging every server process uses."""

    @property
    def definitions(self) -> Bucket: ...

    @property
    def runs(self) -> Bucket: ...

    @property
    def workers(self) -> Bucket: ...

    @property
    def leases(self) -> Bucket: ...

    @property
    def idempotency(self) -> Bucket: ...

    @property
    def keys(self) -> Bucket: ...

    @property
    def secrets(self) -> Bucket: ...

    @property
    def mode(self) -> str: ...

    async def state(self) -> NatsState: ...

    async def publish_durable(self, subject: str, payload: bytes, msg_id: str | None = None) -> int:
        """Publish into the stream holding ``subject`` once it is durable; a repeated ``msg_id`` within the
        stream's duplicate window is dropped (and answers the first one's sequence). Returns the sequence."""
        ...

    async def publish_durable_many(self, messages: Sequence[tuple[str, bytes, str | None]]) -> list[int]:
        """``publish_durable`` of every (subject, payload, msg_id), all sent at once and awaited together: their
        sequences, in order."""
        ...

    async def publish(self, subject: str, payload: bytes) -> None:
        """A core publish: fire and forget, to whoever subscribes now."""
        ...

    async def subscribe(self, subject: str, handler: MessageHandler) -> Stoppable:
        """Core messages on ``subject`` (wildcards allowed) to ``handler``."""
        ...

    async def request(self, subject: str, payload: bytes, wait_s: float) -> bytes:
        """One reply from whoever serves ``subject``. A handler's ``GyozaError`` is raised here again (same code,
        status and details); ``Unavailable`` when nobody serves it or no answer came in ``wait_s``."""
        ...

    async def serve(self, subject: str, handler: RequestHandler, queue: str = "") -> Stoppable:
        """Answer requests on ``subject`` (wildcards allowed) with ``handler(subject, data)``; of the servers in one
        ``queue`` group, one answers each request."""
        ...

    async def consume(self, stream: str, durable: str, handler: MessageHandler) -> Stoppable:
        """Each message of a durable work-queue consumer to ``handler``: acked when it returns, redelivered later
        when it raises."""
        ...

    async def read_subject(self, stream: str, subject: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` messages of ``subject`` with stream sequence > ``after``, in order, as (seq, data)."""
        ...

    async def read_object(self, name: str) -> bytes | None: ...

    async def write_object(self, name: str, data: bytes) -> None: ...

    async def delete_object(self, name: str) -> None:
        """Remove an object of the logs bucket (absent is fine)."""
        ...

    async def purge_subject(self, stream: str, subject: str) -> None:
        """Remove every message of ``stream`` on ``subject`` (a subject pattern)."""
        ...

    async def close(self) -> None: ...
