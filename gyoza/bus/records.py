"""Typed records in a JetStream KV bucket, changed only by compare-and-set.

``mutate(key, change)`` is the one way to change a record: read (value, revision), apply a pure ``change``, write
with ``last=revision``; when another writer got there first, read again and re-apply. No writer ever loses another's
update (SPEC §3, invariant 2). NATS errors are translated here into Gyoza's, so no layer above imports ``nats``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
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


# Errors that mean "NATS cannot serve this right now": the caller may retry shortly (503 UNAVAILABLE, Retry-After).
_NOT_CONNECTED = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,  # a publish while disconnected: refused at once, never buffered
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    ConnectionError,  # a socket error nats-py let through (reset, broken pipe)
)
_NO_ANSWER = (
    TimeoutError,  # nats.errors.TimeoutError, nats-py's bare asyncio timeouts, fetch and flush timeouts
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,  # no stream leader took the publish (election, lost node)
    nats.js.errors.ServiceUnavailableError,  # JetStream's 503; a pull fetch raises it without a code
)
# JetStream API errors (err_code) a cluster gives while it cannot serve: no leader, not assigned yet, offline, raft.
_CLUSTER_BUSY = frozenset({10007, 10009, 10041, 10118, 10119, 10194, 10195})


def _is_unavailable(exc: BaseException) -> bool:
    """Whether a NATS error means "not available now" rather than a refusal of this request."""
    if isinstance(exc, _NOT_CONNECTED + _NO_ANSWER):
        return True
    if not isinstance(exc, nats.js.errors.APIError):
        return False
    # Some subclasses (KeyNotFoundError, KeyWrongLastSequenceError) never set code and err_code.
    return getattr(exc, "code", None) == 503 or getattr(exc, "err_code", None) in _CLUSTER_BUSY


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """The one mapping of NATS's "not available now" errors to ``Unavailable`` (503); every NATS call in
    ``gyoza.bus`` runs inside it, so none of them reaches a caller as a 500. Other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        if not _is_unavailable(exc):
            raise
        if isinstance(exc, _NOT_CONNECTED):
            raise Unavailable("not connected to NATS; retry shortly") from exc
        detail = getattr(exc, "description", None) or ""
        raise Unavailable(
            f"NATS JetStream did not answer ({type(exc).__name__}{': ' + detail if detail else ''}); retry shortly"
        ) from exc


class RecordStore(Generic[M]):
    """Records of one pydantic model in one KV bucket.

    With ``remember=N`` the store keeps the value and revision it last read or wrote for up to N keys, and
    ``mutate`` first tries its write against that revision instead of reading the record again. The write is still a
    compare-and-set: it only lands if that revision is still the latest, so the change was computed on the latest
    record. When it is not (another writer, another server), or when the change refuses or declines on the
    remembered version, ``mutate`` reads the record and decides again, as without the memory.
    """

    def __init__(self, kv: KeyValue, model: type[M], remember: int = 0) -> None:
        self.kv = kv
        self.model = model
        self._remember = remember
        self._recent: OrderedDict[str, tuple[bytes, int]] = OrderedDict()

    def _note(self, key: str, raw: bytes, revision: int) -> None:
        if self._remember:
            self._recent[key] = (raw, revision)
            self._recent.move_to_end(key)
            if len(self._recent) > self._remember:
                self._recent.popitem(last=False)

    async def get_raw(self, key: str) -> tuple[bytes, int]:
        with translate_errors():
            try:
                entry = await self.kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                raise RecordMissing(key) from None
        if entry.value is None:
            raise RecordMissing(key)
        revision = int(entry.revision or 0)
        self._note(key, entry.value, revision)
        return entry.value, revision

    async def get(self, key: str) -> tuple[M, int]:
        raw, revision = await self.get_raw(key)
        return self.model.model_validate_json(raw), revision

    async def create(self, key: str, record: M) -> int:
        """Store a new record; ``RecordExists`` when the key holds one already."""
        raw = record.model_dump_json().encode()
        with translate_errors():
            try:
                revision = int(await self.kv.create(key, raw))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise RecordExists(key) from None
        self._note(key, raw, revision)
        return revision

    async def write(self, key: str, record: M, revision: int) -> int:
        """One compare-and-set write; ``Conflict`` when the revision is no longer the latest."""
        raw = record.model_dump_json().encode()
        with translate_errors():
            try:
                written = int(await self.kv.update(key, raw, last=revision))
            except nats.js.errors.KeyWrongLastSequenceError:
                self._recent.pop(key, None)
                raise Conflict(f"{key} changed concurrently") from None
        self._note(key, raw, written)
        return written

    async def mutate(self, key: str, change: Callable[[M], M | None]) -> tuple[M, int, bool]:
        """Apply ``change`` to the latest record by CAS, retrying on conflict.

        ``change`` gets a fresh copy each time and returns the new record, or None for "nothing to write".
        Exceptions it raises propagate and nothing is written. Returns (record, revision, changed).
        """
        remembered = self._recent.get(key)
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
        async for change in watch_bucket(self.kv):
            if change is INITIAL_VALUES_DONE:
                return
            if change.value is not None:
                yield self.model.model_validate_json(change.value)

    async def delete(self, key: str) -> None:
        self._recent.pop(key, None)
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
